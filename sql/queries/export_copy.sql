-- Write the export_items table to a file; {path} and {format} (parquet or json: JSON Lines) are
-- filled in by exports.py, since COPY takes no parameters.
COPY export_items TO '{path}' (FORMAT {format});
