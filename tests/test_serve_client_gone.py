"""A client that sent its whole request and went away (uvicorn on a thread, Milvus Lite, a
fake embedder): its search is not started, or stops at its next stage, and is counted 499;
a client that stays is answered as before."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests

from search.cancel import SearchCancelled
from search.verify import Evidence
from serve.server import BackgroundServer
from tests.fakes import SimilarityOnlyVerifier
from tests.serve_support import RED, Served, build_served, png

EVERY_LISTING = {"product_id": "red-tee", "threshold": -1}
"""A comparison whose candidates are the 4 other products of the catalog."""


class HeldVerifier(SimilarityOnlyVerifier):
    """Verification whose every candidate waits for ``release``, counting them."""

    def __init__(self) -> None:
        super().__init__()
        self.compared = 0
        self.entered = threading.Event()
        self.release = threading.Event()

    def compare(self, *args: Any, **kwargs: Any) -> Evidence:
        self.compared += 1  # one comparison at a time in these tests
        self.entered.set()
        self.release.wait(10)
        return super().compare(*args, **kwargs)


def raw_post(path: str, body: dict[str, Any]) -> bytes:
    data = json.dumps(body).encode()
    return (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\n\r\n").encode() + data


def wait_until(condition: Callable[[], bool], timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def counted(served: Served, endpoint: str, status: str) -> float:
    return served.registry.get_sample_value(
        "lookalike_http_requests_total", {"endpoint": endpoint, "status": status}) or 0.0


def reaches(served: Served, endpoint: str, status: str, n: int) -> bool:
    """Whether ``n`` requests to ``endpoint`` are counted with ``status`` within 10 s."""
    return wait_until(lambda: counted(served, endpoint, status) == n)


def milvus_observed(served: Served) -> float:
    return served.registry.get_sample_value(
        "lookalike_search_stage_duration_seconds_count", {"stage": "milvus"}) or 0.0


def seen_gone(caplog: pytest.LogCaptureFixture) -> Callable[[], bool]:
    """Whether a request's client watch (serve/disconnect.py) has seen its client go."""
    return lambda: any(r.name == "serve.disconnect" and "client gone" in r.getMessage()
                       for r in caplog.records)


def test_a_comparison_stops_between_candidates_once_its_client_leaves(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    held = HeldVerifier()
    for served in build_served(tmp_path, verifier=held):
        with BackgroundServer(served.app) as server, \
                caplog.at_level(logging.DEBUG, logger="serve.disconnect"):
            with socket.create_connection((server.host, server.port), timeout=10) as sock:
                sock.sendall(raw_post("/v1/compare-prices", EVERY_LISTING))
                assert held.entered.wait(10)  # verifying the first of its 4 candidates
            assert wait_until(seen_gone(caplog))
            held.release.set()
            assert reaches(served, "/v1/compare-prices", "499", 1)
            assert held.compared == 1  # the other 3 never verified
            assert not [r for r in caplog.records if r.levelno >= logging.ERROR]

            held.compared = 0  # a client that stays is answered in full
            answer = requests.post(f"{server.url}/v1/compare-prices", json=EVERY_LISTING,
                                   timeout=10)
            assert answer.status_code == 200, answer.text
            assert len(answer.json()["matches"]) == 4 and held.compared >= 4
            assert reaches(served, "/v1/compare-prices", "200", 1)  # counted once answered
            assert counted(served, "/v1/compare-prices", "499") == 1


def test_a_request_whose_client_left_while_it_waited_for_a_worker_is_not_searched(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    held = HeldVerifier()
    answers: list[requests.Response] = []
    for served in build_served(tmp_path, verifier=held, workers=1):
        with BackgroundServer(served.app) as server, \
                caplog.at_level(logging.DEBUG, logger="serve.disconnect"):
            busy = threading.Thread(target=lambda: answers.append(requests.post(
                f"{server.url}/v1/compare-prices", json=EVERY_LISTING, timeout=20)))
            busy.start()
            assert held.entered.wait(10)  # the one worker is taken
            before = milvus_observed(served)
            with socket.create_connection((server.host, server.port), timeout=10) as sock:
                sock.sendall(raw_post("/v1/search", {"vector": [1.0] + [0.0] * 7}))
                time.sleep(0.5)  # read, and waiting for the worker
            assert wait_until(seen_gone(caplog))  # seen by the watch: it had reached the pool
            held.release.set()
            busy.join(20)
            assert reaches(served, "/v1/search", "499", 1)
            assert [a.status_code for a in answers] == [200]
            assert milvus_observed(served) - before == 1  # the comparison's: no search ran
            vector = requests.post(f"{server.url}/v1/search",
                                   json={"vector": [1.0] + [0.0] * 7}, timeout=10)
            assert vector.status_code == 200 and vector.json()["hits"]
            assert reaches(served, "/v1/search", "200", 1)


def gone_after(n: int) -> Callable[[], bool]:
    """A ``cancelled`` that says the caller is gone from its ``n + 1``-th question on."""
    asked = [0]

    def cancelled() -> bool:
        asked[0] += 1
        return asked[0] > n

    return cancelled


def test_an_image_search_and_a_comparison_stop_at_the_stage_their_caller_left(
        tmp_path: Path) -> None:
    """``cancelled`` is asked between stages: gone once the photos are embedded (an image
    search) or its photo decoded (a comparison, which would search with its quarter turns
    next), neither searches Milvus; never gone, both answer as without it."""
    for served in build_served(tmp_path):
        with served.search._store.recording() as calls:
            with pytest.raises(SearchCancelled, match="before the vector search"):
                served.search.by_images([png(RED), png(RED)], cancelled=gone_after(2))
            with pytest.raises(SearchCancelled, match="before the query photo's turns"):
                served.search.compare_prices(image=png(RED), cancelled=gone_after(0))
        assert calls == []
        assert served.search.by_images([png(RED)], cancelled=lambda: False) == \
            served.search.by_images([png(RED)])
        kept = served.search.compare_prices(product_id="red-tee", threshold=-1,
                                            cancelled=lambda: False)
        assert len(kept) == 4
