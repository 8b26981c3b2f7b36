-- The model catalogue is data (sql/models.csv): it changes every few months.
INSERT OR REPLACE INTO models
SELECT model, context_tokens, fixed_sampling, thinking, batch_api
FROM read_csv($file, header = true, columns = {
    'model': 'VARCHAR', 'context_tokens': 'INTEGER',
    'fixed_sampling': 'BOOLEAN', 'thinking': 'BOOLEAN', 'batch_api': 'BOOLEAN'});
