-- Prices are data with a date (sql/prices.csv, then $KIMI_DAGSTER_PRICES); a row with the same
-- model, currency and effective_date replaces the shipped one.
INSERT OR REPLACE INTO prices
SELECT model, currency, input_cache_hit, input_cache_miss, output, batch_discount,
       effective_date, source
FROM read_csv($file, header = true, columns = {
    'model': 'VARCHAR', 'currency': 'VARCHAR', 'input_cache_hit': 'DECIMAL(18,6)',
    'input_cache_miss': 'DECIMAL(18,6)', 'output': 'DECIMAL(18,6)',
    'batch_discount': 'DECIMAL(6,4)', 'effective_date': 'DATE', 'source': 'VARCHAR'});
