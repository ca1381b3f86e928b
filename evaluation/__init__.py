"""Retrieval evaluation: ``lookalike eval`` measures the product itself.

A protocol is a gallery (catalog-format products) and queries (an image and the products
relevant to it). The gallery is indexed through the real embedding path into a fresh
collection and every query runs through the real search API; :mod:`evaluation.metrics` turns
the ranked product lists into Recall@k and mAP@R.
"""
