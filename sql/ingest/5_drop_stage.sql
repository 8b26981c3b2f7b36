-- Ingest, step 5: the staging table has served (it lives only inside the ingest transaction).
DROP TABLE staged;
