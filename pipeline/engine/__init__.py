"""Reading the lake: ``Lake`` (a snapshot, polars LazyFrames, SQL, selection, labels) and trajectories."""
