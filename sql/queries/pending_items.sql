-- Items of one chunk still to send: no result yet, or (unless missing-only) a failed one.
SELECT i.dataset, i.item_id, i.partition_key, i.model, i.max_tokens, i.est_input_tokens,
       i.request
FROM items i
LEFT JOIN results r ON r.dataset = i.dataset AND r.item_id = i.item_id
WHERE i.partition_key = $partition_key
  AND still_to_send(r.status, $retry_failed)
ORDER BY i.line_no;
