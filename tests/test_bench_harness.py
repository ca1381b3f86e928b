"""The fault harness's and the scale bench's own parts: what they count must be right for
their figures to mean anything (bench/faults.py, bench/loopback.py, bench/scale.py)."""

from __future__ import annotations

import base64
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import requests

from bench.faults import Expected
from bench.loopback import ImageServer, OutageProxy
from bench.scale import (
    Catalog,
    RowEmbedder,
    exact_top,
    make_catalog,
    make_queries,
    row_png,
    wait_indexed,
    wait_quiet,
)
from bench.services import tree_cpu_seconds
from bench.verify_cost import STAGES, StageClock
from embedding.decode import decode_image
from lookalike.broker import free_port
from schema.events import image_key


def _event(pid: str, version: int, paths: list[str]) -> dict[str, object]:
    return {"type": "product.upserted", "product_id": pid, "version": version,
            "images": [{"path": p} for p in paths]}


def _row(pid: str, path: str) -> dict[str, str]:
    key = image_key(path)
    return {"pk": f"{pid}#{key}", "product_id": pid, "image_key": key}


def test_expected_counts_lost_duplicated_and_orphan_rows() -> None:
    expected = Expected()
    expected.apply(_event("a", 1, ["/x/a1", "/x/a2"]))
    expected.apply(_event("b", 2, ["/x/b1"]))
    expected.apply(_event("a", 3, ["/x/a2"]))  # a1 must be gone
    expected.apply(_event("c", 4, ["/x/c1"]))
    expected.apply({"type": "product.delisted", "product_id": "c", "version": 5})
    stored = [_row("a", "/x/a1"), _row("a", "/x/a2"), _row("a", "/x/a2"), _row("c", "/x/c1")]
    figures = expected.compare(stored)
    assert figures == {"products": 2, "rows_expected": 2, "rows_stored": 4, "lost": 1,
                       "duplicated": 1, "orphans": 2}


def test_image_server_counts_every_request_and_redirects_on_loopback() -> None:
    target = ImageServer("127.0.0.1", 0, b"\xff\xd8jpeg").start()
    hop = ImageServer("127.0.0.1", 0, b"unused").start()
    try:
        reply = requests.get(f"http://127.0.0.1:{hop.port}/redirect/{target.port}/p.jpg",
                             timeout=5)
        assert reply.content == b"\xff\xd8jpeg"
        assert reply.history[0].status_code == 302
        assert (hop.count(), target.count()) == (1, 1)
        assert target.requests == ["/p.jpg"]
    finally:
        target.stop()
        hop.stop()


def test_outage_proxy_refuses_while_out_and_forwards_again_after() -> None:
    upstream = ImageServer("127.0.0.1", 0, b"body").start()
    proxy = OutageProxy(free_port(), upstream.port)
    url = f"http://127.0.0.1:{proxy.listen_port}/x"
    try:
        proxy.restore()
        assert requests.get(url, timeout=5).content == b"body"
        proxy.outage()
        with pytest.raises(requests.ConnectionError):
            requests.get(url, timeout=5)
        proxy.restore()
        assert requests.get(url, timeout=5).content == b"body"
        assert upstream.count() == 2
    finally:
        proxy.stop()
        upstream.stop()


