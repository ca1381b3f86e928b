"""Contracts: product events, stored records and the Milvus collection definition."""
