-- Ingest, step 4: lines that failed validation in Python, with their reasons.
INSERT OR REPLACE INTO rejected_lines (dataset, source_file, line_no, item_id, reason, excerpt)
SELECT $dataset, $source_file, line_no, item_id, reason, excerpt
FROM read_json($rejected, format = 'newline_delimited', columns = {
    'line_no': 'BIGINT', 'item_id': 'VARCHAR', 'reason': 'VARCHAR', 'excerpt': 'VARCHAR'});
