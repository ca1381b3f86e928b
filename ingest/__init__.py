"""Catalog sync: Kafka product events -> images -> embeddings -> Milvus."""
