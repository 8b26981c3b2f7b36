-- The seed-compatible item shape (lower-case keys) that `kimi-dagster batch -o` and
-- `kimi-dagster export` write, as a temp table because COPY takes no parameters.
-- Pending items appear with success = false.
CREATE OR REPLACE TEMP TABLE export_items AS
SELECT item_id AS id, input_text AS "input", output, status = 'succeeded' AS success,
       CASE status WHEN 'pending' THEN 'pending: not processed yet'
                   ELSE error_message END AS error,
       finish_reason,
       CASE WHEN prompt_tokens IS NULL THEN NULL ELSE {
           'prompt_tokens': prompt_tokens, 'completion_tokens': completion_tokens,
           'total_tokens': prompt_tokens + completion_tokens, 'cached_tokens': cached_tokens}
       END AS usage,
       cost_usd::DOUBLE AS cost_usd, round(latency_ms, 1) AS latency_ms, attempts,
       partition_key AS chunk, metadata
FROM item_results
WHERE dataset = $dataset
  AND partition_key >= coalesce($first_key, '') AND partition_key <= coalesce($last_key, '~')
ORDER BY chunk, line_no
