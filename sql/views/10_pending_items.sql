-- Items still to do: never finished, or failed (a re-run retries these unless missing-only).
CREATE OR REPLACE VIEW pending_items AS
SELECT dataset, partition_key, item_id, status, error_type, error_message, attempts
FROM item_results
WHERE status <> 'succeeded';
