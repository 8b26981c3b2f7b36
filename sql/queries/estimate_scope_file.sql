-- The items an estimate covers: a file ingested into a scratch file attached as `scratch`, so
-- estimating changes nothing in the user's DuckDB file (its results and history still count).
CREATE OR REPLACE TEMP TABLE estimate_items AS
SELECT dataset, item_id, model, max_tokens, est_input_tokens
FROM scratch.items
WHERE dataset = $dataset;
