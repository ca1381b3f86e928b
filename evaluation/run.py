"""Index a gallery into a fresh collection, run every query through the search API, score.

The gallery goes through the same path as ingest (decode at the model's scale, embed, one
:class:`~schema.records.ImageRecord` per image) and the queries through
:meth:`search.api.ProductSearch.by_vectors` (one hit per product, its best image), with query
vectors from the same decode, cut-out and embed as :meth:`~search.api.ProductSearch.by_image`
(:meth:`~search.api.ProductSearch.query_vectors`). Vectors come from the
:class:`~evaluation.cache.EmbeddingCache` where it has them.

A photo that cannot be read or decoded is a per-item failure with its
:class:`~schema.errors.Reason`, one warning naming its line: a gallery image is left out of the
index (a product left with none cannot be found), a query is not scored and is counted among
the skipped (:class:`SkippedQuery`), as is a retrieval query with no relevant product. With
``strict`` the first such photo stops the run instead (a :class:`ProtocolError`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence, Set
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from tqdm import tqdm

from embedding.decode import decode_image, shrink_to
from embedding.embedder import Embedder
from evaluation.cache import EmbeddingCache, content_hash
from evaluation.metrics import QueryResult, Summary, summarise
from evaluation.protocol import GalleryProduct, ProtocolError, Query
from lookalike.settings import MAX_K
from schema.collection import CollectionSpec
from schema.errors import ItemError, ItemFailure, Reason
from search.api import RERANK_DEPTH, ProductSearch
from search.features import photo_features
from search.intent import SIMILAR_VIEWS, Match
from search.scene import (
    CUTOUT_VERSION,
    LIGHT_VERSION,
    VERIFY_SIZE,
    WINDOW_VERSION,
    WORKING_SIDE,
    SceneQueries,
    scene_queries,
)
from search.verify import SameItemVerifier
from store import MilvusStore, ensure_collections

log = logging.getLogger("lookalike")

CHUNK = 64
"""Images decoded and embedded per step (and rows per upsert)."""
READ_CHUNK = 16
"""Photos read, hashed and looked up in the cache per step: their bytes are all that
:func:`embed_files` holds of them."""
NO_RELEVANT = "no_relevant_product"
"""A skipped retrieval query's reason: nothing in the gallery is relevant to it, so neither
recall nor mAP@R is defined (image failures use :class:`~schema.errors.Reason`)."""


@dataclass(frozen=True)
class SkippedQuery:
    """A query that was not scored: its line, a reason code and the detail."""

    where: str
    reason: str
    detail: str

    def to_json(self) -> dict[str, str]:
        return {"query": self.where, "reason": self.reason, "detail": self.detail}


def skipped_summary(skipped: Iterable[SkippedQuery]) -> str:
    """Skipped queries by reason, most frequent first: ``"2 corrupt_image, 1 not_found"``."""
    counts: dict[str, int] = {}
    for query in skipped:
        counts[query.reason] = counts.get(query.reason, 0) + 1
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return ", ".join(f"{n} {reason}" for reason, n in ranked)


@dataclass
class EmbedStats:
    images: int = 0
    cached: int = 0
    """Distinct photos (by content) whose vector the embedding cache had."""
    repeated: int = 0
    """Photos whose content was already seen earlier in this run (gallery or queries): each
    content is looked up or embedded once, so this count is the same whatever the cache
    holds."""
    embedded: int = 0
    """Distinct photos (by content) decoded and embedded."""
    unreadable: int = 0
    """Images that could not be read or decoded (skipped, each with a warning)."""
    left_out: int = 0
    """Gallery products left out of the index: none of their images could be read."""
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
    untimed: int = 0
    """Of ``embedded``, the photos whose time is not in ``seconds`` (same-item's query
    photos, embedded inside ``compare_prices``): left out of ``images_per_s``."""
    seen: dict[tuple[str, str], NDArray[np.float32] | ItemFailure] = field(
        default_factory=dict, repr=False, compare=False)
    """The photos read in this run by (model version, content hash): the vector, or why there
    is none (what makes a later photo of the same content ``repeated``). By version too: a
    ``similar`` query embeds a photo otherwise than the gallery did
    (:class:`search.intent.SimilarViews`), and must not take a gallery photo's vector."""

    @property
    def images_per_s(self) -> float | None:
        timed = self.embedded - self.untimed
        return timed / self.seconds if timed > 0 and self.seconds > 0 else None


