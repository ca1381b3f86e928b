"""Fine-tuning the embedding model on a catalog (``lookalike train``); see docs/training.md.

Nothing here is imported by ingest or search: they load the result through
:mod:`embedding.trained`.
"""
