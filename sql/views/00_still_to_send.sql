-- Whether an item with this result status is still to send: it has no result yet, or it failed
-- and the run retries failures ($retry_failed false: missing-only). Every query that picks or
-- counts pending items (pending_items, pending_count, estimate) asks this one question.
CREATE OR REPLACE MACRO still_to_send(status, retry_failed) AS
    status IS NULL OR (status = 'failed' AND retry_failed);
