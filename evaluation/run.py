"""Index a gallery into a fresh collection, run every query through the search API, score.

The gallery goes through the same path as ingest (decode at the model's scale, embed, one
:class:`~schema.records.ImageRecord` per image) and the queries through
:meth:`search.api.ProductSearch.by_vectors` (one hit per product, its best image), with query
vectors from the same decode, cut-out and embed as :meth:`~search.api.ProductSearch.by_image`
(:meth:`~search.api.ProductSearch.query_vectors`). Vectors come from the
:class:`~evaluation.cache.EmbeddingCache` where it has them.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from tqdm import tqdm

from embedding.decode import ImageDecodeError, decode_image, shrink_to
from embedding.embedder import Embedder
from evaluation.cache import EmbeddingCache, content_hash
from evaluation.metrics import QueryResult, Summary, summarise
from evaluation.protocol import GalleryProduct, ProtocolError, Query
from lookalike.settings import MAX_K
from schema.collection import CollectionSpec
from schema.events import image_key
from schema.records import ImageRecord, category_levels, image_pk
from search.api import ProductSearch
from search.features import photo_features
from search.intent import Match
from search.scene import (
    CUTOUT_VERSION,
    LIGHT_VERSION,
    VERIFY_SIZE,
    WINDOW_VERSION,
    WORKING_SIDE,
    scene_queries,
)
from search.verify import SameItemVerifier
from store import MilvusStore, ensure_collections

CHUNK = 64
"""Images decoded and embedded per step (and rows per upsert)."""


@dataclass
class EmbedStats:
    images: int = 0
    cached: int = 0
    embedded: int = 0
    cutouts: int = 0
    """Query photos also searched with their product cut out on white."""
    windows: int = 0
    """Query photos also searched with their windows (ten crops each)."""
    lit: int = 0
    """Scene photos also searched under catalog light (:func:`search.scene.white_patch`;
    those whose light it changes)."""
    cutout_seconds: float = 0.0
    """Time spent looking for cut-outs and windows (decode, segmentation) and embedding
    them."""
    seconds: float = 0.0
    """Decode + embed time of the images not in the cache."""

    @property
    def images_per_s(self) -> float | None:
        return self.embedded / self.seconds if self.embedded and self.seconds > 0 else None


@dataclass
class EvalReport:
    summary: Summary
    model: str
    n_gallery: int
    n_gallery_images: int
    embed: EmbedStats = field(default_factory=EmbedStats)
    search_seconds: float = 0.0
    results: list[QueryResult] = field(default_factory=list)
    """Each query's outcome, in the order of the queries file."""
    match: Match = "exact"
    """The intent the queries were scored with (``--match``)."""

    @property
    def details(self) -> list[dict[str, Any]]:
        """One JSON object per query (:meth:`QueryResult.detail`; ``lookalike eval
        --details``)."""
        return [result.detail() for result in self.results]

    def to_json(self) -> dict[str, Any]:
        s = self.summary
        return {
            "task": "retrieval",
            "match": self.match,
            **{key: round(value, 4) for key, value in s.overall.items()},
            "n_queries": s.n_queries,
            "n_gallery": self.n_gallery,
            "n_gallery_images": self.n_gallery_images,
            "model": self.model,
            "per_category": {
                c: {**{k: round(v, 4) for k, v in m.items()}, "n_queries": s.category_counts[c]}
                for c, m in s.per_category.items()
            },
            "embedded_images": self.embed.embedded,
            "cached_images": self.embed.cached,
            "cutout_queries": self.embed.cutouts,
            "window_queries": self.embed.windows,
            "lit_queries": self.embed.lit,
            "cutout_seconds": round(self.embed.cutout_seconds, 2),
            "embed_images_per_s": (
                round(self.embed.images_per_s, 1) if self.embed.images_per_s else None
            ),
            "search_seconds": round(self.search_seconds, 2),
        }


def embed_files(
    paths: Sequence[Path],
    embedder: Embedder,
    cache: EmbeddingCache | None,
    *,
    max_pixels: int,
    stats: EmbedStats,
    desc: str = "embed",
) -> NDArray[np.float32]:
    """Vectors of ``paths`` in order: cached ones looked up, the others decoded as the search
    API decodes a query (at the model's scale) and embedded in chunks."""
    datas = [_read(p) for p in paths]
    digests = [content_hash(d) for d in datas]
    version = embedder.model_version
    found = cache.get_many(version, digests) if cache is not None else {}
    out = np.zeros((len(paths), embedder.dim), dtype=np.float32)
    todo: list[int] = []
    first_of: dict[str, int] = {}
    for i, digest in enumerate(digests):
        if digest in found:
            out[i] = found[digest]
        elif digest not in first_of:
            first_of[digest] = i
            todo.append(i)
    stats.images += len(paths)
    stats.cached += len(paths) - len(todo)
    min_size = getattr(embedder, "decode_size", None)
    started = time.perf_counter()
    with tqdm(total=len(todo), unit="img", desc=desc, disable=None) as bar:
        for start in range(0, len(todo), CHUNK):
            chunk = todo[start : start + CHUNK]
            images = [_decode(paths[i], datas[i], max_pixels, min_size) for i in chunk]
            vectors = np.asarray(embedder.embed(images), dtype=np.float32)
            for i, vector in zip(chunk, vectors, strict=True):
                out[i] = vector
            if cache is not None:
                cache.put_many(version, [(digests[i], out[i]) for i in chunk])
            bar.update(len(chunk))
    stats.embedded += len(todo)
    stats.seconds += time.perf_counter() - started
    for i, digest in enumerate(digests):  # duplicates of an image embedded in this run
        if digest not in found and first_of[digest] != i:
            out[i] = out[first_of[digest]]
    return out


