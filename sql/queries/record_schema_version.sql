-- Mark migration $version as applied (inside the transaction that applied it).
INSERT INTO schema_version (version) VALUES ($version);
