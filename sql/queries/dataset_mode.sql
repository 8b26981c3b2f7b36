-- realtime | batch: how a dataset's chunks run unless a run says otherwise.
SELECT mode FROM datasets WHERE dataset = $dataset;