def embed_scene_queries(
    paths: Sequence[Path],
    embedder: Embedder,
    cache: EmbeddingCache | None,
    *,
    max_pixels: int,
    stats: EmbedStats,
    cutouts: bool = True,
    windows: bool = True,
    light: bool = True,
) -> dict[int, NDArray[np.float32]]:
    """The vectors an image search with a scene photo (:func:`search.scene.is_scene`)
    searches with, for the photos in ``paths`` that have more than their own, by position,
    one row each, in the order of :meth:`search.api.ProductSearch.query_vectors` (the same
    decode, light, crops and embed; the light, cut-outs and windows made from the photo
    shrunk to :data:`~search.scene.WORKING_SIDE`): the photo's, its own under catalog light
    (:func:`search.scene.white_patch`), its cut-outs' (:func:`search.scene.cutouts`) and
    its windows' (:func:`search.scene.windows`), each unless turned off. Cached under the photo's
    content hash and :data:`~search.scene.LIGHT_VERSION`, :data:`~search.scene.CUTOUT_VERSION`
    or :data:`~search.scene.WINDOW_VERSION`, and the cut-out's or crop's index (the
    cut-outs' and windows' keys name the light too: they are cut from the lit photo)."""
    min_size = getattr(embedder, "decode_size", None)
    version = embedder.model_version
    started = time.perf_counter()
    keys: dict[int, list[str]] = {}
    pictures: dict[str, Any] = {}
    for i, path in enumerate(tqdm(paths, unit="img", desc="cut-outs and windows", disable=None)):
        data = _read(path)
        picture = _decode(path, data, max_pixels, min_size)
        digest = content_hash(data)
        named = [(digest, picture)]  # the photo as taken: embed_files' key
        parts = scene_queries(shrink_to(picture, WORKING_SIDE), light=light, cutouts_too=cutouts,
                              windows_too=windows)
        light_key = f":{LIGHT_VERSION}" if parts.lit is not None else ""
        if parts.lit is not None:
            named.append((f"{digest}{light_key}", parts.lit))
        stats.lit += parts.lit is not None
        stats.cutouts += bool(parts.cutouts)
        stats.windows += bool(parts.windows)
        named += [
            (f"{digest}:{CUTOUT_VERSION}{light_key}:{n}", cut)
            for n, cut in enumerate(parts.cutouts)
        ] + [(f"{digest}:{WINDOW_VERSION}{light_key}:{n}", crop)
             for n, crop in enumerate(parts.windows)]
        if len(named) > 1:
            keys[i] = [key for key, _ in named]
            pictures.update(named)
    found = cache.get_many(version, list(pictures)) if cache is not None else {}
    todo = [key for key in pictures if key not in found]
    for start in range(0, len(todo), CHUNK):
        chunk = todo[start : start + CHUNK]
        vectors = np.asarray(embedder.embed([pictures[key] for key in chunk]), dtype=np.float32)
        found.update(zip(chunk, vectors, strict=True))
        if cache is not None:
            cache.put_many(version, [(key, found[key]) for key in chunk])
    stats.cutout_seconds += time.perf_counter() - started
    return {i: np.stack([found[key] for key in names]) for i, names in keys.items()}


def index_gallery(
    store: MilvusStore,
    spec: CollectionSpec,
    products: Sequence[GalleryProduct],
    vectors: NDArray[np.float32],
    model_version: str,
) -> int:
    """Upsert one row per gallery image (vectors in ``products``' image order); flush."""
    rows: list[dict[str, Any]] = []
    row = 0
    for product in products:
        for path in product.images:
            key = image_key(str(path))
            rows.append(ImageRecord(
                pk=image_pk(product.product_id, key), product_id=product.product_id,
                image_key=key, category=product.category, **category_levels(product.category),
                price=product.price, currency=product.currency, title=product.title,
                seller_id=product.seller_id, image_ref=str(path)[-2048:],
                model_version=model_version,
                version=1, updated_at_ms=0, vector=vectors[row].tolist(),
            ).to_row())
            row += 1
    store.upsert(spec.name, rows, op="index_gallery")
    store.flush(spec.name)
    return len(rows)


