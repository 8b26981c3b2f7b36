-- The views and macros this file holds (what sql/views/ creates), to tell whether it is current.
SELECT view_name FROM duckdb_views() WHERE NOT internal
UNION ALL
SELECT function_name FROM duckdb_functions() WHERE function_type = 'macro' AND NOT internal;
