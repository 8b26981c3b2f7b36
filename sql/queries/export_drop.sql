-- The export's temporary table has been written out.
DROP TABLE export_items;
