-- `kimi-dagster budget DATASET --clear`: the dataset has no cap of its own any more.
DELETE FROM budgets WHERE dataset = $dataset;
