-- Submissions, oldest first, filtered by dataset, partitions, batch or submission ($x NULL:
-- any), and only those whose output is not yet loaded when $open_only.
SELECT submission_id, dataset, partition_key, model, items, input_bytes, input_file_id,
       batch_id, state, completed, failed, total, output_file_id, error_file_id, error, loaded,
       loaded_rows, worst_cost_usd::DOUBLE AS worst_cost_usd, created_at, updated_at
FROM batches
WHERE ($dataset IS NULL OR dataset = $dataset)
  AND ($partition_keys IS NULL OR list_contains($partition_keys, partition_key))
  AND ($batch_id IS NULL OR batch_id = $batch_id)
  AND ($submission_id IS NULL OR submission_id = $submission_id)
  AND (NOT $open_only OR NOT loaded)
ORDER BY created_at, submission_id;
