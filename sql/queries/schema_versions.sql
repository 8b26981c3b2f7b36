-- The migration numbers already applied to this file.
SELECT version FROM schema_version;
