"""The Milvus store: the one package that talks to Milvus (and alone imports pymilvus).

* :class:`MilvusStore` (``client.py``): connection, timeouts, bounded retries, consistency per
  call, query / scan / count / search / upsert / delete / flush, loading and aliases; and
  pymilvus' own log lines, quieted when a store opens (``quiet_client_logs``).
* ``engine.py``: Lite vs 2.3/2.4 vs 2.5+ (templates, index types, search parameters).
* ``collections.py``: the collections of a :class:`schema.collection.CollectionSpec`.
* ``versions.py``: the model-version registry and the serving aliases; dropping an old version.
* ``lease.py``: a lease row with an owner and an expiry (one ``lookalike reindex`` at a time).
* ``expressions.py``: the one compiler from values to filter expressions (+ parameters), and
  the same filter as data (:class:`store.expressions.Term`).
* ``lite_index.py``: the exact in-memory copy of each Milvus Lite image collection that
  answers searches, queries and counts there (Lite itself walks every row per search).
* ``errors.py``: :class:`StoreUnavailableError` (wait and retry) and :class:`StoreError`.
"""

from store.client import CallTiming, Consistency, MilvusStore, Where, quiet_client_logs
from store.collections import ensure_collections
from store.engine import MAX_RESULT_WINDOW, EngineInfo, parse_engine
from store.errors import StoreError, StoreUnavailableError, is_transient
from store.expressions import ExpressionBuilder

__all__ = [
    "MAX_RESULT_WINDOW",
    "CallTiming",
    "Consistency",
    "EngineInfo",
    "ExpressionBuilder",
    "MilvusStore",
    "StoreError",
    "StoreUnavailableError",
    "Where",
    "ensure_collections",
    "is_transient",
    "parse_engine",
    "quiet_client_logs",
]
