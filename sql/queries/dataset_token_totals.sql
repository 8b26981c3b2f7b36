-- Estimated input tokens and the max_tokens ceiling over a whole dataset.
SELECT coalesce(sum(est_input_tokens), 0), coalesce(sum(max_tokens), 0)
FROM items WHERE dataset = $dataset;
