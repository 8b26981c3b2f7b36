-- Per dataset: how far it is (item states) and what it has used and cost so far (every billed
-- attempt in the ledger, retries and re-sends included, so cost_usd equals the provider's bill).
-- `kimi-dagster status` reads this.
CREATE OR REPLACE VIEW dataset_summary AS
WITH states AS (
    SELECT i.dataset,
           count(*) AS items,
           count(*) FILTER (WHERE r.status = 'succeeded') AS succeeded,
           count(*) FILTER (WHERE r.status = 'failed') AS failed,
           count(*) FILTER (WHERE r.status IS NULL) AS pending
    FROM items i LEFT JOIN results r USING (dataset, item_id)
    GROUP BY i.dataset
), spend AS (
    SELECT dataset, count(*) AS requests, sum(prompt_tokens) AS prompt_tokens,
           sum(completion_tokens) AS completion_tokens, sum(cached_tokens) AS cached_tokens,
           sum(cost_usd) AS cost_usd
    FROM attempts GROUP BY dataset
)
SELECT s.dataset, s.items, s.succeeded, s.failed, s.pending,
       round(100.0 * (s.succeeded + s.failed) / s.items, 2) AS pct_done,
       coalesce(p.requests, 0) AS requests,
       coalesce(p.prompt_tokens, 0) AS prompt_tokens,
       coalesce(p.completion_tokens, 0) AS completion_tokens,
       coalesce(p.cached_tokens, 0) AS cached_tokens,
       coalesce(p.prompt_tokens + p.completion_tokens, 0) AS total_tokens,
       coalesce(p.cost_usd, 0) AS cost_usd
FROM states s LEFT JOIN spend p USING (dataset);
