-- Cap and spend so far of every dataset that has items in $partition_keys (or is $dataset):
-- what a run may still spend on each. others_usd is the spend of runs other than $run_id, which
-- a running run re-reads to see what concurrent runs of the same dataset have spent.
WITH ds AS (
    SELECT DISTINCT dataset FROM items WHERE list_contains($partition_keys, partition_key)
    UNION SELECT $dataset WHERE $dataset IS NOT NULL
), spend AS (
    SELECT dataset, sum(cost_usd) AS spent,
           sum(cost_usd) FILTER (WHERE run_id IS DISTINCT FROM $run_id) AS others
    FROM attempts
    WHERE dataset IN (SELECT dataset FROM ds) GROUP BY dataset
)
SELECT ds.dataset, b.budget_usd::DOUBLE AS budget_usd,
       coalesce(spend.spent, 0)::DOUBLE AS spent_usd,
       (b.budget_usd - coalesce(spend.spent, 0))::DOUBLE AS left_usd,
       coalesce(spend.others, 0)::DOUBLE AS others_usd
FROM ds LEFT JOIN budgets b USING (dataset) LEFT JOIN spend USING (dataset)
ORDER BY ds.dataset;
