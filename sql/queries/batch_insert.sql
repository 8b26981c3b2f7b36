-- A batch about to be submitted: its input file is written and fsync'd locally first.
INSERT INTO batches (submission_id, dataset, partition_key, model, items, input_bytes,
                     worst_cost_usd, state)
VALUES ($submission_id, $dataset, $partition_key, $model, $items, $input_bytes, $worst_cost_usd,
        'prepared');
