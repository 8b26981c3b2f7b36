-- Load one spool segment (JSONL written by a run) into the ledger. Idempotent: a segment merged
-- twice (crash between commit and delete) adds nothing.
INSERT INTO attempts
SELECT attempt_id, dataset, item_id, partition_key, run_id, attempt, model, mode,
       to_timestamp(started_at), to_timestamp(finished_at), latency_ms, http_status, outcome,
       error_type, error_message, gateway_tokens, coalesce(prompt_tokens, 0),
       coalesce(completion_tokens, 0), coalesce(cached_tokens, 0), coalesce(cost_usd, 0)
FROM read_json($segment, format = 'newline_delimited', columns = $columns)
ON CONFLICT (attempt_id) DO NOTHING;
