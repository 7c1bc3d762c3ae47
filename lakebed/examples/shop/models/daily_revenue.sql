/* lakebed
description: Revenue and order lines per day and product category.
owners: [team:finance]
tags: [finance]
*/
SELECT
  CAST(o.ordered_at AS DATE) AS day,
  p.category,
  round(sum(o.amount), 2) AS revenue,
  count(*) AS order_lines
FROM orders_clean AS o
JOIN products AS p USING (sku)
GROUP BY ALL
