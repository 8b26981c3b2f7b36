-- What a batch-mode chunk partition holds after a load: outcomes, tokens, cost.
SELECT count(*) AS items,
       count(*) FILTER (WHERE status = 'succeeded') AS succeeded,
       count(*) FILTER (WHERE status = 'failed') AS failed,
       count(*) FILTER (WHERE status = 'pending') AS pending,
       count(*) FILTER (WHERE finish_reason = 'length') AS truncated,
       coalesce(sum(prompt_tokens), 0) AS prompt_tokens,
       coalesce(sum(completion_tokens), 0) AS completion_tokens,
       coalesce(sum(cached_tokens), 0) AS cached_tokens,
       coalesce(sum(cost_usd), 0)::DOUBLE AS cost_usd
FROM item_results
WHERE list_contains($partition_keys, partition_key);
