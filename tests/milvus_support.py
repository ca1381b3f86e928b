"""Shared Milvus fixtures: every integration test runs on each engine.

* ``lite``: milvus-lite on a ``.db`` file in a temporary folder, in a child process as the
  product runs it (one per test session; each test gets its own collections).
* ``server``: the Milvus server at ``LOOKALIKE_TEST_MILVUS_SERVER_URI`` (e.g.
  ``http://127.0.0.1:19531`` after ``scripts/milvus_server.sh start /tmp/milvus-data 19531``);
  skipped, with that reason, when the variable is not set.

Test modules bind the fixtures they use (as module attributes, which pytest collects)::

    from tests import milvus_support
    milvus = milvus_support.milvus
    spec = milvus_support.spec

and helpers (:func:`record`, :func:`unit`, :func:`rotate`, :class:`FakeEmbedder`).
"""

from __future__ import annotations

import math
import os
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from lookalike.settings import ImageSettings
from schema.collection import CollectionSpec
from schema.records import ImageRecord, category_levels, image_pk
from store import EngineInfo, MilvusStore

SERVER_ENV = "LOOKALIKE_TEST_MILVUS_SERVER_URI"
DIM = 8
MODEL = "fake-v1"
MAX_PIXELS = ImageSettings().max_pixels  # what ProductSearch is given in production

ENGINES = [
    pytest.param("lite", id="lite"),
    pytest.param(
        "server",
        id="server",
        marks=[
            pytest.mark.milvus_server,
            pytest.mark.skipif(
                not os.environ.get(SERVER_ENV),
                reason=f"no Milvus server: set {SERVER_ENV} (e.g. http://127.0.0.1:19531; "
                "start one with scripts/milvus_server.sh start DIR PORT)",
            ),
        ],
    ),
]


@dataclass
class Milvus:
    """A store on one engine."""

    kind: str
    store: MilvusStore

    @property
    def client(self) -> Any:
        """The raw client, for assertions the store does not offer."""
        return self.store.client

    @property
    def engine(self) -> EngineInfo:
        return self.store.engine

    def new_spec(self, dim: int = DIM, prefix: str = "t") -> CollectionSpec:
        return CollectionSpec(name=f"{prefix}_{uuid.uuid4().hex[:16]}", dim=dim)

    def drop(self, spec: CollectionSpec) -> None:
        self.store.drop_collections(spec)

    def rows(
        self, spec: CollectionSpec, expr: str = 'pk != ""', fields: Sequence[str] | None = None
    ) -> list[dict[str, Any]]:
        """Image rows (Strong consistency). ``expr`` must be a fixed test expression."""
        return list(
            self.client.query(
                spec.name,
                filter=expr,
                limit=16384,
                output_fields=list(fields or ["*"]),
                consistency_level="Strong",
            )
        )


_clients: dict[str, Milvus] = {}


def _open(kind: str, tmp_root: Path) -> Milvus:
    from pymilvus import MilvusClient

    if kind not in _clients:
        if kind == "lite":  # as the product opens it: in a child process (store/lite_process.py)
            _clients[kind] = Milvus(kind, MilvusStore.open(str(tmp_root / "lite.db"),
                                                           lite_process=True))
            return _clients[kind]
        uri = os.environ[SERVER_ENV]
        try:
            client = MilvusClient(uri, timeout=30)
        except Exception as exc:  # a configured server that does not answer is a failure
            raise RuntimeError(f"cannot connect to Milvus at {uri}: {exc}") from exc
        _clients[kind] = Milvus(kind, MilvusStore(client, uri=uri))
    return _clients[kind]


@pytest.fixture(scope="module", params=ENGINES)
def milvus(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Milvus:
    """The client of one engine (module scope, parametrized over the engines; one client per
    engine and test session)."""
    kind = str(request.param)
    return _clients.get(kind) or _open(kind, tmp_path_factory.mktemp("milvus"))


@pytest.fixture
def spec(milvus: Milvus) -> Iterator[CollectionSpec]:
    """A collection spec with a name unique to the test; its collections are dropped after."""
    s = milvus.new_spec()
    yield s
    milvus.drop(s)


# -- data helpers ---------------------------------------------------------------------------


def unit(index: int, dim: int = DIM) -> list[float]:
    """The ``index``-th basis vector."""
    v = [0.0] * dim
    v[index] = 1.0
    return v


def rotate(similarity: float, base: int = 0, towards: int = 1, dim: int = DIM) -> list[float]:
    """A unit vector whose cosine similarity to ``unit(base)`` is ``similarity``."""
    v = [0.0] * dim
    v[base] = similarity
    v[towards] = math.sqrt(max(0.0, 1.0 - similarity * similarity))
    return v


AWAY = [-1.0] + [0.0] * (DIM - 1)
"""Opposite to the query direction ``unit(0)``: far from every test catalog's vectors (the
fake embedder's ``unknown`` for a query photo's quarter turns, which price comparison embeds
to tell whether the photo was saved sideways)."""


def random_unit(rng: np.random.Generator, dim: int = DIM) -> list[float]:
    v = rng.standard_normal(dim).astype(np.float32)
    return [float(x) for x in v / np.linalg.norm(v)]


def record(
    product_id: str,
    key: str,
    vector: Sequence[float],
    *,
    category: str = "Men/Tops",
    price: float = 10.0,
    currency: str = "USD",
    title: str | None = None,
    seller_id: str = "seller-1",
    model_version: str = MODEL,
    version: int = 1,
) -> ImageRecord:
    return ImageRecord(
        pk=image_pk(product_id, key),
        product_id=product_id,
        image_key=key,
        category=category,
        **category_levels(category),
        price=price,
        currency=currency,
        title=title if title is not None else f"Product {product_id}",
        seller_id=seller_id,
        image_ref=f"https://img.example/{key}.jpg",
        model_version=model_version,
        version=version,
        updated_at_ms=1_700_000_000_000 + version,
        vector=list(vector),
    )


class FakeEmbedder:
    """Maps a picture to the vector registered for the colour of its top-left pixel (a
    solid-colour picture to its colour's); others to ``unknown`` when set."""

    dim = DIM

    def __init__(self, model_version: str = MODEL) -> None:
        self.model_version = model_version
        self.table: dict[tuple[int, int, int], list[float]] = {}
        self.unknown: list[float] | None = None
        """The vector of a picture whose corner is not in ``table`` (None: a KeyError)."""

    def picture(self, color: tuple[int, int, int], vector: Sequence[float]) -> Image.Image:
        self.table[color] = list(vector)
        return Image.new("RGB", (16, 16), color)

    def embed(self, images: Sequence[Image.Image]) -> np.ndarray:
        out = []
        for image in images:
            pixel = image.convert("RGB").getpixel((0, 0))
            assert isinstance(pixel, tuple)
            corner = (int(pixel[0]), int(pixel[1]), int(pixel[2]))
            v = np.asarray(self.unknown if corner not in self.table and self.unknown is not None
                           else self.table[corner], np.float32)
            out.append(v / np.linalg.norm(v))
        return np.stack(out).astype(np.float32)
