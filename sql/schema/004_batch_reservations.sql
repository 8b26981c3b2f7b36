-- kimi-dagster schema, version 4: what an open batch may still cost. A batch is paid when it
-- finishes, so a dataset's budget must count the worst case of its open batches (no cache hit,
-- every allowed output token, at the Batch price) besides what the ledger already holds.
ALTER TABLE batches ADD COLUMN worst_cost_usd DECIMAL(18, 9) NOT NULL DEFAULT 0;
