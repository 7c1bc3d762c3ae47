/* lakebed
materialized: incremental
description: Order lines that count as sales (returns left out), with their amount; built from the new
  order rows only on each run.
owners: [team:finance]
tags: [finance]
*/
SELECT
  order_id,
  customer_id,
  sku,
  quantity,
  CAST(quantity * unit_price AS DOUBLE) AS amount,
  currency,
  status,
  ordered_at
FROM orders
WHERE status <> 'returned'
