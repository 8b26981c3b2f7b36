-- Per dataset: how far it is, what it has used and cost. `kimi-dagster status` reads this.
CREATE OR REPLACE VIEW dataset_summary AS
SELECT dataset,
       count(*) AS items,
       count(*) FILTER (WHERE status = 'succeeded') AS succeeded,
       count(*) FILTER (WHERE status = 'failed') AS failed,
       count(*) FILTER (WHERE status = 'pending') AS pending,
       round(100.0 * count(*) FILTER (WHERE status <> 'pending') / count(*), 2) AS pct_done,
       coalesce(sum(prompt_tokens), 0) AS prompt_tokens,
       coalesce(sum(completion_tokens), 0) AS completion_tokens,
       coalesce(sum(cached_tokens), 0) AS cached_tokens,
       coalesce(sum(prompt_tokens + completion_tokens), 0) AS total_tokens,
       sum(cost_usd) AS cost_usd
FROM item_results
GROUP BY dataset;
