-- How many items of the given chunks are still to send.
SELECT count(*)
FROM items i
LEFT JOIN results r ON r.dataset = i.dataset AND r.item_id = i.item_id
WHERE list_contains($partition_keys, i.partition_key)
  AND still_to_send(r.status, $retry_failed);
