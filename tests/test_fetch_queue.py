"""Fetch scheduling: a busy host's images wait in its queue, not on a worker, and a batch's
fetching ends with its budget. The loads here are fakes; tests/test_ingest_slow_image.py runs
the same through the pipeline against a host that never answers."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

from ingest.fetch import FetchPolicy, ImageFetcher
from ingest.fetch_queue import FetchQueue
from schema.errors import ItemError, ItemFailure, Reason
from schema.events import ImageRef


def _fetcher(**policy: float) -> ImageFetcher:
    return ImageFetcher([], policy=FetchPolicy(**policy))  # type: ignore[arg-type]


def _urls(host: str, n: int) -> list[ImageRef]:
    return [ImageRef(url=f"http://{host}/{i}.jpg") for i in range(n)]


def test_a_busy_hosts_images_wait_without_a_worker_while_others_go_ahead() -> None:
    """Two workers, one connection per host: host a's first image holds until host b's
    image has been loaded. First come, first served, a's second image took the other worker
    and b waited for a (here: forever)."""
    b_loaded = threading.Event()
    started: list[str] = []

    def load(image: ImageRef, cutoff: float, fetched: Callable[[], None]) -> str:
        host = str(urlsplit(image.url or "").hostname)
        started.append(host)
        if host == "a.example":
            b_loaded.wait(10)
        fetched()
        if host == "b.example":
            b_loaded.set()
        return host

    images = [*_urls("a.example", 3), *_urls("b.example", 1), ImageRef(path="x.jpg")]
    with ThreadPoolExecutor(2) as pool:
        out = FetchQueue(_fetcher(per_host=1), pool).map(images, load)
    assert out == ["a.example"] * 3 + ["b.example", "None"]
    assert b_loaded.is_set()
    assert started[:2] == ["a.example", "b.example"]
    assert started.count("a.example") == 3


def test_the_budget_fails_what_is_still_waiting() -> None:
    """Host a never answers: its running loads end at the cutoff (as fetches cut by it do),
    its queued images fail with the budget named, host b's image is loaded."""
    calls: list[str] = []

    def load(image: ImageRef, cutoff: float, fetched: Callable[[], None]) -> str:
        calls.append(image.reference)
        if "a.example" in image.reference:
            time.sleep(max(0.0, cutoff - time.monotonic()))
            raise ItemError(Reason.TIMEOUT, "cut off")
        return "ok"

    images = [*_urls("a.example", 10), *_urls("b.example", 1)]
    started = time.monotonic()
    with ThreadPoolExecutor(4) as pool:
        out = FetchQueue(_fetcher(per_host=2), pool).map(images, load, budget_s=0.5)
    elapsed = time.monotonic() - started
    assert out[-1] == "ok"
    failures = [o for o in out[:-1] if isinstance(o, ItemFailure)]
    assert len(failures) == 10 and all(f.reason is Reason.TIMEOUT for f in failures)
    assert sum("fetch budget of 0.5s" in f.detail for f in failures) == 8
    assert sum(f.detail == "cut off" for f in failures) == 2
    assert len(calls) == 3  # two of a's, one of b's: the rest never took a worker
    assert elapsed < 5.0, elapsed
