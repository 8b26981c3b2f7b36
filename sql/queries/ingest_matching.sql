-- Staged first-occurrence lines whose id now holds exactly that request (new or unchanged).
SELECT count(*)
FROM staged s JOIN items i ON i.dataset = $dataset AND i.item_id = s.item_id
WHERE s.nth = 1 AND i.request_sha256 = s.request_sha256;
