-- Trivial: the smallest full path.
SELECT count(*) FROM nation;
