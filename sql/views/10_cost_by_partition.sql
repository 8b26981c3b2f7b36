-- Spend per chunk partition: every attempt, billed or not, from the ledger.
CREATE OR REPLACE VIEW cost_by_partition AS
SELECT dataset, partition_key, count(*) AS requests,
       count(*) FILTER (WHERE outcome = 'ok') AS succeeded,
       sum(prompt_tokens) AS prompt_tokens, sum(completion_tokens) AS completion_tokens,
       sum(cached_tokens) AS cached_tokens, sum(cost_usd) AS cost_usd
FROM attempts
GROUP BY ALL;
