-- `kimi-dagster status`: per dataset, progress, tokens, cost, the requests sent in the last
-- minute (rpm_actual) and an ETA at the pace items finished in that minute ($dataset NULL = all).
WITH recent AS (
    SELECT dataset,
           count(*) FILTER (WHERE started_at >= now() - INTERVAL 60 SECOND) AS rpm_actual,
           count(*) FILTER (WHERE finished_at >= now() - INTERVAL 60 SECOND
                              AND outcome IN ('ok', 'failed')) AS done_last_minute
    FROM attempts
    WHERE finished_at >= now() - INTERVAL 120 SECOND
    GROUP BY dataset
)
SELECT s.dataset, s.items, s.succeeded, s.failed, s.pending,
       (s.succeeded + s.failed) || '/' || s.items AS batch_progress, s.pct_done,
       s.total_tokens, s.prompt_tokens, s.completion_tokens, s.cached_tokens,
       round(s.cost_usd, 6)::DOUBLE AS cost_usd,
       coalesce(r.rpm_actual, 0) AS rpm_actual,
       CASE WHEN s.pending = 0 THEN 0
            WHEN coalesce(r.done_last_minute, 0) = 0 THEN NULL
            ELSE round(60.0 * s.pending / r.done_last_minute) END AS eta_seconds
FROM dataset_summary s LEFT JOIN recent r USING (dataset)
WHERE $dataset IS NULL OR s.dataset = $dataset
ORDER BY s.dataset;
