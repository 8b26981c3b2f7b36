-- Final states from one spool segment. A success is kept forever; a failure gives way to any
-- later final state. Within the segment, a success beats a failure, then the latest wins.
INSERT INTO results
SELECT dataset, item_id, partition_key, status, output, reasoning, finish_reason, response_id,
       error_type, error_message, attempt_id, to_timestamp(finished_at)
FROM read_json($segment, format = 'newline_delimited', columns = $columns)
WHERE final AND status IS NOT NULL  -- a final record always has one; never let one block merges
QUALIFY row_number() OVER (
    PARTITION BY dataset, item_id ORDER BY status = 'succeeded' DESC, finished_at DESC) = 1
ON CONFLICT (dataset, item_id) DO UPDATE SET
    partition_key = excluded.partition_key, status = excluded.status, output = excluded.output,
    reasoning = excluded.reasoning, finish_reason = excluded.finish_reason,
    response_id = excluded.response_id, error_type = excluded.error_type,
    error_message = excluded.error_message, attempt_id = excluded.attempt_id,
    finished_at = excluded.finished_at
WHERE results.status <> 'succeeded';
