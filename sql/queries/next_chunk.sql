-- The number the dataset's next new chunk will get.
SELECT coalesce(max(chunk) + 1, 0) FROM items WHERE dataset = $dataset;
