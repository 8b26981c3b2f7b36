INSERT INTO sources (dataset, source_file, lines, accepted, unchanged, rejected)
VALUES ($dataset, $source_file, $lines, $accepted, $unchanged, $rejected);
