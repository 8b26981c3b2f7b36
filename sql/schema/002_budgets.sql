-- kimi-dagster schema, version 2: a spending cap per dataset, in addition to any per-run cap.
-- A run stops before its next call could take the dataset's spend (every attempt of it in the
-- ledger, this run's included) over the cap; what is left stays pending for a higher cap.
-- Set with `kimi-dagster budget DATASET USD`; a resource's dataset_budgets can only lower it.
CREATE TABLE IF NOT EXISTS budgets (
    dataset     VARCHAR PRIMARY KEY,
    budget_usd  DECIMAL(18, 6) NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT current_timestamp
);
