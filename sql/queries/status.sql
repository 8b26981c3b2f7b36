-- `kimi-dagster status`: per dataset, progress, tokens, cost, the last minute's rate and an
-- ETA at that rate ($dataset NULL = all datasets).
WITH recent AS (
    SELECT dataset, count(*) AS rpm_actual,
           count(*) FILTER (WHERE outcome IN ('ok', 'failed')) AS done_last_minute
    FROM attempts
    WHERE finished_at >= (SELECT max(finished_at) FROM attempts) - INTERVAL 60 SECOND
    GROUP BY dataset
)
SELECT s.dataset, s.items, s.succeeded, s.failed, s.pending,
       (s.succeeded + s.failed) || '/' || s.items AS batch_progress, s.pct_done,
       s.total_tokens, s.prompt_tokens, s.completion_tokens, s.cached_tokens,
       round(coalesce(s.cost_usd, 0), 6)::DOUBLE AS cost_usd,
       coalesce(r.rpm_actual, 0) AS rpm_actual,
       CASE WHEN s.pending = 0 THEN 0
            WHEN coalesce(r.done_last_minute, 0) = 0 THEN NULL
            ELSE round(60.0 * s.pending / r.done_last_minute) END AS eta_seconds
FROM dataset_summary s LEFT JOIN recent r USING (dataset)
WHERE $dataset IS NULL OR s.dataset = $dataset
ORDER BY s.dataset;