def run_queries(
    searcher: ProductSearch, queries: Sequence[Query], vectors: NDArray[np.float32],
    match: Match = "exact", scene: dict[int, NDArray[np.float32]] | None = None,
    rerank_max_pixels: int | None = None,
) -> list[QueryResult]:
    """Each query's top max(10, R) products (R = its relevant count, at most MAX_K).

    ``vectors`` holds every query image in order (``query.images`` of each query in turn),
    ``scene`` all the vectors a scene photo searches with, by the same position
    (:func:`embed_scene_queries`); a query with several views searches with all of them
    and theirs (``ProductSearch.by_vectors``). With ``rerank_max_pixels`` each search
    checks the geometry of its first products against the query photos, decoded as
    ``ProductSearch.by_images`` decodes them to do so (``ProductSearch.rerank``).
    """
    scene = scene or {}
    results = []
    start = 0
    with tqdm(total=len(queries), unit="query", desc="search", disable=None) as bar:
        for query in queries:
            k = min(max(10, len(query.relevant)), MAX_K)
            views: list[Any] = []
            for i in range(start, start + len(query.images)):
                if i in scene:
                    views.extend(scene[i])  # the photo's own first
                else:
                    views.append(vectors[i])
            start += len(query.images)
            photos = (None if rerank_max_pixels is None else
                      [photo_features(_load_to_verify(path, rerank_max_pixels), segment=False)
                       for path in query.images])
            hits = searcher.by_vectors(views, k=k, match=match, photos=photos)
            results.append(QueryResult([h.product_id for h in hits], set(query.relevant),
                                       query.category, tuple(str(p) for p in query.images),
                                       tuple(h.score for h in hits),
                                       tuple(h.inliers for h in hits)))
            bar.update(1)
    if start != len(vectors):
        raise ValueError(f"{len(vectors)} query vectors for {start} query images")
    return results


def evaluate(
    products: Sequence[GalleryProduct],
    queries: Sequence[Query],
    embedder: Embedder,
    store: MilvusStore,
    spec: CollectionSpec,
    cache: EmbeddingCache | None,
    *,
    max_pixels: int,
    match: Match = "exact",
    cutout_queries: bool = True,
    window_queries: bool = True,
    light_queries: bool = True,
    verifier: SameItemVerifier | None = None,
) -> EvalReport:
    """Index ``products`` into the (fresh) collections of ``spec``, then score ``queries``
    (scene photos also under catalog light and with their cut-outs and windows, unless
    turned off, as ``lookalike search`` would; with
    a ``verifier`` reading the gallery's photos, searches re-ranked by geometry as
    ``ProductSearch.by_images`` re-ranks them)."""
    stats = EmbedStats()
    n_rows = index_products(products, embedder, store, spec, cache, max_pixels=max_pixels,
                            stats=stats)
    query_paths = [p for q in queries for p in q.images]
    query_vectors = embed_files(query_paths, embedder, cache, max_pixels=max_pixels,
                                stats=stats, desc="embed queries")
    scene = (embed_scene_queries(query_paths, embedder, cache, max_pixels=max_pixels,
                                 stats=stats, cutouts=cutout_queries, windows=window_queries,
                                 light=light_queries)
             if cutout_queries or window_queries or light_queries else {})
    # Strong: the queries must see the gallery written just before.
    searcher = ProductSearch(store, spec, embedder, consistency="Strong", max_pixels=max_pixels,
                             verifier=verifier, rerank=verifier is not None,
                             rerank_budget_s=None)
    started = time.perf_counter()
    results = run_queries(searcher, queries, query_vectors, match, scene,
                          rerank_max_pixels=max_pixels if verifier is not None else None)
    return EvalReport(
        summary=summarise(results), model=embedder.model_version, n_gallery=len(products),
        n_gallery_images=n_rows, embed=stats, search_seconds=time.perf_counter() - started,
        results=results, match=match,
    )


def index_products(
    products: Sequence[GalleryProduct], embedder: Embedder, store: MilvusStore,
    spec: CollectionSpec,
    cache: EmbeddingCache | None, *, max_pixels: int, stats: EmbedStats,
) -> int:
    """Embed the gallery (through the cache) into the fresh collections of ``spec``; rows."""
    if spec.dim != embedder.dim:
        raise ValueError(f"collection is {spec.dim}-d, the embedder {embedder.dim}-d")
    gallery_paths = [p for product in products for p in product.images]
    gallery_vectors = embed_files(gallery_paths, embedder, cache, max_pixels=max_pixels,
                                  stats=stats, desc="embed gallery")
    ensure_collections(store, spec)
    return index_gallery(store, spec, products, gallery_vectors, embedder.model_version)


def _load_to_verify(path: Path, max_pixels: int) -> Any:
    """A query photo decoded as ``ProductSearch.by_images`` decodes it to check geometry."""
    return _decode(path, _read(path), max_pixels, VERIFY_SIZE)


def _read(path: Path) -> bytes:
    """The bytes of an image the protocol names, or one clear ProtocolError."""
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ProtocolError(f"cannot read image {path}: {exc.strerror or exc}") from None


def _decode(path: Path, data: bytes, max_pixels: int, min_size: int | None) -> Any:
    """``data`` (read from ``path``) decoded as a query is, or one clear ProtocolError."""
    try:
        return decode_image(data, max_pixels, min_size=min_size)
    except ImageDecodeError as exc:
        raise ProtocolError(f"image {path}: {exc.reason}: {exc.detail}") from None
