-- Record what the provider said about one submission; NULL leaves a column as it was.
UPDATE batches SET
    input_file_id = coalesce($input_file_id, input_file_id),
    batch_id = coalesce($batch_id, batch_id),
    state = coalesce($state, state),
    completed = coalesce($completed, completed),
    failed = coalesce($failed, failed),
    total = coalesce($total, total),
    output_file_id = coalesce($output_file_id, output_file_id),
    error_file_id = coalesce($error_file_id, error_file_id),
    error = coalesce($error, error),
    updated_at = current_timestamp
WHERE submission_id = $submission_id;
