"""``lookalike eval``: index a gallery into a fresh collection and score the queries.

``--task retrieval`` (default) scores the ranking (Recall@k, mAP@R) with ``--match``;
``--task same-item`` runs each query photo through price comparison and scores the listings
it returns (precision, recall, false-match rate; evaluation/same_item.py). ``--details FILE``
also writes each query's outcome, one JSON object per line. A photo that cannot be read or
decoded is skipped with a warning naming its line (``--strict``: exit 2 instead)."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sqlite3
import stat
import tempfile
from pathlib import Path
from typing import Any

from evaluation.cache import EmbeddingCache, content_hash
from evaluation.protocol import (
    GalleryProduct,
    ProtocolError,
    Query,
    load_gallery,
    load_queries,
)
from evaluation.run import EmbedStats, EvalReport, SkippedQuery, evaluate, skipped_summary
from evaluation.same_item import (
    SameItemReport,
    evaluate_same_item,
    gallery_roots,
    gallery_verifier,
)
from lookalike.app import (
    build_embedder,
    build_fetcher,
    check_photo_bytes,
    open_store,
    scratch_milvus,
)
from lookalike.errors import UserError
from lookalike.settings import MAX_K, Settings
from schema.collection import CollectionSpec
from search.intent import Match, check_match

log = logging.getLogger("lookalike")


def run_eval(settings: Settings, args: argparse.Namespace) -> int:
    try:
        products = load_gallery(args.gallery)
        queries = load_queries(args.queries, products)
    except ProtocolError as exc:
        raise UserError(str(exc)) from None
    if args.task == "same-item" and args.match is not None:
        raise UserError(f"--match {args.match} applies to --task retrieval: --task same-item "
                        "lists the query's listings by their evidence, whatever the intent")
    match = check_match(args.match or "exact")
    photos = [*(p for product in products for p in product.images),
              *(p for query in queries for p in query.images)]
    for photo in photos:
        check_photo_bytes(photo, settings.images.max_bytes, f"image {photo}")
    _warn_of_easy_figures(products, queries, args)
    details: Path | None = args.details
    if details is not None:  # a path that cannot be written fails now, not after the work
        _check_details(details, [args.gallery, args.queries, *photos,
                                 *([] if args.no_cache else [args.cache])])
    cache = None if args.no_cache else _open_cache(args.cache)  # so does a bad --cache
    try:
        report = _evaluate(settings, args, match, products, queries, cache)
    finally:
        if cache is not None:
            cache.close()
    if details is not None:
        _write_details(details, report.details)
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    elif isinstance(report, SameItemReport):
        print_same_item(report)
    else:
        print_report(report, match)
    return 0


def _open_cache(path: Path) -> EmbeddingCache:
    try:
        return EmbeddingCache(path)
    except (OSError, sqlite3.Error) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise UserError(f"cannot use --cache {path}: {reason}") from None


def _evaluate(settings: Settings, args: argparse.Namespace, match: Match,
              products: list[GalleryProduct],
              queries: list[Query], cache: EmbeddingCache | None
              ) -> EvalReport | SameItemReport:
    """The evaluation in a scratch collection, dropped afterwards."""
    with scratch_milvus(settings, args.milvus_uri) as scratch:
        store = open_store(scratch, create=True)  # an unreachable server fails before the model
        embedder = build_embedder(settings)
        spec = CollectionSpec(name=scratch.milvus.collection, dim=embedder.dim)
        report: EvalReport | SameItemReport
        try:
            # The configured fetch policy, allowed to read the gallery's folders too.
            images = settings.images.model_copy(update={"roots": [
                *settings.images.roots, *gallery_roots(products)]})
            if args.task == "same-item":
                report = evaluate_same_item(products, queries, embedder, store, spec, cache,
                                            max_pixels=settings.images.max_pixels,
                                            k=settings.search.compare_k,
                                            threshold=settings.search.compare_threshold,
                                            fetcher=build_fetcher(images),
                                            turned_queries=settings.search.turned_queries,
                                            family_depth=settings.search.family_depth,
                                            silhouette_route=settings.search.silhouette_route,
                                            strict=args.strict,
                                            explain_misses=args.details is not None)
            else:
                report = evaluate(products, queries, embedder, store, spec, cache,
                                  max_pixels=settings.images.max_pixels, match=match,
                                  cutout_queries=settings.search.cutout_queries,
                                  window_queries=settings.search.window_queries,
                                  light_queries=settings.search.light_queries,
                                  verifier=(gallery_verifier(products,
                                                             settings.images.max_pixels,
                                                             build_fetcher(images))
                                            if settings.search.geometric_rerank else None),
                                  rerank_depth=settings.search.rerank_depth,
                                  strict=args.strict,
                                  similar_views=settings.search.similar_views)
        except ProtocolError as exc:
            raise UserError(str(exc)) from None
        finally:
            try:
                store.drop_collections(spec)
            except Exception as exc:  # never hide the evaluation's own error
                log.warning("could not drop %s: %s", spec.name, exc)
            store.close()
    return report


def _warn_of_easy_figures(products: list[Any], queries: list[Any],
                          args: argparse.Namespace) -> None:
    """Say where a figure is no test (a warning: the run goes on): a query photo that is also
    a gallery photo (the same bytes, under any name) finds its own listing; with 10 products
    or fewer R@10 is 1 (with 5 or fewer, R@5 too; with one, every figure); and a query for
    which every gallery product is relevant scores 1 on every figure."""
    same_item = getattr(args, "task", "retrieval") == "same-item"
    leaks = _photos_of_the_gallery(products, queries)
    if leaks:
        log.warning("eval: %d of %d queries search with a photo of the gallery itself: they "
                    "find it (%s), not another photo of the item", leaks, len(queries),
                    "an easy match" if same_item else "an easy R@1")
    several = sum(1 for query in queries if len(query.images) > 1)
    if same_item and several:
        log.warning("eval: %d of %d queries have several photos: price comparison takes one "
                    "photo, so each is run with its first", several, len(queries))
    if same_item:
        return
    n = len(products)
    if n == 1:
        log.warning("eval: the gallery has 1 product: every search returns it first, so R@1, "
                    "R@5, R@10 and mAP@R are 1.0 by construction")
        return
    if n <= 10:
        figures = "R@5 and R@10 count" if n <= 5 else "R@10 counts"
        log.warning("eval: the gallery has %d products: %s every one of them and %s 1.0 by "
                    "construction", n, figures, "are" if n <= 5 else "is")
    everything = {product.product_id for product in products}
    every = sum(1 for query in queries if query.relevant and set(query.relevant) >= everything)
    if every and n <= MAX_K:  # over MAX_K, mAP@R is capped (run_queries says so)
        log.warning("eval: %d of %d queries count every gallery product relevant: every "
                    "figure is 1.0 by construction for them", every, len(queries))


def _photos_of_the_gallery(products: list[Any], queries: list[Any]) -> int:
    """Queries with a photo whose bytes are a gallery photo's, under any name or path. Only
    the gallery photos of a query photo's size are read (the same bytes are the same size)."""
    sizes = {path: _size(path) for query in queries for path in query.images}
    candidates = {path for product in products for path in product.images
                  if _size(path) in set(sizes.values()) - {None}}
    gallery = {_content(path) for path in candidates} - {None}
    return sum(1 for query in queries
               if any(_content(path) in gallery for path in query.images
                      if sizes[path] is not None))


