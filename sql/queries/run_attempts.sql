-- Attempts already recorded under a run id (a Dagster step retried inside its run reuses it).
SELECT count(*) FROM attempts WHERE run_id = $run_id;
