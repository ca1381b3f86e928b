"""store.blas: a library's threads (numpy's BLAS, OpenCV's) one inside the guard, the count
restored by the last to leave."""

from __future__ import annotations

import threading

import cv2
import pytest
from PIL import Image

from search.features import photo_features
from search.verify import SameItemVerifier
from store.blas import OneBlasThread, OneThread
from tests.fakes import textured_photo


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
    if cv2.getNumThreads() != 2:
        cv2.setNumThreads(before)
        pytest.skip("this OpenCV build has no thread pool to size")
    try:
        photo = textured_photo(3)  # keypoints to match and vote with
        seen: list[int] = []

        def load(ref: str) -> Image.Image:
            seen.append(cv2.getNumThreads())
            return photo

        verifier = SameItemVerifier(load)
        evidence = verifier.verify(photo_features(photo), [("a", 0.9)])
        assert len(evidence) == 1 and seen == [1]
        assert cv2.getNumThreads() == 2
        # and so do the other ways in: a pair compared, keypoints matched and voted on
        query = photo_features(photo)
        verifier.compare(query, verifier.gallery_features("a"), 0.9)
        verifier.keypoint_matches(query, ["b"])
        verifier.keypoint_votes([query], ["c"])
        assert seen == [1, 1, 1] and cv2.getNumThreads() == 2
        for method in (verifier.compare, verifier.keypoint_matches, verifier.keypoint_votes):
            assert method.__wrapped__ is not None  # type: ignore[attr-defined]
    finally:
        cv2.setNumThreads(before)


def test_the_guard_counts_for_any_library() -> None:
    """:class:`OneThread` over a library's (set, get): one thread inside, nested or from several
    threads at once, the count restored by the last to leave; without the library, nothing."""
    count = [4]
    calls: list[int] = []

    def set_count(n: int) -> None:
        calls.append(n)
        count[0] = n

    guard = OneThread(lambda: (set_count, lambda: count[0]), "a library")
    with guard:
        assert count == [1]
        with guard:
            assert count == [1]
        assert count == [1]
    assert count == [4] and calls == [1, 4]
    inside, leave = threading.Barrier(3), threading.Event()

    def work() -> None:
        with guard:
            inside.wait(timeout=10)
            leave.wait(timeout=10)

    workers = [threading.Thread(target=work) for _ in range(2)]
    for worker in workers:
        worker.start()
    inside.wait(timeout=10)
    assert count == [1]
    leave.set()
    for worker in workers:
        worker.join(timeout=10)
    assert count == [4] and calls == [1, 4, 1, 4]
    absent = OneThread(lambda: None, "no library")
    with absent:
        assert absent.threads() is None
