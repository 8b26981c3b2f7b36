-- The estimate's scratch file (the input validated as ingest would), read beside the real
-- database; {path} is filled in by estimate.py, since ATTACH takes no parameters.
ATTACH '{path}' AS scratch (READ_ONLY);
