-- Spend per dataset and model, real-time and Batch API separately.
CREATE OR REPLACE VIEW cost_by_model AS
SELECT dataset, model, mode, count(*) AS requests,
       sum(prompt_tokens) AS prompt_tokens, sum(completion_tokens) AS completion_tokens,
       sum(cached_tokens) AS cached_tokens, sum(cost_usd) AS cost_usd
FROM attempts
GROUP BY ALL;
