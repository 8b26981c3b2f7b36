-- Ingest, step 0: forget what this file's earlier ingests rejected; steps 2 and 4 record what
-- is still wrong, so a line fixed and ingested again is no longer listed.
DELETE FROM rejected_lines WHERE dataset = $dataset AND source_file = $source_file;
