-- Every chunk partition key of a dataset, in order.
SELECT DISTINCT partition_key FROM items WHERE dataset = $dataset ORDER BY partition_key;
