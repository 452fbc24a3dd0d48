-- Small aggregate over the largest table.
SELECT l_shipmode, sum(l_extendedprice * (1 - l_discount)) AS revenue, count(*) AS lines FROM lineitem GROUP BY l_shipmode ORDER BY l_shipmode;
