"""The embedding model shared by ingest and search (image -> L2-normalised vector)."""
