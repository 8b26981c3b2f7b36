-- Latency of successful requests per dataset and model, in milliseconds.
CREATE OR REPLACE VIEW latency_percentiles AS
SELECT dataset, model, count(*) AS requests,
       quantile_cont(latency_ms, 0.5) AS p50_ms, quantile_cont(latency_ms, 0.95) AS p95_ms,
       quantile_cont(latency_ms, 0.99) AS p99_ms, max(latency_ms) AS max_ms
FROM attempts
WHERE outcome = 'ok'
GROUP BY ALL;
