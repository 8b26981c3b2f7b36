-- The price in effect today for each model and currency.
SELECT model, currency, coalesce(input_cache_hit, input_cache_miss), input_cache_miss, output,
       batch_discount, effective_date
FROM prices
WHERE effective_date <= current_date
QUALIFY row_number() OVER (PARTITION BY model, currency ORDER BY effective_date DESC) = 1;
