-- Ingest, step 3: new ids become items, numbered into chunks from $min_chunk (the dataset's
-- next chunk, queries/next_chunk.sql) so re-ingesting a file (or a longer version of it) never
-- reshuffles existing partitions.
INSERT INTO items (dataset, item_id, chunk, partition_key, source_file, line_no, model,
                   max_tokens, est_input_tokens, request, request_sha256, input_text, metadata)
WITH fresh AS (
    SELECT s.*, row_number() OVER (ORDER BY s.line_no) - 1 AS seq
    FROM staged s
    WHERE s.nth = 1
      AND NOT EXISTS (SELECT 1 FROM items i WHERE i.dataset = $dataset AND i.item_id = s.item_id)
)
SELECT $dataset, item_id, $min_chunk + seq // $chunk_size,
       format('{}-{:05d}', $dataset, $min_chunk + seq // $chunk_size),
       $source_file, line_no, model, max_tokens, est_input_tokens, request, request_sha256,
       input_text, metadata
FROM fresh;
