"""What a ``similar`` image search costs to embed, beside ``exact`` (docs/matching.md,
"Channel orders on scene pictures").

Times :meth:`search.api.ProductSearch.query_vectors` (decode, scene pictures, the model) of
one scene photo and of a 16-photo upload of scene photos (the first query photos of a
protocol, by default luma-colours-snapshots), for ``exact``, for ``similar`` as the product
embeds it (the photo itself in channel orders, its scene pictures in one:
:meth:`search.api.ProductSearch.picture_embedders`) and for ``similar`` with every picture
in channel orders (as before): process CPU time (all threads) and wall time, median of
``--runs`` after one untimed warm-up.

Usage: ``python bench/similar_cost.py [--queries var/protocols/luma-colours-snapshots/queries.jsonl]
[--runs 5]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import search.api as search_api  # noqa: E402
from embedding.embedder import Embedder  # noqa: E402
from lookalike.app import build_embedder  # noqa: E402
from lookalike.settings import Settings  # noqa: E402
from schema.collection import CollectionSpec  # noqa: E402
from search.intent import Match  # noqa: E402
from search.scene import SceneQueries  # noqa: E402
from store import MilvusStore, ensure_collections  # noqa: E402

Rule = Callable[[search_api.ProductSearch, SceneQueries, Match], list[Embedder]]


def _every_picture(self: search_api.ProductSearch, parts: SceneQueries, match: Match
                   ) -> list[Embedder]:
    """The former rule: every picture of a query photo by the intent's embedder."""
    return [self.query_embedder(match)] * (1 + len(parts.pictures))


def _timed(call: Callable[[], object], runs: int) -> tuple[float, float]:
    """(median CPU s, median wall s) of ``runs`` calls after one untimed one."""
    call()
    cpu, wall = [], []
    for _ in range(runs):
        c, w = time.process_time(), time.perf_counter()
        call()
        cpu.append(time.process_time() - c)
        wall.append(time.perf_counter() - w)
    return statistics.median(cpu), statistics.median(wall)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    parser.add_argument("--queries", type=Path,
                        default=Path("var/protocols/luma-colours-snapshots/queries.jsonl"))
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args(argv)
    rows = [json.loads(line) for line in args.queries.read_text(encoding="utf-8").splitlines()]
    photos = [args.queries.parent / row["image"] for row in rows[:16]]
    embedder = build_embedder(Settings())
    with tempfile.TemporaryDirectory() as scratch:
        store = MilvusStore.open(str(Path(scratch) / "cost.db"))
        try:
            spec = CollectionSpec(name="cost", dim=embedder.dim)
            ensure_collections(store, spec)
            search = search_api.ProductSearch(store, spec, embedder, consistency="Strong",
                                              max_pixels=Settings().images.max_pixels)
            product = search_api.ProductSearch.picture_embedders
            intents: tuple[tuple[str, Match, Rule], ...] = (
                ("exact", "exact", product),
                ("similar, every picture in orders (before)", "similar", _every_picture),
                ("similar (now)", "similar", product))
            for label, match, rule in intents:
                search_api.ProductSearch.picture_embedders = rule  # type: ignore[method-assign,assignment]
                for n in (1, 16):
                    pictures = len(search.query_vectors(photos[:n], match="exact"))
                    cpu, wall = _timed(partial(search.query_vectors, photos[:n], match),
                                       args.runs)
                    print(f"{label}: {n} photo(s), {pictures} pictures: CPU {cpu:.2f} s, "
                          f"wall {wall:.2f} s", flush=True)
            search_api.ProductSearch.picture_embedders = product  # type: ignore[method-assign]
        finally:
            store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
