-- Cap and spend so far of every dataset that has items in $partition_keys (or is $dataset):
-- what a run may still spend on each. reserved_usd is the worst case of the dataset's batches
-- not loaded yet (their cost is not in the ledger yet, but may be billed). others_usd is what
-- runs other than $run_id spent, with those reservations: a running run re-reads it to see
-- what concurrent runs and batches of the same dataset have taken.
WITH ds AS (
    SELECT DISTINCT dataset FROM items WHERE list_contains($partition_keys, partition_key)
    UNION SELECT $dataset WHERE $dataset IS NOT NULL
), spend AS (
    SELECT dataset, sum(cost_usd) AS spent,
           sum(cost_usd) FILTER (WHERE run_id IS DISTINCT FROM $run_id) AS others
    FROM attempts
    WHERE dataset IN (SELECT dataset FROM ds) GROUP BY dataset
), reserved AS (
    SELECT dataset, sum(worst_cost_usd) AS reserved
    FROM batches WHERE NOT loaded AND dataset IN (SELECT dataset FROM ds) GROUP BY dataset
)
SELECT ds.dataset, b.budget_usd::DOUBLE AS budget_usd,
       coalesce(spend.spent, 0)::DOUBLE AS spent_usd,
       coalesce(reserved.reserved, 0)::DOUBLE AS reserved_usd,
       (b.budget_usd - coalesce(spend.spent, 0) - coalesce(reserved.reserved, 0))::DOUBLE
           AS left_usd,
       (coalesce(spend.others, 0) + coalesce(reserved.reserved, 0))::DOUBLE AS others_usd
FROM ds LEFT JOIN budgets b USING (dataset) LEFT JOIN spend USING (dataset)
LEFT JOIN reserved USING (dataset)
ORDER BY ds.dataset;
