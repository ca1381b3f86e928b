"""store.blas: numpy's BLAS in one thread inside the guard, restored by the last to leave."""

from __future__ import annotations

import threading

import cv2
import pytest
from PIL import Image

from search.features import photo_features
from search.verify import SameItemVerifier
from store.blas import OneBlasThread


def _guard() -> tuple[OneBlasThread, int]:
    guard = OneBlasThread()
    threads = guard.threads()
    if threads is None:
        pytest.skip("numpy is not linked to its bundled OpenBLAS here")
    return guard, threads


def test_inside_blas_runs_in_one_thread_and_the_count_is_restored_after() -> None:
    guard, before = _guard()
    with guard:
        assert guard.threads() == 1
        with guard:  # nested: still one thread, and leaving it restores nothing yet
            pass
        assert guard.threads() == 1
    assert guard.threads() == before


def test_threads_inside_at_once_leave_the_original_count() -> None:
    """Entered and left by several threads in any order, the count set by the first is
    restored by the last (each restoring its own saved count would leave one behind)."""
    guard, before = _guard()
    inside, leave = threading.Barrier(4), threading.Event()
    seen: list[int | None] = []

    def work() -> None:
        with guard:
            inside.wait(timeout=10)
            seen.append(guard.threads())
            leave.wait(timeout=10)

    workers = [threading.Thread(target=work) for _ in range(3)]
    for worker in workers:
        worker.start()
    inside.wait(timeout=10)
    leave.set()
    for worker in workers:
        worker.join(timeout=10)
    assert seen == [1, 1, 1]
    assert guard.threads() == before
    with guard:  # and again from this thread, after the workers
        assert guard.threads() == 1
    assert guard.threads() == before


def test_opencv_runs_in_one_thread_while_candidates_are_verified() -> None:
    """The verifier's comparisons of small photos run OpenCV in one thread
    (``search.features.one_cv_thread``); the pool's count is back once they return."""
    before = cv2.getNumThreads()
    cv2.setNumThreads(2)
    try:
        photo = Image.new("RGB", (320, 320), (200, 40, 40))
        seen: list[int] = []

        def load(ref: str) -> Image.Image:
            seen.append(cv2.getNumThreads())
            return photo

        evidence = SameItemVerifier(load).verify(photo_features(photo), [("a", 0.9)])
        assert len(evidence) == 1 and seen == [1]
        assert cv2.getNumThreads() == 2
    finally:
        cv2.setNumThreads(before)
