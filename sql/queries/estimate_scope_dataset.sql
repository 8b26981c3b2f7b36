-- The items an estimate covers: a dataset already in this DuckDB file.
CREATE OR REPLACE TEMP TABLE estimate_items AS
SELECT dataset, item_id, model, max_tokens, est_input_tokens
FROM items
WHERE dataset = $dataset;
