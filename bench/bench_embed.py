"""Embedding throughput on real catalog photos, per batch size.

Run from the repository root::

    PYTHONPATH=. python bench/bench_embed.py [--variant lite0] [--images 256] [--colour-weight 0.5]

"model" is the compiled predict step alone on preprocessed batches (what batch size tunes),
best of ``--rounds`` passes; "end-to-end" adds decoding, preprocessing and (with a colour
weight above 0) the colour descriptor, on the same thread. "colour" is the colour descriptor
alone (embedding/colour.py), in images per second of one core.
Each batch size gets a warm-up call first, so tracing/compilation is not counted.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from embedding.colour import colour_descriptors
from embedding.decode import decode_image
from embedding.embedder import EfficientNetLiteEmbedder
from embedding.preprocess import SquareMode, preprocess_batch
from embedding.variants import Variant
from lookalike.settings import ModelSettings

ROOT = Path(__file__).resolve().parents[1]
IMAGES = ROOT.parent / "shared" / "data" / "luma" / "images"
MAX_PIXELS = 40_000_000


def _args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variant", default="lite0", choices=[v.value for v in Variant])
    p.add_argument("--square", default="pad", choices=[m.value for m in SquareMode])
    p.add_argument("--images", type=int, default=256, help="how many photos to use")
    p.add_argument("--batch-sizes", default="16,32,64")
    p.add_argument("--colour-weight", type=float, default=ModelSettings().colour_weight,
                   help="0 = CNN features only (default: the setting's)")
    p.add_argument("--rounds", type=int, default=3, help="model-only: best of this many passes")
    p.add_argument("--dir", type=Path, default=IMAGES)
    return p.parse_args()


def _load(folder: Path, limit: int) -> list[bytes]:
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in {".jpg", ".jpeg", ".png"})
    return [p.read_bytes() for p in files[:limit]]


def _rate(n: int, fn: Callable[[], object], rounds: int = 1) -> float:
    """Images per second of the best of ``rounds`` passes (the machine may be shared)."""
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return n / best


def _bench_batch_size(
    bs: int,
    variant: Variant,
    square: SquareMode,
    blobs: list[bytes],
    x: NDArray[np.float32],
    rounds: int,
    colour_weight: float,
) -> tuple[float, float]:
    embedder = EfficientNetLiteEmbedder(variant, square, batch_size=bs, colour_weight=colour_weight)
    predict = embedder._predict  # the model step alone, exactly as the embedder calls it
    n = len(x) - len(x) % bs  # whole batches only
    predict(x[:bs])  # warm-up: trace/compile this shape

    def model_only() -> None:
        for i in range(0, n, bs):
            predict(x[i : i + bs])

    def end_to_end() -> None:
        embedder.embed([decode_image(b, MAX_PIXELS) for b in blobs[:n]])

    return _rate(n, model_only, rounds), _rate(n, end_to_end)


def main() -> int:
    args = _args()
    if not args.dir.is_dir():
        print(f"skipped: no photos at {args.dir}")
        return 0
    variant, square = Variant.parse(args.variant), SquareMode.parse(args.square)
    blobs = _load(args.dir, args.images)
    images: list[Image.Image] = [decode_image(b, MAX_PIXELS) for b in blobs]
    x = preprocess_batch(images, variant.spec.image_size, square)
    print(f"{len(x)} photos from {args.dir}, {variant.value}/{square.value}, "
          f"colour weight {args.colour_weight:g}, {os.cpu_count()} CPUs")
    squares = x.astype(np.uint8)
    colour_rate = _rate(len(x), lambda: colour_descriptors(squares))
    print(f"colour descriptor alone: {colour_rate:.0f} img/s")
    print(f"{'batch':>5} {'model img/s':>12} {'end-to-end img/s':>17}")
    for bs in (int(s) for s in args.batch_sizes.split(",")):
        if bs > len(x):
            print(f"{bs:>5} skipped: fewer photos than one batch")
            continue
        model_rate, e2e_rate = _bench_batch_size(bs, variant, square, blobs, x, args.rounds,
                                                 args.colour_weight)
        print(f"{bs:>5} {model_rate:>12.1f} {e2e_rate:>17.1f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
