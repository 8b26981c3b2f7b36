-- kimi-dagster schema, version 3: the provider's Batch API (60 % of the real-time price).
-- A dataset runs in realtime or batch mode; a chunk partition in batch mode becomes one or more
-- provider batches (one model each, input file <= 100 MB), tracked here from the local input
-- file to the loaded output. The answers land in the same attempts and results tables.

ALTER TABLE datasets ADD COLUMN mode VARCHAR NOT NULL DEFAULT 'realtime';  -- realtime | batch

ALTER TABLE models ADD COLUMN batch_api BOOLEAN NOT NULL DEFAULT false;  -- Batch API serves it

CREATE TABLE IF NOT EXISTS batches (
    submission_id   VARCHAR PRIMARY KEY,  -- ours, also the batch's metadata and file name
    dataset         VARCHAR NOT NULL,
    partition_key   VARCHAR NOT NULL,
    model           VARCHAR NOT NULL,
    items           INTEGER NOT NULL,     -- lines in the input file
    input_bytes     BIGINT NOT NULL,
    input_file_id   VARCHAR,              -- set once uploaded, before the batch is created
    batch_id        VARCHAR UNIQUE,       -- set once created
    -- prepared -> uploaded -> the provider's status: validating, in_progress, finalizing,
    -- completed | failed | expired | cancelling -> cancelled
    state           VARCHAR NOT NULL,
    completed       INTEGER NOT NULL DEFAULT 0,  -- request_counts as last polled
    failed          INTEGER NOT NULL DEFAULT 0,
    total           INTEGER NOT NULL DEFAULT 0,
    output_file_id  VARCHAR,
    error_file_id   VARCHAR,
    error           VARCHAR,              -- why a batch failed or expired, as the provider says
    loaded          BOOLEAN NOT NULL DEFAULT false,  -- its output is in attempts/results
    loaded_rows     INTEGER,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT current_timestamp,
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT current_timestamp
);
