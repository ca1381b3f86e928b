"""Same-item scores: does price comparison list exactly the listings of the query's item?

Micro-averaged over listings (every returned and every relevant listing counts once):

* ``precision``: returned listings that show the query's item / all returned listings;
* ``recall``: relevant listings returned / all relevant listings;
* ``false_match_rate``: share of queries with at least one wrong listing (what a shopper
  notices: one other product in a price list is enough to distrust it);
* ``all_found_rate``: share of queries whose every relevant listing was returned.

A query that returns nothing has precision undefined for itself, and adds nothing to the
micro-average's denominator; it loses recall. When no query lists anything, precision is
undefined overall: None (``null`` in JSON, ``n/a`` printed).

A query with no relevant listing (``"relevant": []``) is a negative query: the right answer
lists nothing. It counts in ``n_queries`` and ``false_match_rate`` (any listing is a false
match), adds its listings to precision's denominator and nothing to recall's, and counts as
all found when nothing is listed. With only negative queries recall is undefined (None).
A query whose photo cannot be read is skipped, warned of and listed in the report.

The query photos are counted in the report's image counts as retrieval counts its queries,
by content: ``repeated`` when a gallery photo or an earlier query had the same bytes, else
``embedded`` (price comparison embeds its query photo itself; the cache is not asked).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence, Set
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from embedding.embedder import Embedder
from evaluation.cache import EmbeddingCache, content_hash
from evaluation.protocol import GalleryProduct, ProtocolError, Query
from evaluation.run import EmbedStats, SkippedQuery, index_products
from ingest.fetch import ImageFetcher
from lookalike.settings import SearchSettings
from schema.collection import CollectionSpec
from schema.errors import ItemError, Reason
from search.api import CompareTrace, PriceMatch, ProductSearch
from search.verify import SameItemRule, SameItemVerifier
from store import MilvusStore

log = logging.getLogger("lookalike")

_SEARCH_DEFAULTS = SearchSettings()
"""Price comparison's defaults, as ``lookalike eval`` configures them (defined there only)."""


@dataclass
class SameItemCounts:
    returned: int = 0
    correct: int = 0
    relevant: int = 0
    queries: int = 0
    with_false_match: int = 0
    all_found: int = 0

    def add(self, found: Set[str], relevant: Set[str]) -> None:
        """One query's listings; ``relevant`` empty for a negative query (nothing is right)."""
        hits = len(found & relevant)
        self.returned += len(found)
        self.correct += hits
        self.relevant += len(relevant)
        self.queries += 1
        self.with_false_match += bool(found - relevant)
        self.all_found += hits == len(relevant) if relevant else not found

    def summary(self) -> dict[str, float | None]:
        """The scores; ``precision`` is None when nothing was listed at all, ``recall`` when
        no query had a relevant listing (undefined)."""
        if not self.queries:
            raise ValueError("no queries to summarise")
        return {
            "precision": self.correct / self.returned if self.returned else None,
            "recall": self.correct / self.relevant if self.relevant else None,
            "false_match_rate": self.with_false_match / self.queries,
            "all_found_rate": self.all_found / self.queries,
        }