def _size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except OSError:
        return None


def _content(path: Path) -> str | None:
    """A photo's content hash, as the embedding cache keys it (None when it cannot be read:
    the evaluation skips it and says why)."""
    try:
        return content_hash(path.read_bytes())
    except OSError:
        return None


def _check_details(path: Path, inputs: list[Path]) -> None:
    """Refuse a ``--details`` path that is one of the evaluation's inputs (the gallery, the
    queries, a photo, the embedding cache) or that cannot be written, without touching it: an
    existing file is replaced only once the run has succeeded (:func:`_write_details`)."""
    try:
        target = path.resolve()
        if target in {p.resolve() for p in inputs}:
            raise UserError(f"cannot write --details {path}: it is one of the evaluation's "
                            "inputs (the gallery, the queries, a photo or the --cache)")
        if target.exists() and not target.is_file():
            raise UserError(f"cannot write --details {path}: not a regular file")
        folder = target.parent
        if not folder.is_dir():
            raise UserError(f"cannot write --details {path}: no such folder {folder}")
        if not os.access(folder, os.W_OK | os.X_OK) or (
                target.exists() and not os.access(target, os.W_OK)):
            raise UserError(f"cannot write --details {path}: permission denied")
    except OSError as exc:
        raise UserError(f"cannot write --details {path}: {exc.strerror or exc}") from None


