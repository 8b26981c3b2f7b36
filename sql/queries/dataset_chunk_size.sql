SELECT chunk_size FROM datasets WHERE dataset = $dataset;