@dataclass
class EvalReport:
    summary: Summary
    model: str
    n_gallery: int
    n_gallery_images: int
    """The image rows indexed: one per product and distinct photo."""
    embed: EmbedStats = field(default_factory=EmbedStats)
    search_seconds: float = 0.0
    results: list[QueryResult] = field(default_factory=list)
    """Each query's outcome, in the order of the queries file."""
    match: Match = "exact"
    """The intent the queries were scored with (``--match``)."""
    skipped: list[SkippedQuery] = field(default_factory=list)
    """The queries not scored, in the order of the queries file."""

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
            "n_queries_skipped": len(self.skipped),
            "skipped": [query.to_json() for query in self.skipped],
            "n_gallery": self.n_gallery,
            "n_gallery_images": self.n_gallery_images,
            "model": self.model,
            "per_category": {
                c: {**{k: round(v, 4) for k, v in m.items()}, "n_queries": s.category_counts[c]}
                for c, m in s.per_category.items()
            },
            "embedded_images": self.embed.embedded,
            "cached_images": self.embed.cached,
            "repeated_images": self.embed.repeated,
            "unreadable_images": self.embed.unreadable,
            "products_left_out": self.embed.left_out,
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
    failures: dict[int, ItemFailure] | None = None,
) -> NDArray[np.float32]:
    """Vectors of ``paths`` in order: cached ones looked up, the others decoded as the search
    API decodes a query (at the model's scale) and embedded in chunks, each content once in
    the run (a photo whose content ``stats`` has seen, in this call or an earlier one, is
    ``repeated`` and gets the vector, or the failure, of its first sighting).

    The photos are read :data:`READ_CHUNK` at a time, each once: hashed, looked up in the
    cache and decoded, and their bytes dropped; what is kept is the vectors (a gallery of
    large photos needs no more memory than a gallery of small ones).

    A photo that cannot be read or decoded goes into ``failures`` by position (its row stays
    zero); without ``failures`` it is a :class:`ProtocolError` naming the photo."""
    version = embedder.model_version
    min_size = getattr(embedder, "decode_size", None)
    out = np.zeros((len(paths), embedder.dim), dtype=np.float32)
    found_failures: dict[int, ItemFailure] = {}
    first_of: dict[str, int] = {}  # content first seen in this call -> its position
    repeats: list[tuple[int, str]] = []
    batch: list[tuple[int, str, Any]] = []  # decoded, to embed
    batched = 0  # photos to embed in this batch, those that failed to decode included

    def embed_batch() -> None:
        started = time.perf_counter()
        if batch:
            vectors = np.asarray(embedder.embed([image for _, _, image in batch]),
                                 dtype=np.float32)
            for (i, _, _), vector in zip(batch, vectors, strict=True):
                out[i] = vector
            if cache is not None:
                cache.put_many(version, [(digest, out[i]) for i, digest, _ in batch])
            stats.embedded += len(batch)
        stats.seconds += time.perf_counter() - started
        batch.clear()

    with tqdm(total=len(paths), unit="img", desc=desc, disable=None) as bar:
        for start in range(0, len(paths), READ_CHUNK):
            read: list[tuple[int, str, bytes]] = []
            for i in range(start, min(start + READ_CHUNK, len(paths))):
                try:
                    data = _read(paths[i])
                except ItemError as exc:
                    _failed(paths[i], exc, failures)
                    found_failures[i] = exc.failure
                    continue
                read.append((i, content_hash(data), data))
            new = [digest for _, digest, _ in read
                   if (version, digest) not in stats.seen and digest not in first_of]
            found = cache.get_many(version, new) if cache is not None and new else {}
            for i, digest, data in read:
                if (version, digest) in stats.seen or digest in first_of:
                    stats.repeated += 1
                    repeats.append((i, digest))
                    continue
                first_of[digest] = i
                if digest in found:
                    out[i] = found[digest]
                    stats.cached += 1
                    continue
                batched += 1
                started = time.perf_counter()
                try:
                    batch.append((i, digest, _decode(data, max_pixels, min_size)))
                except ItemError as exc:
                    _failed(paths[i], exc, failures)
                    found_failures[i] = exc.failure
                stats.seconds += time.perf_counter() - started
                if batched == CHUNK:
                    embed_batch()
                    batched = 0
            del read  # the bytes of this step's photos
            bar.update(min(READ_CHUNK, len(paths) - start))
        embed_batch()
    for i, digest in repeats:  # content read earlier in this run: its vector, or its failure
        earlier = stats.seen.get((version, digest))
        if digest in first_of:
            earlier = found_failures.get(first_of[digest], out[first_of[digest]])
        if isinstance(earlier, ItemFailure):
            found_failures[i] = earlier
        elif earlier is not None:
            out[i] = earlier
    for digest, i in first_of.items():
        stats.seen[version, digest] = found_failures.get(i, out[i])
    stats.images += len(paths)
    stats.unreadable += len(found_failures)
    if failures is not None:
        failures.update(found_failures)
    return out


