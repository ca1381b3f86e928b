"""Pad-to-square vs centre-crop on the Luma photos: which default retrieves better?

Gallery: every variant's main image(s). Queries: every other view (back, close-up), whose
relevant product is its own variant. Exact cosine search over products (best image per
product), R@1 / R@10. ``lookalike eval`` (issue 3) will make this a product command.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from embedding.decode import load_image  # noqa: E402
from embedding.embedder import EfficientNetLiteEmbedder, create_embedder  # noqa: E402

LUMA = REPO.parent / "shared" / "data" / "luma"


def _embed(embedder: EfficientNetLiteEmbedder, items: list[tuple[int, Path]]) -> np.ndarray:
    size = embedder.decode_size
    return embedder.embed([load_image(p, 40_000_000, min_size=size) for _, p in items])


def main() -> int:
    if not (LUMA / "catalog.jsonl").exists():
        print("square_mode: ../shared/data/luma not found; skipped")
        return 0
    rows = [json.loads(x) for x in (LUMA / "catalog.jsonl").read_text().splitlines()]
    gallery = [(i, LUMA / im["path"]) for i, r in enumerate(rows) for im in r["images"]
               if im["view"] == "main"]
    queries = [(i, LUMA / im["path"]) for i, r in enumerate(rows) for im in r["images"]
               if im["view"] != "main"]
    owners = np.array([i for i, _ in gallery])
    for mode in ("pad", "crop"):
        embedder = create_embedder("lite0", mode, 32, 0.0)
        assert isinstance(embedder, EfficientNetLiteEmbedder)
        g, q = _embed(embedder, gallery), _embed(embedder, queries)
        sims = q @ g.T
        per_product = np.full((len(queries), len(rows)), -2.0, dtype=np.float32)
        for col, owner in enumerate(owners):
            per_product[:, owner] = np.maximum(per_product[:, owner], sims[:, col])
        ranks = np.argsort(-per_product, axis=1)
        truth = np.array([i for i, _ in queries])
        r1 = float(np.mean(ranks[:, 0] == truth))
        r10 = float(np.mean([t in ranks[j, :10] for j, t in enumerate(truth)]))
        print(f"{mode:>4}: R@1 {r1:.3f}  R@10 {r10:.3f}  ({len(queries)} queries, "
              f"{len(rows)} products, {len(gallery)} gallery images)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
