-- The migrations applied to this file (one row per sql/schema/NNN_*.sql, by its number).
CREATE TABLE IF NOT EXISTS schema_version (
    version INTEGER PRIMARY KEY,
    applied_at TIMESTAMPTZ NOT NULL DEFAULT current_timestamp
);
