-- Estimated input tokens over a whole dataset (the ingest report's est_input_tokens).
SELECT coalesce(sum(est_input_tokens), 0) FROM items WHERE dataset = $dataset;
