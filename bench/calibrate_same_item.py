"""Calibrate the same-item rule (search/verify.py) on a same-item protocol, outside Milvus.

For each query: the top ``--candidates`` listings by exact cosine (the default vector, as
``compare_prices`` retrieves them), then the evidence of every candidate (global cosine,
geometric inliers, colour agreement) with its label (a listing of the query's item or not).
Prints the evidence distributions of true and false candidates, the verification cost per
query (cold: gallery features computed; warm: cached), and precision / recall /
false-match rate (see evaluation/same_item.py) over a grid of rules, best first.

    PYTHONPATH=. python bench/calibrate_same_item.py var/protocols/same-item-dev \\
        [--queries queries.jsonl] [--candidates 20] [--rule 20,0.8,0.985]

Choose the rule on ``same-item-dev`` (and ``same-item-fmnist``), then check it once on
``same-item-heldout``: its edit recipes were never looked at while choosing.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from embedding.decode import load_image  # noqa: E402
from embedding.embedder import create_embedder  # noqa: E402
from evaluation.cache import EmbeddingCache  # noqa: E402
from evaluation.protocol import load_gallery, load_queries  # noqa: E402
from evaluation.run import EmbedStats, embed_files  # noqa: E402
from evaluation.same_item import SameItemCounts  # noqa: E402
from search.alignment import SHIFT_PERCENTILES  # noqa: E402
from search.features import photo_features  # noqa: E402
from search.scene import VERIFY_SIZE  # noqa: E402
from search.verify import Evidence, SameItemRule, SameItemVerifier  # noqa: E402

MAX_PIXELS = 40_000_000


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("protocol", type=Path)
    parser.add_argument("--queries", default="queries.jsonl")
    parser.add_argument("--candidates", type=int, default=20)
    parser.add_argument("--limit", type=int, help="the first N queries only")
    parser.add_argument("--rule", help="a rule to report: min_inliers,min_correlation,"
                        "max_colour_shift,min_colour,duplicate_similarity,shift_percentile")
    parser.add_argument("--cache", type=Path, default=REPO / "var/cache/embeddings.sqlite")
    args = parser.parse_args()
    gallery = load_gallery(args.protocol / "gallery.jsonl")
    queries = load_queries(args.protocol / args.queries, gallery)[: args.limit]
    embedder = create_embedder("lite0", "pad", 32, colour_weight=0.5)
    cache = EmbeddingCache(args.cache)
    stats = EmbedStats()
    g = embed_files([p.images[0] for p in gallery], embedder, cache, max_pixels=MAX_PIXELS,
                    stats=stats, desc="gallery")
    q = embed_files([x.image for x in queries], embedder, cache, max_pixels=MAX_PIXELS,
                    stats=stats, desc="queries")
    ids = [p.product_id for p in gallery]
    # Evidence with the keypoint-free alignment tried from cosine 0.85 on, so that the grid
    # can grade stricter keypoint-free routes too.
    verifier = SameItemVerifier(lambda ref: load_image(ref, MAX_PIXELS, min_size=VERIFY_SIZE),
                                SameItemRule(coarse_similarity=0.85))
    per_query: list[list[tuple[str, Evidence]]] = []
    cold: list[float] = []
    warm: list[float] = []
    for query, vector in zip(queries, q, strict=True):
        sims = g @ vector
        top = np.argsort(-sims)[: args.candidates]
        candidates = [(str(gallery[j].images[0]), float(sims[j])) for j in top]
        started = time.process_time()
        # Decoded as compare_prices decodes a query photo to verify it.
        features = photo_features(load_image(query.image, MAX_PIXELS, min_size=VERIFY_SIZE))
        evidence = verifier.verify(features, candidates)
        cold.append(time.process_time() - started)
        started = time.process_time()
        verifier.verify(features, candidates)
        warm.append(time.process_time() - started)
        per_query.append([(ids[j], ev) for j, ev in zip(top, evidence, strict=True)])
    records = [(ev.similarity, ev.inliers, ev.colour_agreement,
                ev.alignment.correlation if ev.alignment else -1.0,
                ev.alignment.colour_shift(90) if ev.alignment else -1.0, pid in query.relevant)
               for query, rows in zip(queries, per_query, strict=True) for pid, ev in rows]
    arr = np.array([r[:5] for r in records])
    label = np.array([r[5] for r in records])
    geometric = arr[:, 1] >= 10
    for name, mask in (("same item", label), ("other listing", ~label)):
        for col, what in enumerate(("similarity", "inliers", "colour")):
            pct = np.percentile(arr[mask, col], [1, 5, 50, 95, 99])
            print(f"{name:>13} {what:>10}: " + " ".join(f"{v:.3f}" for v in pct))
        for col, what in ((3, "correlation"), (4, "colour shift p90")):
            values = arr[mask & geometric, col]
            if len(values):
                pct = np.percentile(values, [1, 5, 50, 95, 99])
                print(f"{name:>13} {what:>12} (>= 10 inliers, n={len(values)}): "
                      + " ".join(f"{v:.3f}" for v in pct))
    print(f"verify {args.candidates} candidates, CPU ms per query (1 query feature + matching): "
          f"cold p50 {1000 * np.median(cold):.0f} p95 {1000 * np.percentile(cold, 95):.0f}; "
          f"warm (gallery cached) p50 {1000 * np.median(warm):.0f} "
          f"p95 {1000 * np.percentile(warm, 95):.0f}")
    grid = [SameItemRule(i, r, h, 0.8, d, pc) for i, r, h, d, pc in itertools.product(
        (10, 15, 20), (0.75, 0.8, 0.85, 0.9), (6.0, 8.0, 10.0, 12.0, 16.0, 20.0, 25.0),
        (0.99, 1.01), SHIFT_PERCENTILES)]
    # The keypoint-free route (textureless products) around the default keypoint rule;
    # coarse_similarity 1.01 turns it off.
    grid += [SameItemRule(coarse_similarity=s, coarse_correlation=r, coarse_colour_shift=h)
             for s, r, h in itertools.product((0.85, 0.9, 0.93, 0.95, 1.01),
                                              (0.9, 0.95, 0.97), (4.0, 6.0, 8.0))]
    # How much of the product the inliers must span, and how far brightness may move.
    grid += [SameItemRule(min_inlier_cover=c, max_brightness_ratio=b)
             for c, b in itertools.product((0.0, 0.05, 0.1), (100.0, 1.6, 1.4, 1.25))]
    # The largest patch of another colour a match may show (1.0: the check off).
    grid += [SameItemRule(max_recoloured=m) for m in (0.006, 0.008, 0.01, 0.015, 0.02, 1.0)]
    if args.rule:
        i, r, h, c, d, pc = args.rule.split(",")
        grid.insert(0, SameItemRule(int(i), float(r), float(h), float(c), float(d), int(pc)))
    scored = []
    for rule in grid:
        counts = SameItemCounts()
        for n, query in enumerate(queries):
            found = {pid for pid, ev in per_query[n] if rule.decide(
                ev.similarity, ev.inliers, ev.colour_agreement, ev.alignment)[0]}
            counts.add(found, set(query.relevant))
        scored.append((rule, counts.summary()))
    if args.rule:
        print("chosen:", _fmt(*scored[0]))
    # A rule that lists nothing has no precision (None): it ranks as precision 0.
    scored.sort(key=lambda rs: (-((rs[1]["precision"] or 0.0) >= 0.98), -rs[1]["recall"],
                                -(rs[1]["precision"] or 0.0)))
    for rule, summary in scored[:12]:
        print(_fmt(rule, summary))
    return 0


def _fmt(rule: SameItemRule, s: dict[str, float | None]) -> str:
    return (f"inliers>={rule.min_inliers:>2} corr>={rule.min_correlation:.2f} "
            f"shift@p{rule.shift_percentile}<={rule.max_colour_shift:>4.1f} "
            f"colour>={rule.min_colour:.2f} "
            f"dup>={rule.duplicate_similarity:.3f} coarse>={rule.coarse_similarity:.2f},"
            f"{rule.coarse_correlation:.2f},{rule.coarse_colour_shift:.0f} "
            f"cover>={rule.min_inlier_cover:.2f} bright<={rule.max_brightness_ratio:.2f} "
            f"recoloured<={rule.max_recoloured:.3f}: "
            f"precision {'n/a' if s['precision'] is None else format(s['precision'], '.3f')} "
            f"recall {s['recall']:.3f} false_match_rate {s['false_match_rate']:.3f} "
            f"all_found_rate {s['all_found_rate']:.3f}")


if __name__ == "__main__":
    sys.exit(main())