def _failed(path: Path, exc: ItemError, failures: dict[int, ItemFailure] | None) -> None:
    """Without a ``failures`` to collect into, a photo that cannot be used stops the run."""
    if failures is None:
        raise ProtocolError(f"image {path}: {exc.reason}: {exc.detail}") from None


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
    embedders: Callable[[int, SceneQueries], Sequence[Embedder]] | None = None,
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
    cut-outs' and windows' keys name the light too: they are cut from the lit photo).
    ``embedders(i, parts)``: what embeds each picture of ``paths[i]`` (the photo, then
    ``parts.pictures``; :meth:`search.api.ProductSearch.picture_embedders`), each cached
    under its own model version; by default ``embedder`` embeds them all, which is what the
    search does for ``exact`` only (:func:`evaluate` passes the search's own choice)."""
    min_size = getattr(embedder, "decode_size", None)
    started = time.perf_counter()
    keys: dict[int, list[tuple[str, str]]] = {}
    pictures: dict[tuple[str, str], Any] = {}  # by (model version, key)
    models: dict[str, Embedder] = {}
    for i, path in enumerate(tqdm(paths, unit="img", desc="cut-outs and windows", disable=None)):
        data = _read(path)
        picture = _decode(data, max_pixels, min_size)
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
            by = embedders(i, parts) if embedders is not None else [embedder] * len(named)
            models.update((model.model_version, model) for model in by)
            keys[i] = [(model.model_version, key) for model, (key, _) in
                       zip(by, named, strict=True)]
            pictures.update(zip(keys[i], (picture for _, picture in named), strict=True))
    found: dict[tuple[str, str], NDArray[np.float32]] = {}
    for version, model in models.items():
        mine = [key for v, key in pictures if v == version]
        cached = cache.get_many(version, mine) if cache is not None else {}
        found.update(((version, key), vector) for key, vector in cached.items())
        todo = [key for key in mine if key not in cached]
        for start in range(0, len(todo), CHUNK):
            chunk = todo[start : start + CHUNK]
            vectors = np.asarray(model.embed([pictures[version, key] for key in chunk]),
                                 dtype=np.float32)
            found.update(((version, key), vector)
                         for key, vector in zip(chunk, vectors, strict=True))
            if cache is not None:
                cache.put_many(version, list(zip(chunk, vectors, strict=True)))
    stats.cutout_seconds += time.perf_counter() - started
    return {i: np.stack([found[key] for key in names]) for i, names in keys.items()}


def index_gallery(
    store: MilvusStore,
    spec: CollectionSpec,
    products: Sequence[GalleryProduct],
    vectors: NDArray[np.float32],
    model_version: str,
    skip: Set[int] = frozenset(),
) -> int:
    """Upsert one row per distinct gallery image (vectors in ``products``' image order, but
    those at the positions in ``skip``: unreadable); flush. The rows written: an image listed
    twice for one product is one row."""
    rows: dict[str, dict[str, Any]] = {}
    row = -1
    for product in products:
        for path in product.images:
            row += 1
            if row in skip:
                continue
            record = product.record(path, vectors[row].tolist(), model_version)
            rows[record.pk] = record.to_row()
    store.upsert(spec.name, list(rows.values()), op="index_gallery")
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
    capped = sum(1 for query in queries if len(query.relevant) > MAX_K)
    if capped:
        log.warning("eval: %d of %d queries have more than %d relevant products: their mAP@R "
                    "is computed over the first %d products the search returns (at most %d)",
                    capped, len(queries), MAX_K, MAX_K, MAX_K)
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
    rerank_depth: int = RERANK_DEPTH,
    strict: bool = False,
    similar_views: int = SIMILAR_VIEWS,
) -> EvalReport:
    """Index ``products`` into the (fresh) collections of ``spec``, then score ``queries``
    (scene photos also under catalog light and with their cut-outs and windows, unless
    turned off, as ``lookalike search`` would; with
    a ``verifier`` reading the gallery's photos, searches re-ranked by geometry as
    ``ProductSearch.by_images`` re-ranks them). A query with no relevant product, or with a
    photo that cannot be read, is skipped (warned of, and listed in the report); with
    ``strict`` an unreadable photo is a :class:`ProtocolError`. For ``similar`` the query
    photos are embedded as ``by_images`` embeds them for it: each photo itself in
    ``similar_views`` channel orders, its scene pictures in one
    (:meth:`ProductSearch.picture_embedders`); the gallery is indexed as always."""
    stats = EmbedStats()
    n_rows = index_products(products, embedder, store, spec, cache, max_pixels=max_pixels,
                            stats=stats, strict=strict)
    skipped: dict[int, SkippedQuery] = {}
    for n, query in enumerate(queries):
        if not query.relevant:
            log.warning("eval: %s: no relevant product in the gallery: not scored (a retrieval "
                        "query needs one)", query.where)
            skipped[n] = SkippedQuery(query.where, NO_RELEVANT, "no relevant product")
    asked = [(n, query) for n, query in enumerate(queries) if n not in skipped]
    query_paths = [p for _, q in asked for p in q.images]
    failures: dict[int, ItemFailure] = {}
    # Strong: the queries must see the gallery written just before.
    searcher = ProductSearch(store, spec, embedder, consistency="Strong", max_pixels=max_pixels,
                             verifier=verifier, rerank=verifier is not None,
                             similar_views=similar_views,
                             rerank_depth=rerank_depth,
                             rerank_budget_s=None)
    query_embedder = searcher.query_embedder(match)  # as by_images embeds them
    query_vectors = embed_files(query_paths, query_embedder, cache, max_pixels=max_pixels,
                                stats=stats, desc="embed queries", failures=failures)
    keep: list[int] = []
    position = 0
    for n, query in asked:
        rows = range(position, position + len(query.images))
        position += len(query.images)
        bad = [(query.images[r - rows.start], failures[r]) for r in rows if r in failures]
        if not bad:
            keep.extend(rows)
            continue
        path, failure = bad[0]
        detail = f"image {path}: {failure.reason}: {failure.detail}"
        if strict:
            raise ProtocolError(f"{query.where}: {detail}")
        log.warning("eval: %s: %s: the query is not scored", query.where, detail)
        skipped[n] = SkippedQuery(query.where, failure.reason.value, detail)
    scored = [query for n, query in asked if n not in skipped]
    if skipped and not scored:
        raise ProtocolError(f"no query can be scored: all {len(queries)} were skipped "
                            f"({skipped_summary(skipped.values())})")
    query_paths = [query_paths[r] for r in keep]
    query_vectors = query_vectors[keep]

    def embedders(i: int, parts: SceneQueries) -> list[Embedder]:
        return searcher.picture_embedders(parts, match)  # as by_images embeds them

    scene = (embed_scene_queries(query_paths, query_embedder, cache, max_pixels=max_pixels,
                                 stats=stats, cutouts=cutout_queries, windows=window_queries,
                                 light=light_queries, embedders=embedders)
             if cutout_queries or window_queries or light_queries else {})
    started = time.perf_counter()
    results = run_queries(searcher, scored, query_vectors, match, scene,
                          rerank_max_pixels=max_pixels if verifier is not None else None)
    return EvalReport(
        summary=summarise(results), model=embedder.model_version, n_gallery=len(products),
        n_gallery_images=n_rows, embed=stats, search_seconds=time.perf_counter() - started,
        results=results, match=match, skipped=[skipped[n] for n in sorted(skipped)],
    )


