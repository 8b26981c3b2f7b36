-- kimi-dagster schema, version 1.
-- The data flow, top to bottom: datasets -> items (ingested prompts) -> attempts (one row per
-- HTTP request: the token and cost ledger) -> results (each item's final state).
-- rejected_lines keeps every input line that could not become an item, with the reason.

CREATE TABLE IF NOT EXISTS datasets (
    dataset      VARCHAR PRIMARY KEY,   -- name used in partition keys: <dataset>-<chunk>
    chunk_size   INTEGER NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT current_timestamp
);

CREATE TABLE IF NOT EXISTS sources (
    dataset      VARCHAR NOT NULL,
    source_file  VARCHAR NOT NULL,      -- absolute path as ingested
    lines        BIGINT NOT NULL,
    accepted     BIGINT NOT NULL,       -- new items this ingest added
    unchanged    BIGINT NOT NULL,       -- items already present with the same request
    rejected     BIGINT NOT NULL,
    ingested_at  TIMESTAMPTZ NOT NULL DEFAULT current_timestamp
);

CREATE TABLE IF NOT EXISTS items (
    dataset          VARCHAR NOT NULL,
    item_id          VARCHAR NOT NULL,
    chunk            INTEGER NOT NULL,
    partition_key    VARCHAR NOT NULL,
    source_file      VARCHAR NOT NULL,
    line_no          BIGINT NOT NULL,
    model            VARCHAR NOT NULL,
    max_tokens       INTEGER NOT NULL,
    est_input_tokens INTEGER NOT NULL,  -- local estimate; the gateway charges this + max_tokens
    request          VARCHAR NOT NULL,  -- the exact JSON body sent to /chat/completions
    request_sha256   VARCHAR NOT NULL,
    input_text       VARCHAR,           -- the seed's "message" (or last user turn) for exports
    metadata         JSON,
    ingested_at      TIMESTAMPTZ NOT NULL DEFAULT current_timestamp,
    PRIMARY KEY (dataset, item_id)
);

CREATE TABLE IF NOT EXISTS rejected_lines (
    dataset      VARCHAR NOT NULL,
    source_file  VARCHAR NOT NULL,
    line_no      BIGINT NOT NULL,
    item_id      VARCHAR,
    reason       VARCHAR NOT NULL,
    excerpt      VARCHAR,               -- first 200 characters of the line
    rejected_at  TIMESTAMPTZ NOT NULL DEFAULT current_timestamp,
    PRIMARY KEY (dataset, source_file, line_no)
);

-- The ledger: every request that left this machine, billed or not.
CREATE TABLE IF NOT EXISTS attempts (
    attempt_id        VARCHAR PRIMARY KEY,  -- <run token>:<item id>:<n>, also sent as X-Request-Id
    dataset           VARCHAR NOT NULL,
    item_id           VARCHAR NOT NULL,
    partition_key     VARCHAR NOT NULL,
    run_id            VARCHAR NOT NULL,
    attempt           INTEGER NOT NULL,     -- 1-based within the run
    model             VARCHAR NOT NULL,
    mode              VARCHAR NOT NULL,     -- realtime | batch
    started_at        TIMESTAMPTZ NOT NULL,
    finished_at       TIMESTAMPTZ NOT NULL,
    latency_ms        DOUBLE NOT NULL,
    http_status       INTEGER,              -- NULL when no response arrived (timeout, reset)
    outcome           VARCHAR NOT NULL,     -- ok | retry | failed | fatal
    error_type        VARCHAR,
    error_message     VARCHAR,
    gateway_tokens    INTEGER NOT NULL,     -- charged against TPM at admission (estimate + max_tokens)
    prompt_tokens     INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    cached_tokens     INTEGER NOT NULL DEFAULT 0,
    cost_usd          DECIMAL(18, 9) NOT NULL DEFAULT 0
);

-- Final state per item. A success is never replaced; a failure is replaced by a later attempt.
CREATE TABLE IF NOT EXISTS results (
    dataset        VARCHAR NOT NULL,
    item_id        VARCHAR NOT NULL,
    partition_key  VARCHAR NOT NULL,
    status         VARCHAR NOT NULL,      -- succeeded | failed
    output         VARCHAR,
    reasoning      VARCHAR,
    finish_reason  VARCHAR,
    response_id    VARCHAR,
    error_type     VARCHAR,
    error_message  VARCHAR,
    attempt_id     VARCHAR NOT NULL,      -- the attempt that produced this state
    finished_at    TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (dataset, item_id)
);

CREATE TABLE IF NOT EXISTS prices (
    model             VARCHAR NOT NULL,
    currency          VARCHAR NOT NULL,   -- USD (.ai platform) | CNY (.cn platform)
    input_cache_hit   DECIMAL(18, 6),     -- per 1M tokens
    input_cache_miss  DECIMAL(18, 6) NOT NULL,
    output            DECIMAL(18, 6) NOT NULL,
    batch_discount    DECIMAL(6, 4) NOT NULL,  -- Batch API price = (1 - discount) * real-time
    effective_date    DATE NOT NULL,
    source            VARCHAR NOT NULL,
    PRIMARY KEY (model, currency, effective_date)
);

CREATE TABLE IF NOT EXISTS models (
    model            VARCHAR PRIMARY KEY,
    context_tokens   INTEGER NOT NULL,
    fixed_sampling   BOOLEAN NOT NULL,  -- temperature/top_p/n/penalties must not be sent
    thinking         BOOLEAN NOT NULL   -- accepts {"thinking": {"type": ...}}
);
