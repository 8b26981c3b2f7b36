-- Spend per UTC day, dataset and model.
CREATE OR REPLACE VIEW cost_by_day AS
SELECT CAST(timezone('UTC', finished_at) AS DATE) AS day, dataset, model, count(*) AS requests,
       sum(prompt_tokens + completion_tokens) AS tokens, sum(cost_usd) AS cost_usd
FROM attempts
GROUP BY ALL;