def index_products(
    products: Sequence[GalleryProduct], embedder: Embedder, store: MilvusStore,
    spec: CollectionSpec,
    cache: EmbeddingCache | None, *, max_pixels: int, stats: EmbedStats, strict: bool = False,
) -> int:
    """Embed the gallery (through the cache) into the fresh collections of ``spec``; rows.

    An image that cannot be read or decoded is left out, with a warning naming the product's
    line (and saying so where the product is then left out of the index: none of its images
    could be read); with ``strict`` it is a :class:`ProtocolError`."""
    if spec.dim != embedder.dim:
        raise ValueError(f"collection is {spec.dim}-d, the embedder {embedder.dim}-d")
    gallery_paths = [p for product in products for p in product.images]
    failures: dict[int, ItemFailure] = {}
    gallery_vectors = embed_files(gallery_paths, embedder, cache, max_pixels=max_pixels,
                                  stats=stats, desc="embed gallery", failures=failures)
    row = 0
    for product in products:
        rows = range(row, row + len(product.images))
        row += len(product.images)
        bad = [r for r in rows if r in failures]
        for r in bad:
            failure = failures[r]
            detail = f"image {gallery_paths[r]}: {failure.reason}: {failure.detail}"
            if strict:
                raise ProtocolError(f"{product.where}: {detail}")
            lost = len(bad) == len(rows)
            log.warning("eval: %s: %s: left out%s", product.where, detail,
                        f"; product {product.product_id!r} has no readable image and is not "
                        "indexed: queries naming it cannot find it" if lost and r == bad[-1]
                        else "")
        stats.left_out += bool(bad) and len(bad) == len(rows)
    if gallery_paths and len(failures) == len(gallery_paths):
        raise ProtocolError(f"no gallery image could be read ({len(failures)} tried; the "
                            "warnings above say why)")
    ensure_collections(store, spec)
    return index_gallery(store, spec, products, gallery_vectors, embedder.model_version,
                         set(failures))


def _load_to_verify(path: Path, max_pixels: int) -> Any:
    """A query photo decoded as ``ProductSearch.by_images`` decodes it to check geometry."""
    return _decode(_read(path), max_pixels, VERIFY_SIZE)


def _read(path: Path) -> bytes:
    """The bytes of an image the protocol names (an ItemError when it cannot be read)."""
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ItemError(Reason.UNREADABLE, f"cannot read: {exc.strerror or exc}") from None


def _decode(data: bytes, max_pixels: int, min_size: int | None) -> Any:
    """``data`` decoded as a query is (an ItemError with its reason when it cannot be)."""
    return decode_image(data, max_pixels, min_size=min_size)
