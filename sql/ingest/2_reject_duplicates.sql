-- Ingest, step 2: a repeated id in the file, or an id already ingested with a different
-- request, is rejected with the line it clashes with.
INSERT OR REPLACE INTO rejected_lines (dataset, source_file, line_no, item_id, reason, excerpt)
SELECT $dataset, $source_file, s.line_no, s.item_id,
       CASE WHEN s.nth > 1
            THEN format('duplicate id "{}": first used on line {}; give each line a unique id',
                        s.item_id, s.first_line)
            ELSE format('id "{}" was already ingested from {} line {} with a different request; '
                        || 'give the new prompt a new id', s.item_id, i.source_file, i.line_no)
       END,
       left(s.input_text, 200)
FROM staged s
LEFT JOIN items i ON i.dataset = $dataset AND i.item_id = s.item_id
WHERE s.nth > 1 OR (i.item_id IS NOT NULL AND i.request_sha256 <> s.request_sha256)
RETURNING line_no, reason;
