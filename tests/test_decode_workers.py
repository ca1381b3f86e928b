"""Decoding is CPU work: at most ``decode_workers`` images decode at once, whatever the size of
the fetch pool, so decoders do not preempt CPU inference (bench/bench_pipeline.py), and on
no more than ``decode_workers`` threads, so only their malloc arenas ever hold a large photo
(ingest/load.py)."""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest
from PIL import Image

from ingest import load
from ingest.fetch import ImageFetcher
from ingest.outage import OutageWait
from ingest.plan import EventItem
from ingest.stages import Batch, Stages
from lookalike.app import decode_workers
from lookalike.settings import Settings
from schema.events import parse_event
from schema.records import ProductState
from tests.fakes import TinyEmbedder


class SlowEmbedder(TinyEmbedder):
    """Records the most ``prepare`` calls (the decode slot's work) running at once, and the
    threads they ran on."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self.running = 0
        self.most = 0
        self.threads: set[int] = set()

    def prepare(self, image: Any) -> np.ndarray:
        with self._lock:
            self.running += 1
            self.most = max(self.most, self.running)
            self.threads.add(threading.get_ident())
        time.sleep(0.02)
        with self._lock:
            self.running -= 1
        return super().prepare(image)


class NoStates:
    def get_states(self, product_ids: Any) -> dict[str, ProductState]:
        return {}

    def apply(self, plan: Any) -> None:
        raise AssertionError("prepare must not write")


def _png(shade: int) -> str:
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (200, shade, 10)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def _batch(n_products: int, images_each: int) -> Batch:
    items = []
    for i in range(n_products):
        event = parse_event(json.dumps({
            "type": "product.upserted", "product_id": f"p{i}", "title": "t",
            "category": "A/B", "price": "1", "currency": "USD", "seller_id": "s",
            "version": 1, "images": [{"data": _png(j)} for j in range(images_each)],
        }))
        items.append(EventItem(i, event, None))
    return Batch(seq=0, records=[], items=items, n_images=n_products * images_each,
                 opened_at=0.0)


@pytest.mark.parametrize("slots", [1, 3])
def test_at_most_decode_workers_images_decode_at_once(slots: int) -> None:
    embedder = SlowEmbedder()
    with ThreadPoolExecutor(8) as pool:
        stages = Stages(ImageFetcher([]), embedder, NoStates(), None, pool,  # type: ignore[arg-type]
                        max_pixels=10_000_000, decode_workers=slots, outage=OutageWait(0.0))
        batch = _batch(6, 2)
        stages.prepare(batch)
    assert len(batch.prepared) == 12 and not batch.stats.images_failed
    assert embedder.most == slots
    assert len(embedder.threads) <= slots  # of the 8 fetch threads, none decoded


def test_a_large_decode_hands_its_memory_back(monkeypatch: pytest.MonkeyPatch) -> None:
    trims: list[int] = []
    monkeypatch.setattr(load, "release_freed_memory", lambda: trims.append(1))
    monkeypatch.setattr(load, "LARGE_DECODE_PIXELS", 32 * 32)
    with ThreadPoolExecutor(2) as pool:
        stages = Stages(ImageFetcher([]), TinyEmbedder(), NoStates(), None, pool,  # type: ignore[arg-type]
                        max_pixels=10_000_000, decode_workers=1, outage=OutageWait(0.0))
        stages.prepare(_batch(1, 2))
    assert len(trims) == 2


def test_handing_memory_back_runs_anywhere() -> None:
    load.release_freed_memory()  # malloc_trim on glibc, nothing elsewhere


def test_decode_workers_default_follows_the_device(monkeypatch: pytest.MonkeyPatch) -> None:
    class Gpu:
        on_gpu = True

    monkeypatch.setattr("os.cpu_count", lambda: 16)
    assert decode_workers(Settings(), Gpu()) == 16
    assert decode_workers(Settings(), TinyEmbedder()) == 4  # CPU inference: a quarter
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    assert decode_workers(Settings(), TinyEmbedder()) == 1
    pinned = Settings.model_validate({"images": {"decode_workers": 3}})
    assert decode_workers(pinned, Gpu()) == 3
    with pytest.raises(ValueError):
        Settings.model_validate({"images": {"decode_workers": 0}})
