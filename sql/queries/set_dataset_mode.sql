UPDATE datasets SET mode = $mode WHERE dataset = $dataset RETURNING dataset;
