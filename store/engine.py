"""Which Milvus answers, and the quirks and index choices of each engine (Lite, 2.3/2.4, 2.5+).

Index choices depend on the engine:

* milvus-lite (a local ``*.db`` file): ``FLAT`` (exact brute force over numpy; lite's HNSW
  needs the optional faiss package and is rebuilt per segment; searches are answered by the
  store's in-memory copy, store/lite_index.py, unless it is off) and ``INVERTED`` scalar indexes
  on ``product_id`` and ``price``. The category level columns get none: lite uses scalar
  indexes only when *every* field of a filter is indexed (a search filter always has
  ``model_version``), and its vectorised (Arrow) evaluation of ``category_l<d> == ...`` is
  already below the noise (measured at 5,000 rows: no difference with INVERTED indexes on the
  levels, nor on the levels plus ``model_version`` and ``currency``).
* Milvus server: ``HNSW`` (M=16, efConstruction=200). Scalar indexes: ``INVERTED`` on
  ``product_id``, ``category_l1`` .. ``category_l8`` and ``price`` from 2.5 on; before 2.5
  (2.3.x rejects INVERTED) ``Trie`` on ``product_id`` and the eight level columns and
  ``STL_SORT`` on ``price`` (on 2.3.5 at 20,000 rows, Trie on all eight levels cost no
  measurable load or ingest time against none or three).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from dataclasses import field as dc_field
from typing import Any, Literal

from schema.collection import STATE_VECTOR_FIELD, CollectionSpec
from schema.records import CATEGORY_LEVEL_FIELDS

log = logging.getLogger(__name__)

MAX_RESULT_WINDOW = 16384
"""Milvus' upper bound for ``limit`` (topK) of one search and the rows of one query."""


@dataclass(frozen=True)
class EngineInfo:
    """Which Milvus answers on a client, and what it can do."""

    kind: Literal["milvus-lite", "milvus"]
    version: tuple[int, int, int]
    version_string: str

    @property
    def is_lite(self) -> bool:
        return self.kind == "milvus-lite"

    @property
    def supports_filter_templates(self) -> bool:
        """``{name}`` placeholders + ``filter_params``: Milvus 2.5+; not 2.3/2.4 nor lite."""
        return not self.is_lite and self.version >= (2, 5, 0)

    @property
    def supports_inverted_index(self) -> bool:
        return self.is_lite or self.version >= (2, 5, 0)


_VERSION = re.compile(r"(\d+)\.(\d+)(?:\.(\d+))?")


def is_lite_uri(uri: str) -> bool:
    """A local ``*.db`` path (Milvus Lite) rather than a server URI."""
    return "://" not in uri or uri.strip().endswith(".db")


def parse_engine(version_string: str, uri: str | None = None) -> EngineInfo:
    """Classify a ``get_server_version()`` answer (and optionally the URI that was opened).

    milvus-lite 3.x answers ``milvus_lite-3.2.2``; servers answer ``v2.5.4`` (the PyPI
    ``milvus`` package's standalone server answers ``v2.3.5-lite``: a server, not lite).
    """
    lite = version_string.startswith("milvus_lite") or (
        uri is not None and uri.strip().endswith(".db")
    )
    m = _VERSION.search(version_string)
    version = (int(m[1]), int(m[2]), int(m[3] or 0)) if m else (0, 0, 0)
    if not lite and m is None:
        log.warning("unrecognised Milvus version %r; assuming an old server", version_string)
    return EngineInfo("milvus-lite" if lite else "milvus", version, version_string)


@dataclass(frozen=True)
class IndexChoice:
    field: str
    index_type: str
    metric_type: str | None = None
    params: dict[str, Any] = dc_field(default_factory=dict)


def image_indexes(spec: CollectionSpec, engine: EngineInfo) -> list[IndexChoice]:
    """Indexes of the image collection on this engine (vector index first)."""
    if engine.is_lite:
        return [
            IndexChoice("vector", "FLAT", spec.metric),
            IndexChoice("product_id", "INVERTED"),
            IndexChoice("price", "INVERTED"),
        ]
    vector = IndexChoice(
        "vector",
        "HNSW",
        spec.metric,
        {"M": spec.hnsw_m, "efConstruction": spec.hnsw_ef_construction},
    )
    if engine.supports_inverted_index:
        return [
            vector,
            IndexChoice("product_id", "INVERTED"),
            *(IndexChoice(level, "INVERTED") for level in CATEGORY_LEVEL_FIELDS),
            IndexChoice("price", "INVERTED"),
        ]
    return [
        vector,
        IndexChoice("product_id", "Trie"),
        *(IndexChoice(level, "Trie") for level in CATEGORY_LEVEL_FIELDS),
        IndexChoice("price", "STL_SORT"),
    ]


def state_indexes(engine: EngineInfo) -> list[IndexChoice]:
    """The state (and registry) collections' constant vector only needs to be loadable."""
    return [IndexChoice(STATE_VECTOR_FIELD, "FLAT", "L2")]


HNSW_EF = 256
"""Search-time ``ef`` on servers (at least the limit). On a 2.3.5 server at 20k rows with
1,472-d vectors, recall@10 under a 10 % category / 5 % price filter was 0.95 / 0.83 at ef=64,
0.98 / 1.00 at 128 and 1.00 / 1.00 at 256, at no measurable latency cost (docs/scaling.md)."""


def search_params(spec: CollectionSpec, engine: EngineInfo, limit: int) -> dict[str, Any]:
    """``search_params`` for a search returning up to ``limit`` rows (HNSW needs ef >= limit)."""
    if engine.is_lite:
        return {"metric_type": spec.metric, "params": {}}
    ef = max(HNSW_EF, min(limit, MAX_RESULT_WINDOW))
    return {"metric_type": spec.metric, "params": {"ef": ef}}
