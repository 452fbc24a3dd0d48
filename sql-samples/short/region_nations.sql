-- Dimension join.
SELECT r_name, n_name FROM region JOIN nation ON n_regionkey = r_regionkey ORDER BY r_name, n_name;