def test_outage_proxy_forwards_an_answer_that_comes_after_a_silence(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Tansu answers a JoinGroup only after half the session timeout: a silent upstream must
    not end the connection (the proxy once cut it after its connect timeout, and the client
    never learnt, so the broker scenario consumed nothing)."""
    monkeypatch.setattr(OutageProxy, "CONNECT_TIMEOUT_S", 0.2)
    with socket.create_server(("127.0.0.1", 0)) as server:
        def answer_late() -> None:
            conn, _ = server.accept()
            with conn:
                conn.recv(16)
                time.sleep(0.8)  # four times the connect timeout
                conn.sendall(b"late answer")

        threading.Thread(target=answer_late, daemon=True).start()
        proxy = OutageProxy(free_port(), server.getsockname()[1])
        try:
            proxy.restore()
            with socket.create_connection(("127.0.0.1", proxy.listen_port), 5) as client:
                client.settimeout(5)
                client.sendall(b"join")
                assert client.recv(64) == b"late answer"
        finally:
            proxy.stop()


@pytest.mark.parametrize("row", [0, 1, 255, 70_000, 2**24 - 1])
def test_row_png_decodes_back_to_its_row_vector(row: int) -> None:
    vectors = np.zeros((row + 1, 1), dtype=np.float32)
    vectors[row, 0] = 1.0
    embedder = RowEmbedder(vectors, "test")
    image = decode_image(base64.b64decode(row_png(row)), 10_000)
    prepared = embedder.prepare(image)
    assert int(prepared[0]) == row
    assert embedder.embed_prepared(np.stack([prepared]))[0, 0] == 1.0


def test_exact_top_ranks_products_by_their_best_image_within_the_mask() -> None:
    vectors = np.array([[1, 0], [0, 1], [0.8, 0.6], [0.6, 0.8]], dtype=np.float32)
    catalog = Catalog(vectors, np.array([0, 0, 1, 2]), np.array([0, 2, 3]),
                      ["A/x/y", "B/x/y", "A/x/y"], np.array([1.0, 2.0, 3.0]), vectors[:3])
    query = np.array([1, 0], dtype=np.float32)
    everything = np.ones(4, dtype=bool)
    assert exact_top(catalog, query, everything, 2) == (["sp0000000", "sp0000001"], 3)
    without_first_image = np.array([False, True, True, True])
    assert exact_top(catalog, query, without_first_image, 3) == (
        ["sp0000001", "sp0000002", "sp0000000"], 3)
    only_last = np.array([False, False, False, True])
    assert exact_top(catalog, query, only_last, 10) == (["sp0000002"], 1)


def test_synthetic_catalog_has_the_promised_shape_and_filter_selectivity() -> None:
    rng = np.random.default_rng(0)
    base = np.abs(rng.standard_normal((50, 64))).astype(np.float32)
    catalog = make_catalog(base, 20_000, seed=3)
    assert len(catalog.row_product) == 20_000
    assert 1.8 < 20_000 / catalog.n_products < 2.2
    assert np.allclose(np.linalg.norm(catalog.vectors, axis=1), 1.0, atol=1e-5)
    assert all(c.count("/") == 2 for c in catalog.categories)
    queries = make_queries(catalog, 200, seed=3)
    share = {name: float(np.mean([m.mean() for m in masks]))
             for name, masks in queries.masks.items()}
    assert share["none"] == 1.0
    assert 0.08 < share["category"] < 0.12
    assert 0.035 < share["price"] < 0.065


class _IndexingServer:
    """A client whose one collection (of two with the prefix) finishes indexing on the
    third look."""

    def __init__(self, report: bool = True) -> None:
        self.looks = 0
        self.report = report

    def list_collections(self) -> list[str]:
        return ["scale_1_v1", "scale_1_states", "other"]

    def list_indexes(self, name: str) -> list[str]:
        assert name.startswith("scale_1"), name
        return ["vector"]

    def describe_index(self, name: str, index: str) -> dict[str, int]:
        if not self.report:
            return {}
        self.looks += name == "scale_1_v1"
        done = 100 if self.looks >= 3 or name != "scale_1_v1" else 40
        return {"indexed_rows": done, "total_rows": 100}


def test_wait_indexed_waits_for_every_row_of_the_prefix_collections(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(time, "sleep", lambda _s: None)
    server = _IndexingServer()
    seconds = wait_indexed(server, "scale_1", time.perf_counter())
    assert seconds is not None and seconds >= 0 and server.looks == 3
    assert wait_indexed(_IndexingServer(report=False), "scale_1", time.perf_counter()) is None
    assert wait_indexed(_IndexingServer(), "scale_1", time.perf_counter(), timeout_s=0) is None


class _FakeServerClock:
    """A server that burns ``busy`` windows of one full core, then idles at 5 % of one."""

    def __init__(self, busy: int) -> None:
        self.now, self.cpu, self.busy = 0.0, 0.0, busy

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        self.cpu += seconds * (1.0 if self.busy > 0 else 0.05)
        self.busy -= 1


def test_wait_quiet_waits_until_the_server_stops_its_background_work() -> None:
    server = _FakeServerClock(busy=3)
    settled = wait_quiet(lambda: server.cpu, 0.0, window_s=5.0, sleep=server.sleep,
                         clock=lambda: server.now)
    assert settled == 20.0  # three busy windows, then one quiet one
    never = _FakeServerClock(busy=10**6)
    assert wait_quiet(lambda: never.cpu, 0.0, window_s=5.0, timeout_s=30.0, sleep=never.sleep,
                      clock=lambda: never.now) is None


def test_tree_cpu_seconds_counts_a_busy_child() -> None:
    import os
    import subprocess
    import sys
    child = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.6)
        own = tree_cpu_seconds(child.pid)
        assert own > 0.1  # it spun for 0.6 s
        assert tree_cpu_seconds(os.getpid()) >= own  # this process's tree holds the child
    finally:
        child.kill()
        child.wait()


def test_stage_clock_gives_first_page_calls_made_beyond_it_to_beyond() -> None:
    """bench/verify_cost.py: a verifier call made by the second page (or the deeper look,
    or corroboration) is the second page's time, not the first page's."""
    clock = StageClock()

    def busy(ms: float) -> str:
        until = time.process_time() + ms / 1000
        while time.process_time() < until:
            pass
        return "done"

    verify = clock.wrap("first_page", busy, first_page=True)
    second_page = clock.wrap("beyond", lambda: verify(30), beyond=True)
    assert verify(20) == "done" and second_page() == "done"
    assert 0.015 <= clock.cpu["first_page"] < 0.028  # the 20 ms call only
    assert clock.cpu["beyond"] >= 0.025 and clock.depth == 0
    clock.reset()
    assert clock.cpu == dict.fromkeys(STAGES, 0.0)


def test_edited_catalog_writes_every_product_again_with_new_photos(tmp_path: Path) -> None:
    """bench/edited_catalog.py: copies x products, each photo a new file of an edited copy
    (the throughput runs must not feed byte-identical duplicates to ingest)."""
    import json

    from PIL import Image

    from bench.edited_catalog import EDITS, write_edited_catalog
    from ingest.publish import load_catalog

    src = tmp_path / "src"
    (src / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    lines = []
    for n in range(2):
        Image.fromarray(rng.integers(0, 255, (60, 40, 3), dtype=np.uint8)).save(
            src / "images" / f"p{n}.jpg")
        lines.append(json.dumps({"product_id": f"p{n}", "title": "t", "category": "c",
                                 "price": 1.0, "currency": "EUR",
                                 "images": [{"path": f"images/p{n}.jpg"}]}))
    (src / "catalog.jsonl").write_text("\n".join(lines) + "\n")
    products, images = write_edited_catalog(src, tmp_path / "dst", copies=len(EDITS))
    assert (products, images) == (2 * len(EDITS), 2 * len(EDITS))
    events = load_catalog(tmp_path / "dst" / "catalog.jsonl")
    assert sorted(e.product_id for e in events)[:3] == ["p0-v0", "p0-v1", "p0-v2"]
    photos = sorted((tmp_path / "dst" / "images").iterdir())
    assert len({p.read_bytes() for p in photos}) == len(photos) == images
    assert all(Image.open(p).size == (40, 60) for p in photos)
