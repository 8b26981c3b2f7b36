-- Achieved rate per minute: rpm_actual counts requests sent, tpm_actual the tokens the gateway
-- charged at admission (input + max_tokens), tokens_used what was billed.
CREATE OR REPLACE VIEW throughput_per_minute AS
SELECT date_trunc('minute', started_at) AS minute, dataset,
       count(*) AS rpm_actual,
       sum(gateway_tokens) AS tpm_actual,
       sum(prompt_tokens + completion_tokens) AS tokens_used,
       count(*) FILTER (WHERE error_type = 'rate_limit_reached_error') AS rate_limited
FROM attempts
GROUP BY ALL;
