-- Share of input tokens served from the provider's prefix cache (billed at the cache-hit price).
CREATE OR REPLACE VIEW cache_hit_ratio AS
SELECT dataset, model, sum(cached_tokens) AS cached_tokens, sum(prompt_tokens) AS prompt_tokens,
       round(sum(cached_tokens) / nullif(sum(prompt_tokens), 0), 4) AS cache_hit_ratio
FROM attempts
WHERE outcome = 'ok'
GROUP BY ALL;
