"""One slow image server does not stall the batch: its image fails alone, at the deadline.

A loopback server answers one URL a byte at a time (the whole body would take minutes); the
other products of the same batches must be written within the image deadline + 2 s.

A host that accepts connections and never answers (bench/loopback.py: SilentServer) with many
images does not hold the fetch workers: other hosts' images are fetched while it hangs, it
rests after two timeouts, and the batch's fetch budget bounds the batch however many of its
images there are.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from kafka.consumer.fetcher import ConsumerRecord

from bench.loopback import SilentServer
from ingest.egress import EgressPolicy
from ingest.fetch import FetchPolicy, ImageFetcher
from ingest.runner import RunReport
from tests.pipeline_support import upsert_payload, write_image
from tests.runner_fakes import FakeProducer, FakeSource, FlakyStore, fake_runner, record

DEADLINE_S = 1.0
IMAGES: dict[str, bytes] = {}
HUNG: list[SilentServer] = []
CLOSED_SEEN: list[int] = []
"""Per request to the good server: the hung host's connections given up by then."""


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        CLOSED_SEEN.extend(h.closed for h in HUNG)
        body = IMAGES.get(self.path)
        if body is None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.path.startswith("/slow"):
            for byte in body:  # 0.3 s per byte: a 100-byte body would take 30 s
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
                time.sleep(0.3)
        else:
            self.wfile.write(body)

    def log_message(self, *_args: object) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        pass


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    for i in range(8):
        IMAGES[f"/p{i}.png"] = write_image(tmp_path / f"p{i}.png", seed=i).read_bytes()
    IMAGES["/slow.png"] = IMAGES["/p0.png"]
    httpd = _Server(("127.0.0.1", 0), _Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_a_dribbling_image_fails_alone_within_the_deadline(server: str) -> None:
    urls = [f"{server}/p{i}.png" for i in range(8)]
    urls[2] = f"{server}/slow.png"
    records = [
        record(i, json.dumps(upsert_payload(f"p{i}", 1, [url])).encode(), f"p{i}".encode())
        for i, url in enumerate(urls)
    ]
    fetcher = ImageFetcher([], egress=EgressPolicy(["127.0.0.0/8"]),
                           policy=FetchPolicy(deadline_s=DEADLINE_S))
    store = FlakyStore()
    source = FakeSource(records)
    with ThreadPoolExecutor(4) as pool:
        runner, producer = fake_runner(fetcher, store, source, pool)
        started = time.monotonic()
        report = runner.run(until_caught_up=True)
        elapsed = time.monotonic() - started
    assert sorted(store.states) == sorted(f"p{i}" for i in range(8) if i != 2)
    assert report.totals.images_failed == {"timeout": 1}
    headers = dict(producer.sent[0][2])
    assert headers["lookalike.reason"] == b"all_images_failed"
    assert b"timeout" in headers["lookalike.detail"]
    assert elapsed < DEADLINE_S + 2.0, elapsed


@pytest.fixture
def hung() -> Iterator[SilentServer]:
    server = SilentServer("127.0.0.2")
    HUNG.append(server)
    CLOSED_SEEN.clear()
    yield server
    HUNG.clear()
    server.stop()


def _run(records: list[ConsumerRecord], policy: FetchPolicy) -> tuple[FlakyStore, RunReport,
                                                                       FakeProducer, float]:
    fetcher = ImageFetcher([], egress=EgressPolicy(["127.0.0.0/8"]), policy=policy)
    store = FlakyStore()
    with ThreadPoolExecutor(4) as pool:
        runner, producer = fake_runner(fetcher, store, FakeSource(records), pool)
        started = time.monotonic()
        report = runner.run(until_caught_up=True)
    return store, report, producer, time.monotonic() - started


def _hung_then_good(hung: SilentServer, server: str, n_hung: int) -> list[ConsumerRecord]:
    """One event with ``n_hung`` images on the hung host, then three on the good one: one
    batch (the fake runner's batches are 4 events)."""
    payloads = [upsert_payload("hung", 1, [f"{hung.base}/{i}.png" for i in range(n_hung)])]
    payloads += [upsert_payload(f"p{i}", 1, [f"{server}/p{i}.png"]) for i in range(3)]
    return [record(i, json.dumps(p).encode(), str(p["product_id"]).encode())
            for i, p in enumerate(payloads)]


def test_other_hosts_are_fetched_while_one_host_hangs(server: str, hung: SilentServer) -> None:
    """First come, first served, the 12 hung images took all 4 workers (two connected, two
    waiting for a connection slot) for three deadlines before the others started; now two
    hang, the others are fetched at once, and the host rests after its two timeouts."""
    policy = FetchPolicy(deadline_s=2.0, per_host=2, host_rest_s=60.0, batch_budget_s=60.0)
    store, report, producer, _ = _run(_hung_then_good(hung, server, 12), policy)
    assert sorted(store.states) == ["p0", "p1", "p2"]
    assert len(CLOSED_SEEN) == 3 and set(CLOSED_SEEN) == {0}, CLOSED_SEEN  # while it hung
    assert hung.accepted == 2
    assert report.totals.images_failed == {"timeout": 12}
    detail = dict(producer.sent[0][2])["lookalike.detail"]
    # one failure for its 10 images: same-reason images are listed together since the hints
    # of 10 lines were cut mid-word (schema.errors.clipped)
    assert b"images 2, 3, 4, 5, 6, 7, 8, 9, 10, 11: timeout: " in detail, detail
    assert detail.count(b"not tried") == 1


def test_a_batch_fetch_time_is_bounded_by_its_budget(server: str, hung: SilentServer) -> None:
    """No rests here: 32 images of a host that never answers, two at a time, would take 16
    deadlines (32 s); the batch's budget of 3 s ends it and the good products are written."""
    policy = FetchPolicy(deadline_s=2.0, per_host=2, host_rest_s=0.0, batch_budget_s=3.0)
    store, report, producer, elapsed = _run(_hung_then_good(hung, server, 32), policy)
    assert sorted(store.states) == ["p0", "p1", "p2"]
    assert report.totals.images_failed == {"timeout": 32}
    headers = dict(producer.sent[0][2])
    assert headers["lookalike.reason"] == b"all_images_failed"
    assert b"fetch budget" in headers["lookalike.detail"]
    assert elapsed < 12.0, elapsed