def _write_details(path: Path, lines: list[dict[str, Any]]) -> None:
    """``--details``: one JSON object per query, written to a temporary file beside ``path``
    and then renamed over it, so that ``path`` never holds a partial file. It gets the mode
    of the file it replaces, else what the umask allows (the temporary file's is 0600)."""
    target = path.resolve()
    tmp: str | None = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        os.fchmod(fd, _new_file_mode(target))
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.writelines(json.dumps(line) + "\n" for line in lines)
        os.replace(tmp, target)
        tmp = None
    except OSError as exc:
        raise UserError(f"cannot write --details {path}: {exc.strerror or exc}") from None
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def _new_file_mode(target: Path) -> int:
    """The permissions of ``target`` if it exists, else of a new file under the umask."""
    try:
        return stat.S_IMODE(target.stat().st_mode)
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def _print_skipped(skipped: list[SkippedQuery]) -> None:
    """One line: how many queries were not scored, and why (each was warned of by line)."""
    if skipped:
        print(f"{len(skipped)} queries skipped, not scored ({skipped_summary(skipped)}; the "
              "warnings name their lines)")


def _images_line(e: EmbedStats) -> str:
    """Distinct photos embedded and from the cache, photos repeated in this run, unreadable
    (:class:`~evaluation.run.EmbedStats`)."""
    speed = f", {e.images_per_s:.1f} images/s" if e.images_per_s else ""
    repeated = f", {e.repeated} repeated" if e.repeated else ""
    unreadable = f", {e.unreadable} unreadable" if e.unreadable else ""
    left_out = f" ({e.left_out} products left out of the index)" if e.left_out else ""
    return (f"embedded {e.embedded} images{speed}, {e.cached} from cache{repeated}"
            f"{unreadable}{left_out}")


def print_same_item(report: SameItemReport) -> None:
    out = report.to_json()
    print(f"model {report.model}")
    print(f"gallery {report.n_gallery} listings ({report.n_gallery_images} image rows), "
          f"queries {out['n_queries']}; compare_prices per query p50 {out['query_ms_p50']} ms, "
          f"p95 {out['query_ms_p95']} ms; {_images_line(report.embed)}")
    _print_skipped(report.skipped)
    if out["turned_queries"]:
        print(f"{out['turned_queries']} query photos looked turned and were also searched "
              f"upright (search.turned_queries)")
    precision = "n/a" if out["precision"] is None else f"{out['precision']:.3f}"
    recall = "n/a" if out["recall"] is None else f"{out['recall']:.3f}"
    print(f"precision {precision}  recall {recall}  "
          f"false_match_rate {out['false_match_rate']:.3f}  "
          f"all_found_rate {out['all_found_rate']:.3f}  "
          f"({out['returned']} listed, {out['relevant']} relevant)")


def print_report(report: EvalReport, match: str = "exact") -> None:
    s = report.summary
    e = report.embed
    print(f"model {report.model}, match {match}")
    print(f"gallery {report.n_gallery} products ({report.n_gallery_images} image rows), "
          f"queries {s.n_queries}; {_images_line(e)}; "
          f"{e.cutouts} query photos also searched cut out, {e.windows} with their windows, "
          f"{e.lit} under catalog light ({e.cutout_seconds:.1f} s)")
    _print_skipped(report.skipped)
    width = max([36, *(len(category) for category in s.per_category)])
    header = f"{'':<{width}} {'R@1':>6} {'R@5':>6} {'R@10':>6} {'mAP@R':>6} {'queries':>8}"
    print(header)

    def line(name: str, m: dict[str, float], n: int) -> None:
        print(f"{name:<{width}} {m['R@1']:>6.3f} {m['R@5']:>6.3f} {m['R@10']:>6.3f} "
              f"{m['mAP@R']:>6.3f} {n:>8}")

    line("overall", s.overall, s.n_queries)
    for category, metrics in s.per_category.items():
        line(category, metrics, s.category_counts[category])
