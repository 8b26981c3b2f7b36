-- `kimi-dagster budget DATASET USD`: set or change a dataset's cap.
INSERT OR REPLACE INTO budgets (dataset, budget_usd, updated_at)
VALUES ($dataset, $budget_usd, current_timestamp);
