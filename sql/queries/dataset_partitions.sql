-- Chunk partition keys of a dataset from chunk $min_chunk on, in order.
SELECT DISTINCT partition_key FROM items
WHERE dataset = $dataset AND chunk >= $min_chunk
ORDER BY partition_key;
