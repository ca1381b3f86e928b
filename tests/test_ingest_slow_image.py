"""One slow image server does not stall the batch: its image fails alone, at the deadline.

A loopback server answers one URL a byte at a time (the whole body would take minutes); the
other products of the same batches must be written within the image deadline + 2 s.
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

from ingest.egress import EgressPolicy
from ingest.fetch import FetchPolicy, ImageFetcher
from tests.pipeline_support import upsert_payload, write_image
from tests.runner_fakes import FakeSource, FlakyStore, fake_runner, record

DEADLINE_S = 1.0
IMAGES: dict[str, bytes] = {}


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
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
