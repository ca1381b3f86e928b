"""Model start-up and model-only throughput, as ingest builds the embedder.

Run from the repository root::

    PYTHONPATH=. KERAS_BACKEND=jax LOOKALIKE_MODEL__BATCH_SIZE=256 \\
        python bench/bench_warmup.py NAME [--images 2048] [--json OUT]

Builds the embedder with ``lookalike.app.build_embedder`` (so every ``LOOKALIKE_MODEL__*``
applies, the JAX compile cache too), times the build and each bucket shape's first run (the
warm-up ingest does), then the model step alone on random images per batch size (best of 3).
On JAX it also counts what JAX reports: compile time, cache hits and misses. Run it twice
with one ``LOOKALIKE_MODEL__COMPILE_CACHE`` to see what a restart costs (docs/speed.md,
"Second loan"). bench/gpu_check.sh runs it on a lent GPU.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from embedding.embedder import describe_device  # noqa: E402
from lookalike.app import build_embedder  # noqa: E402
from lookalike.settings import Settings  # noqa: E402

BATCH_SIZES = (1, 8, 32, 64, 128, 256)


def _jax_counters() -> tuple[collections.Counter[str], collections.Counter[str]]:
    """(seconds, counts) per JAX monitoring event, filled as JAX reports them; empty when the
    backend is not JAX. Registered before the model is built, so its compiles are counted."""
    seconds: collections.Counter[str] = collections.Counter()
    counts: collections.Counter[str] = collections.Counter()
    import keras

    if keras.config.backend() == "jax":
        import jax

        def on_duration(event: str, duration: float, **_: Any) -> None:
            seconds[event] += duration
            counts[event] += 1

        def on_event(event: str, **_: Any) -> None:
            counts[event] += 1

        jax.monitoring.register_event_duration_secs_listener(on_duration)
        jax.monitoring.register_event_listener(on_event)
    return seconds, counts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", help="a label for this run's lines")
    parser.add_argument("--images", type=int, default=2048, help="random images per batch size")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    seconds, counts = _jax_counters()
    started = time.perf_counter()
    embedder: Any = build_embedder(Settings())
    build_s = time.perf_counter() - started
    size = embedder.image_size
    shapes: dict[int, float] = {}
    for bucket in embedder._buckets:  # the shapes warm_up() compiles, one at a time
        started = time.perf_counter()
        embedder._run(np.zeros((bucket, size, size, 3), np.uint8))
        shapes[bucket] = round(time.perf_counter() - started, 2)
    device = describe_device()
    print(f"[{args.name}] {device}; build {build_s:.1f}s; warm-up "
          f"{sum(shapes.values()):.1f}s per shape {shapes}", flush=True)
    rng = np.random.default_rng(0)
    rates: dict[int, int] = {}
    for bs in (b for b in BATCH_SIZES if b in shapes):
        wanted = min(args.images, 128) if bs == 1 else args.images  # batch 1 is slow
        n = max(1, wanted // bs) * bs  # whole batches only
        x = rng.integers(0, 255, (n, size, size, 3), dtype=np.uint8).astype(np.float32)
        best = float("inf")
        for _ in range(3):
            started = time.perf_counter()
            for i in range(0, n, bs):
                embedder._predict(x[i:i + bs])
            best = min(best, time.perf_counter() - started)
        rates[bs] = round(n / best)
        print(f"[{args.name}] batch {bs}: {rates[bs]} images/s", flush=True)
    figures = {"name": args.name, "device": device, "build_s": round(build_s, 2),
               "warm_up_s": round(sum(shapes.values()), 2), "shapes": shapes, "rates": rates,
               "jax_seconds": {k: round(v, 2) for k, v in seconds.items()},
               "jax_counts": dict(counts)}
    print(json.dumps(figures))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
