"""Which image a free fetch worker takes next, and how long a batch's fetching may take.

A batch's images used to go to the fetch pool first come, first served. A host that accepts
connections and never answers then held a worker per image until each deadline passed (or
waited on its per-host slot *on* a worker), and every other host's images queued behind
them: 64 such images and 8 workers kept a canary from another host waiting 80 s.

Here each host has a queue of its own. Images are handed to the pool one at a time, only when
it has nothing waiting to start, round robin over the hosts below their connection limit
(``FetchPolicy.per_host``): an image whose host is busy waits in its queue, holding no
worker, and other hosts' images go ahead. A host whose last image timed out gets one fetch at
a time until it answers or rests, and a resting host (ingest/fetch.py) fails its queued
images at once: a hung host costs a batch one deadline. And the batch has a budget
(``FetchPolicy.batch_budget_s``): fetches still running then are cut, images still queued
fail, both as ``timeout``, and the batch goes on with the images it has.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future
from typing import Generic, TypeVar

from ingest.fetch import ImageFetcher
from schema.errors import ItemError, ItemFailure, Reason
from schema.events import ImageRef

T = TypeVar("T")

Load = Callable[[ImageRef, float, Callable[[], None]], T]
"""``load(image, cutoff, fetched)``: fetch ``image`` by ``cutoff`` (``fetcher.fetch(image,
cutoff=cutoff)``), call ``fetched()`` once the bytes are in (the host's slot is then free
while the image decodes), and return what the batch needs; raises only ``ItemError``."""


class FetchQueue:
    """Runs a batch's image loads on ``pool`` with per-host fairness and a time budget."""

    def __init__(self, fetcher: ImageFetcher, pool: Executor) -> None:
        self._fetcher = fetcher
        self._pool = pool

    def map(
        self, images: Sequence[ImageRef], load: Load[T], *, budget_s: float | None = None
    ) -> list[T | ItemFailure]:
        """``load`` of each image, in order; a failure is its :class:`ItemFailure`."""
        budget = self._fetcher.policy.batch_budget_s if budget_s is None else budget_s
        return _Round(self._fetcher, self._pool, images, load, budget).run()


class _Round(Generic[T]):
    """One batch's images on their way through the pool."""

    def __init__(self, fetcher: ImageFetcher, pool: Executor, images: Sequence[ImageRef],
                 load: Load[T], budget_s: float) -> None:
        self._fetcher = fetcher
        self._pool = pool
        self._images = images
        self._load = load
        self._budget_s = budget_s
        self._cutoff = time.monotonic() + budget_s
        self._per_host = fetcher.policy.per_host
        self._cond = threading.Condition()
        self._queues: dict[str | None, deque[int]] = {}
        for i, image in enumerate(images):
            self._queues.setdefault(fetcher.host_of(image), deque()).append(i)
        self._turns = deque(self._queues)
        """Hosts with queued images, in round-robin order (None: paths and inline bytes)."""
        self._busy: Counter[str | None] = Counter()
        self._unstarted = 0
        self._futures: dict[int, Future[T]] = {}
        self._failed: dict[int, ItemFailure] = {}

    def run(self) -> list[T | ItemFailure]:
        with self._cond:
            while self._turns:
                left = self._cutoff - time.monotonic()
                if left <= 0:
                    self._give_up()
                    break
                self._dispatch()
                if self._turns:
                    self._cond.wait(left)
        results: list[T | ItemFailure] = []
        for i in range(len(self._images)):
            if i in self._failed:
                results.append(self._failed[i])
                continue
            try:  # running fetches end by the cutoff; decoding is bounded by the pixel limit
                results.append(self._futures[i].result())
            except ItemError as exc:
                results.append(exc.failure)
        return results

    def _dispatch(self) -> None:
        """Hand images to the pool while it has a worker free (nothing of ours waiting to
        start), each time from the next host in turn that is below its limit."""
        skipped = 0
        while self._unstarted == 0 and self._turns and skipped < len(self._turns):
            host = self._turns[0]
            self._turns.rotate(-1)
            queue = self._queues[host]
            resting = self._fetcher.resting(host) if host is not None else None
            if resting is not None:
                for i in queue:
                    self._failed[i] = resting.failure
                self._turns.pop()
                skipped = 0
                continue
            if host is not None and self._busy[host] >= self._limit(host):
                skipped += 1
                continue
            i = queue.popleft()
            if not queue:
                self._turns.pop()
            self._busy[host] += 1
            self._unstarted += 1
            self._futures[i] = self._pool.submit(self._job, i, host)
            skipped = 0

    def _limit(self, host: str) -> int:
        """The host's limit; 1 while its last image timed out, so that its next timeout (the
        one that makes it rest) comes before more of its images have started."""
        return 1 if self._fetcher.suspect(host) else self._per_host

    def _job(self, i: int, host: str | None) -> T:
        with self._cond:
            self._unstarted -= 1
            self._cond.notify()
        released = False

        def fetched() -> None:
            nonlocal released
            if not released:
                released = True
                with self._cond:
                    self._busy[host] -= 1
                    self._cond.notify()

        try:
            return self._load(self._images[i], self._cutoff, fetched)
        finally:
            fetched()

    def _give_up(self) -> None:
        for host in self._turns:
            queue = self._queues[host]
            failure = ItemFailure(
                Reason.TIMEOUT,
                f"{host or 'local file'}: not fetched, the batch's fetch budget of "
                f"{self._budget_s:g}s ran out with {len(queue)} image(s) of it still waiting "
                "(LOOKALIKE_IMAGES__BATCH_FETCH_BUDGET_S)",
            )
            for i in queue:
                self._failed[i] = failure
        self._turns.clear()
