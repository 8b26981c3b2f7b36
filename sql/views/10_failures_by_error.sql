-- Errors by type: every failed attempt (retried or not), and items whose final state it is.
CREATE OR REPLACE VIEW failures_by_error AS
WITH tries AS (
    SELECT dataset, error_type, count(*) AS attempts
    FROM attempts WHERE error_type IS NOT NULL GROUP BY ALL
), finals AS (
    SELECT dataset, error_type, count(*) AS items_failed
    FROM results WHERE status = 'failed' GROUP BY ALL
)
SELECT dataset, error_type, coalesce(attempts, 0) AS attempts,
       coalesce(items_failed, 0) AS items_failed
FROM tries FULL JOIN finals USING (dataset, error_type);
