INSERT INTO datasets (dataset, chunk_size) VALUES ($dataset, $chunk_size)
ON CONFLICT (dataset) DO NOTHING;
