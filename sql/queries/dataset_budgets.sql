-- Cap and spend so far of every dataset that has items in $partition_keys (or is $dataset):
-- what a run may still spend on each.
WITH ds AS (
    SELECT DISTINCT dataset FROM items WHERE list_contains($partition_keys, partition_key)
    UNION SELECT $dataset WHERE $dataset IS NOT NULL
), spend AS (
    SELECT dataset, sum(cost_usd) AS spent FROM attempts
    WHERE dataset IN (SELECT dataset FROM ds) GROUP BY dataset
)
SELECT ds.dataset, b.budget_usd::DOUBLE AS budget_usd,
       coalesce(spend.spent, 0)::DOUBLE AS spent_usd,
       (b.budget_usd - coalesce(spend.spent, 0))::DOUBLE AS left_usd
FROM ds LEFT JOIN budgets b USING (dataset) LEFT JOIN spend USING (dataset)
ORDER BY ds.dataset;
