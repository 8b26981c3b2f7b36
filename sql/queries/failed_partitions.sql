-- Chunk partitions of $dataset holding failed items (what `kimi-dagster retry-failed` runs).
SELECT DISTINCT partition_key FROM pending_items
WHERE dataset = $dataset AND status = 'failed'
ORDER BY 1;
