-- Grouped count.
SELECT o_orderstatus, count(*) AS orders, avg(o_totalprice) AS avg_price FROM orders GROUP BY o_orderstatus ORDER BY o_orderstatus;