@dataclass
class SameItemReport:
    counts: SameItemCounts
    model: str
    n_gallery: int
    n_gallery_images: int
    embed: EmbedStats = field(default_factory=EmbedStats)
    search_seconds: float = 0.0
    per_query_ms: list[float] = field(default_factory=list)
    """Wall time of each query's compare_prices call (embed + search + verification)."""
    turned_queries: int = 0
    """Query photos taken as saved sideways or upside down, and so also searched upright."""
    details: list[dict[str, Any]] = field(default_factory=list)
    """Each query's outcome (:func:`query_detail`; ``lookalike eval --details``), in the
    order of the queries file."""
    skipped: list[SkippedQuery] = field(default_factory=list)
    """The queries not scored (their photo could not be read), in the file's order."""

    def to_json(self) -> dict[str, Any]:
        times = sorted(self.per_query_ms)
        return {
            "task": "same-item",
            **{key: None if value is None else round(value, 4)
               for key, value in self.counts.summary().items()},
            "n_queries": self.counts.queries,
            "n_queries_skipped": len(self.skipped),
            "skipped": [query.to_json() for query in self.skipped],
            "n_gallery": self.n_gallery,
            "n_gallery_images": self.n_gallery_images,
            "returned": self.counts.returned,
            "relevant": self.counts.relevant,
            "model": self.model,
            "query_ms_p50": round(times[len(times) // 2], 1) if times else None,
            "query_ms_p95": round(times[int(len(times) * 0.95)], 1) if times else None,
            "embedded_images": self.embed.embedded,
            "cached_images": self.embed.cached,
            "repeated_images": self.embed.repeated,
            "unreadable_images": self.embed.unreadable,
            "products_left_out": self.embed.left_out,
            "search_seconds": round(self.search_seconds, 2),
            "turned_queries": self.turned_queries,
        }


def query_detail(query: Query, matches: Sequence[PriceMatch], ms: float,
                 trace: CompareTrace | None = None, threshold: float | None = None
                 ) -> dict[str, Any]:
    """One query's outcome as one JSON object: its photo, relevant listings, what price
    comparison listed (each with its evidence and whether it is relevant), what it missed
    and what it listed wrongly, and how long the call took. With the call's ``trace`` (and
    its ``threshold``), ``missed_evidence`` says why each missed listing is missing
    (:func:`missed_evidence`)."""
    relevant = set(query.relevant)
    found = {m.product_id for m in matches}
    listed = [{"product_id": m.product_id, "relevant": m.product_id in relevant,
               "price": m.price, "currency": m.currency, "seller_id": m.seller_id,
               "similarity": round(m.similarity, 4), "inliers": m.inliers,
               "colour_shift": None if m.colour_shift is None else round(m.colour_shift, 2),
               "via": m.via, "reason": m.reason} for m in matches]
    missed = sorted(relevant - found)
    out: dict[str, Any] = {"image": str(query.image), "relevant": sorted(relevant),
                           "listed": listed, "missed": missed,
                           "wrong": sorted(found - relevant), "ms": round(ms, 1)}
    if trace is not None:
        out["missed_evidence"] = [missed_evidence(pid, trace, threshold) for pid in missed]
    return out


def missed_evidence(product_id: str, trace: CompareTrace,
                    threshold: float | None) -> dict[str, Any]:
    """Why price comparison did not list ``product_id``, from what the call weighed: its
    ``rank`` among the vector search's candidates (1 = most similar; None when it was not
    among them) and ``similarity`` (its cosine), whether it was ``verified``, and then the
    verifier's evidence (``inliers``, ``colour_shift``, ``via``) and ``reason`` in words."""
    rank = next((n for n, (pid, _) in enumerate(trace.candidates, 1) if pid == product_id),
                None)
    similarity = trace.candidates[rank - 1][1] if rank is not None else None
    judged = [e for pid, e in trace.verified if pid == product_id]
    out: dict[str, Any] = {"product_id": product_id, "rank": rank,
                           "similarity": None if similarity is None else round(similarity, 4),
                           "verified": bool(judged)}
    if judged:
        evidence = max(judged, key=lambda e: (e.inliers, e.similarity))
        shift = evidence.colour_shift
        out |= {"inliers": evidence.inliers,
                "colour_shift": None if shift is None else round(shift, 2),
                "via": evidence.via, "reason": f"refused: {evidence.reason}"}
    elif rank is None:
        out["reason"] = (f"not among the {len(trace.candidates)} products most similar to the "
                         "query")
    elif threshold is not None and similarity is not None and similarity < threshold:
        out["reason"] = f"similarity {similarity:.4f} below the threshold {threshold}"
    else:
        out["reason"] = "a candidate, not verified: below those the call verified"
    return out


def _count_query_photo(path: Path, stats: EmbedStats, seen: set[str], version: str) -> None:
    """Count a scored query's photo by its content, as retrieval counts its queries:
    ``repeated`` when a gallery photo (``stats.seen``, embedded by model ``version``, as
    ``compare_prices`` embeds a query) or an earlier query (``seen``) had the same bytes, else
    ``embedded`` (``compare_prices`` embedded it, in a time of its own: ``untimed``)."""
    stats.images += 1
    try:
        digest = content_hash(path.read_bytes())
    except OSError:  # read a moment ago; gone since: counted as the call found it
        digest = f"unread:{path}"
    if (version, digest) in stats.seen or digest in seen:
        stats.repeated += 1
        return
    seen.add(digest)
    stats.embedded += 1
    stats.untimed += 1


def gallery_roots(products: Sequence[GalleryProduct]) -> list[Path]:
    """The folders of the gallery's photos: what its verifier must be allowed to read."""
    return sorted({p.parent for product in products for p in product.images})


def gallery_verifier(products: Sequence[GalleryProduct], max_pixels: int,
                     fetcher: ImageFetcher | None = None,
                     rule: SameItemRule | None = None) -> SameItemVerifier:
    """A verifier reading the gallery's photos through the fetch path a search process uses
    for stored listings: ``fetcher`` (``lookalike eval`` passes the configured one, with the
    gallery's folders among its roots), or one that may read exactly those folders; it
    decides by ``rule`` (the default rule without one)."""
    return SameItemVerifier.for_fetcher(fetcher or ImageFetcher(gallery_roots(products)),
                                        max_pixels, rule)


def evaluate_same_item(
    products: Sequence[GalleryProduct],
    queries: Sequence[Query],
    embedder: Embedder,
    store: MilvusStore,
    spec: CollectionSpec,
    cache: EmbeddingCache | None,
    *,
    max_pixels: int,
    k: int = _SEARCH_DEFAULTS.compare_k,
    threshold: float = _SEARCH_DEFAULTS.compare_threshold,
    fetcher: ImageFetcher | None = None,
    turned_queries: bool = _SEARCH_DEFAULTS.turned_queries,
    family_depth: int = _SEARCH_DEFAULTS.family_depth,
    silhouette_route: bool = _SEARCH_DEFAULTS.silhouette_route,
    strict: bool = False,
    explain_misses: bool = False,
) -> SameItemReport:
    """Index the listings, then run each query photo through ``compare_prices`` (its first
    image; several views are not a price-comparison query) and count what it lists.
    ``k`` and ``threshold`` are ``compare_prices``', ``turned_queries`` and ``family_depth``
    the searcher's, ``silhouette_route`` its verifier's rule's (``lookalike eval`` passes the
    configured ``search.compare_k``, ``search.compare_threshold``, ``search.turned_queries``,
    ``search.family_depth`` and ``search.silhouette_route``). A query whose photo cannot be
    read is skipped with a warning (with ``strict``, a :class:`ProtocolError`). With
    ``explain_misses`` (``lookalike eval --details``) each query's detail also says why each
    missed listing is missing (:func:`missed_evidence`): the calls record what they weighed,
    which changes nothing they return."""
    stats = EmbedStats()
    n_rows = index_products(products, embedder, store, spec, cache, max_pixels=max_pixels,
                            stats=stats, strict=strict)
    rule = SameItemRule(silhouette_route=silhouette_route)
    # Strong: the queries must see the gallery written just before.
    searcher = ProductSearch(store, spec, embedder, consistency="Strong", max_pixels=max_pixels,
                             verifier=gallery_verifier(products, max_pixels, fetcher, rule),
                             turned_queries=turned_queries, family_depth=family_depth)
    counts = SameItemCounts()
    per_query: list[float] = []
    details: list[dict[str, Any]] = []
    skipped: list[SkippedQuery] = []
    query_photos: set[str] = set()  # the query photos' contents, as counted
    started = time.perf_counter()
    with tqdm(total=len(queries), unit="query", desc="compare", disable=None) as bar:
        for query in queries:
            t0 = time.perf_counter()
            trace = CompareTrace() if explain_misses else None
            try:
                matches = searcher.compare_prices(image=query.image, k=k, threshold=threshold,
                                                  trace=trace)
            except (ItemError, OSError) as exc:
                failure = (exc.failure if isinstance(exc, ItemError) else
                           ItemError(Reason.UNREADABLE, exc.strerror or str(exc)).failure)
                detail = f"image {query.image}: {failure.reason}: {failure.detail}"
                if strict:
                    raise ProtocolError(f"{query.where}: {detail}") from None
                log.warning("eval: %s: %s: the query is not scored", query.where, detail)
                skipped.append(SkippedQuery(query.where, failure.reason.value, detail))
                stats.unreadable += 1
                stats.images += 1
                bar.update(1)
                continue
            per_query.append(1000 * (time.perf_counter() - t0))
            _count_query_photo(query.image, stats, query_photos, embedder.model_version)
            counts.add({m.product_id for m in matches}, set(query.relevant))
            details.append(query_detail(query, matches, per_query[-1], trace, threshold))
            bar.update(1)
    if not counts.queries:
        raise ProtocolError(f"no query can be scored: all {len(queries)} photos are unreadable")
    return SameItemReport(counts, embedder.model_version, len(products), n_rows, stats,
                          time.perf_counter() - started, per_query, searcher.turned_photos,
                          details, skipped)
