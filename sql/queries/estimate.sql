-- What sending a dataset's items will take, per model. The items are the temp table
-- estimate_items (dataset, item_id, model, max_tokens, est_input_tokens); the ones still to send
-- have no success yet (failed ones count unless $retry_failed is false). What the answered
-- requests of the $history dataset showed calibrates the rest: input tokens scale by actual /
-- estimated, output is the mean answer capped by each item's max_tokens, cached input is the
-- history's share, latency its mean. Without history: $fill of max_tokens, no cache hits.
WITH history AS (
    SELECT a.model, count(*) AS answers, avg(a.completion_tokens) AS output_tokens,
           sum(a.prompt_tokens) / nullif(sum(i.est_input_tokens), 0) AS input_ratio,
           sum(a.cached_tokens) / nullif(sum(a.prompt_tokens), 0) AS cache_ratio,
           avg(a.latency_ms) / 1000 AS latency_s
    FROM attempts a JOIN items i USING (dataset, item_id)
    WHERE a.dataset = $history AND a.outcome = 'ok'
    GROUP BY a.model
), todo AS (
    SELECT e.model, e.max_tokens,
           e.est_input_tokens * coalesce(h.input_ratio, 1) AS input_tokens,
           CASE WHEN h.output_tokens IS NULL THEN e.max_tokens * $fill
                ELSE least(e.max_tokens, h.output_tokens) END AS output_tokens,
           coalesce(h.cache_ratio, 0) AS cache_ratio,
           still_to_send(r.status, $retry_failed) AS pending
    FROM estimate_items e
    LEFT JOIN results r ON r.dataset = e.dataset AND r.item_id = e.item_id
    LEFT JOIN history h ON h.model = e.model
)
SELECT t.model,
       count(*) AS items,
       count(*) FILTER (WHERE pending) AS pending,
       coalesce(round(sum(t.input_tokens) FILTER (WHERE pending)), 0)::BIGINT AS input_tokens,
       coalesce(round(sum(t.input_tokens * t.cache_ratio) FILTER (WHERE pending)), 0)::BIGINT
           AS cached_tokens,
       coalesce(round(sum(t.output_tokens) FILTER (WHERE pending)), 0)::BIGINT AS output_tokens,
       coalesce(sum(t.max_tokens) FILTER (WHERE pending), 0)::BIGINT AS max_output_tokens,
       coalesce(any_value(h.answers), 0) AS history_answers,
       any_value(h.latency_s) AS latency_s
FROM todo t LEFT JOIN history h USING (model)
GROUP BY t.model
ORDER BY t.model;
