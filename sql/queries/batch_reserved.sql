-- Per dataset: the worst case of batches not loaded yet (their cost is not in the ledger).
SELECT dataset, sum(worst_cost_usd)::DOUBLE FROM batches WHERE NOT loaded GROUP BY dataset;
