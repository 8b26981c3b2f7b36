-- Achieved rate per minute: rpm_actual counts the requests sent (rate_limited: how many of them
-- the gateway refused with a limit-429), tpm_actual the tokens the gateway charged at admission
-- (input + max_tokens: the actual prompt_tokens once a reply told them, else the local
-- estimate; refused requests are not charged), tokens_used what was billed.
CREATE OR REPLACE VIEW throughput_per_minute AS
SELECT date_trunc('minute', a.started_at) AS minute, a.dataset,
       count(*) AS rpm_actual,
       coalesce(sum(CASE WHEN a.prompt_tokens > 0 THEN a.prompt_tokens + i.max_tokens
                         ELSE a.gateway_tokens END)
                    FILTER (WHERE a.error_type IS DISTINCT FROM 'rate_limit_reached_error'), 0)
           AS tpm_actual,
       sum(a.prompt_tokens + a.completion_tokens) AS tokens_used,
       count(*) FILTER (WHERE a.error_type = 'rate_limit_reached_error') AS rate_limited
FROM attempts a JOIN items i USING (dataset, item_id)
GROUP BY ALL;
