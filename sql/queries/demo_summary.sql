-- The demo's closing summary: outcome, tokens, cost and the rate achieved.
SELECT count(*) AS items,
       count(*) FILTER (WHERE status = 'succeeded') AS succeeded,
       count(*) FILTER (WHERE status = 'failed') AS failed,
       (SELECT count(*) FROM rejected_lines) AS rejected_lines,
       sum(prompt_tokens) AS prompt_tokens,
       sum(completion_tokens) AS completion_tokens,
       round(sum(cost_usd), 6)::DOUBLE AS cost_usd,
       (SELECT round(count(*) / (epoch(max(finished_at)) - epoch(min(started_at))) * 60)
        FROM attempts) AS achieved_rpm
FROM item_results;
