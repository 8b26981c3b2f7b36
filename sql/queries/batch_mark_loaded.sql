-- Runs in the transaction that merges the batch's output: a batch is loaded exactly once
-- (no row back = already loaded, and the caller rolls back).
UPDATE batches SET loaded = true, loaded_rows = $rows, updated_at = current_timestamp
WHERE submission_id = $submission_id AND NOT loaded
RETURNING submission_id;
