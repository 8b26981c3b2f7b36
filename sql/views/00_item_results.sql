-- One row per item: its final state, the usage of its successful attempt, and what all its
-- attempts cost. Pending items (never finished) have status 'pending'.
CREATE OR REPLACE VIEW item_results AS
WITH spend AS (
    SELECT dataset, item_id, count(*) AS attempts, sum(cost_usd) AS cost_usd
    FROM attempts GROUP BY ALL
)
SELECT i.dataset, i.item_id, i.partition_key, i.chunk, i.line_no, i.model, i.input_text,
       coalesce(r.status, 'pending') AS status, r.output, r.reasoning, r.finish_reason,
       r.error_type, r.error_message, a.prompt_tokens, a.completion_tokens, a.cached_tokens,
       a.latency_ms, coalesce(s.attempts, 0) AS attempts, coalesce(s.cost_usd, 0) AS cost_usd,
       r.finished_at, i.metadata
FROM items i
LEFT JOIN results r ON r.dataset = i.dataset AND r.item_id = i.item_id
LEFT JOIN attempts a ON a.attempt_id = r.attempt_id
LEFT JOIN spend s ON s.dataset = i.dataset AND s.item_id = i.item_id;
