-- Ingest, step 1: the validated lines of one file (written by kimi_dagster/ingest.py) in a
-- temporary table, with the first line of each id marked.
CREATE OR REPLACE TEMP TABLE staged AS
SELECT *, row_number() OVER (PARTITION BY item_id ORDER BY line_no) AS nth,
       first_value(line_no) OVER (PARTITION BY item_id ORDER BY line_no) AS first_line
FROM read_json($staged, format = 'newline_delimited', columns = {
    'line_no': 'BIGINT', 'item_id': 'VARCHAR', 'model': 'VARCHAR', 'max_tokens': 'INTEGER',
    'est_input_tokens': 'INTEGER', 'request': 'VARCHAR', 'request_sha256': 'VARCHAR',
    'input_text': 'VARCHAR', 'metadata': 'JSON'});
