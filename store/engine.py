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
* Milvus server: ``IVF_FLAT`` (:data:`IVF_NLIST` lists), searched with :data:`IVF_NPROBE`
  lists without a filter and *every* list under a filter (:func:`search_params`): within the
  lists it probes IVF_FLAT scores every row that passes the filter, so a filtered search is
  exact, and it costs about the matching rows (HNSW, before, walked its graph under a ~10 %
  filter and missed: recall@10 0.80-0.92 at 100k rows on 2.3.5 at any ef; docs/scaling.md).
  Scalar indexes: ``INVERTED`` on
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
    vector = IndexChoice("vector", "IVF_FLAT", spec.metric, {"nlist": IVF_NLIST})
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


IVF_NLIST = 1024
"""Lists of the servers' IVF_FLAT index (per sealed segment of up to ~90k 1,472-d rows).
Measured on the 2.3.5 server at 100k rows (scale bench collection, load 7-10): unfiltered
recall@10 1.000 with 16 or 32 of 1,024 lists (nlist 128 / 256: 1.000 / 0.998 at nprobe 8);
the build took 64 s for 100k rows where HNSW (M=16) took minutes, so rows leave brute force
sooner (docs/scaling.md)."""
IVF_NPROBE = 32
"""Lists probed by an unfiltered search (3 % of the rows)."""
HNSW_EF = 256
"""Search-time ``ef`` for collections still indexed with HNSW (made before IVF_FLAT became
the servers' index; ``lookalike reindex`` rebuilds them): at least the limit."""


def search_params(spec: CollectionSpec, engine: EngineInfo, limit: int, *,
                  filtered: bool) -> dict[str, Any]:
    """``search_params`` for a search returning up to ``limit`` rows.

    ``filtered``: the filter narrows the rows beyond the model version. Such a search probes
    every list, which makes it exact over the matching rows: probing a few lists finds the
    nearest rows, but a selective filter's best matches lie farther away (measured at 100k
    rows, 8 of 128 lists: recall@10 1.00 / 0.98 / 0.78 under a 10 % / 5 % / 0.5 % filter).
    ``ef`` rides along for an HNSW index of an older collection (2.3.5 ignores what the index
    does not use; not measured on 2.5+)."""
    if engine.is_lite:
        return {"metric_type": spec.metric, "params": {}}
    ef = max(HNSW_EF, min(limit, MAX_RESULT_WINDOW))
    nprobe = IVF_NLIST if filtered else IVF_NPROBE
    return {"metric_type": spec.metric, "params": {"nprobe": nprobe, "ef": ef}}
