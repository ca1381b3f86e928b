"""``lookalike run``: ingest and the API in one process on one Milvus Lite file.

An event published while the API answers becomes searchable through the API within the
freshness target, and ``/metrics`` shows the ingest and the search series meanwhile. The real
broker, Milvus Lite and a content-based fake embedder (no model weights).

``run`` and ``serve`` bind the API's address before the model warms up, and wait for the
warm-up before they return: a process that exits while TensorFlow compiles on a daemon thread
aborts (exit 134).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from lookalike import commands_serve
from lookalike.app import close_stores, open_versions
from lookalike.cli import main
from lookalike.commands_serve import run_with
from lookalike.errors import UserError
from lookalike.settings import ServeSettings
from tests.fakes import TinyEmbedder, WarmingEmbedder, serving_database
from tests.pipeline_support import make_settings, send, upsert_payload, write_image

pytestmark = pytest.mark.kafka

REPO = Path(__file__).resolve().parent.parent
FRESHNESS_TARGET_S = 10.0
"""Event published -> found by POST /v1/search (docs/serve.md), on 2 shared CPU cores."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(check: Any, timeout_s: float, what: str) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if check():
            return time.monotonic() - started
        time.sleep(0.1)
    raise AssertionError(f"{what}: not within {timeout_s}s")


def top_hit(url: str, image: Path) -> str | None:
    response = requests.post(f"{url}/v1/search", files={"image": image.read_bytes()},
                             data={"k": "1"}, timeout=10)
    hits = response.json().get("hits", []) if response.status_code == 200 else []
    return str(hits[0]["product_id"]) if hits else None


def test_an_event_published_while_serving_is_searchable(
        bootstrap: str, unique: str, tmp_path: Path) -> None:
    root = tmp_path / "images"
    root.mkdir()
    first, second = write_image(root / "first.png", 1), write_image(root / "second.png", 2)
    settings = make_settings(bootstrap, unique, tmp_path / "run.db", [root])
    port = free_port()
    settings = settings.model_copy(update={"serve": ServeSettings(port=port)})
    url = f"http://127.0.0.1:{port}"
    send(bootstrap, settings.kafka.topic, [upsert_payload("first", 1, [str(first)])])
    seen: dict[str, Any] = {}

    def client() -> None:
        try:
            wait_for(lambda: _ok(f"{url}/readyz"), 60, "ready")
            wait_for(lambda: top_hit(url, first) == "first", 60, "the first product")
            published = time.monotonic()
            send(bootstrap, settings.kafka.topic, [upsert_payload("second", 1, [str(second)])])
            wait_for(lambda: top_hit(url, second) == "second", 60, "the second product")
            seen["freshness_s"] = time.monotonic() - published
            time.sleep(0.3)  # the batch's on_batch (metrics) runs right after its commit
            seen["metrics"] = requests.get(f"{url}/metrics", timeout=10).text
        except BaseException as exc:
            seen["error"] = exc
        finally:
            os.kill(os.getpid(), signal.SIGINT)  # the runner's handler: finish and commit

    thread = threading.Thread(target=client, daemon=True)
    thread.start()
    code = run_with(settings, TinyEmbedder(), open_versions(settings, create=True))
    thread.join(10)
    assert "error" not in seen, seen.get("error")
    assert code == 0
    print(f"run: event -> searchable through the API in {seen['freshness_s']:.2f}s")
    assert seen["freshness_s"] < FRESHNESS_TARGET_S
    metrics = seen["metrics"]
    for series in ('lookalike_ingest_events_total{outcome="applied",reason=""}',
                   "lookalike_ingest_rows_written_total",
                   "lookalike_ingest_freshness_seconds_count",
                   'lookalike_ingest_batch_stage_duration_seconds_count{stage="embed"}',
                   f'lookalike_ingest_consumer_lag_events{{partition="0",topic="{settings.kafka.topic}"}}',
                   'lookalike_model_serving_info{model_version="tiny-thumb-v1"} 1.0',
                   'lookalike_http_requests_total{endpoint="/v1/search",status="200"}',
                   'lookalike_search_stage_duration_seconds_count{stage="embed"}',
                   'lookalike_search_stage_duration_seconds_count{stage="milvus"}'):
        assert series in metrics, series
    applied = [line for line in metrics.splitlines()
               if line.startswith('lookalike_ingest_events_total{outcome="applied"')]
    assert float(applied[0].split()[-1]) == 2.0


def _ok(url: str) -> bool:
    try:
        return requests.get(url, timeout=5).status_code == 200
    except requests.RequestException:
        return False


def test_run_on_a_taken_port_fails_before_the_model_warms_up(tmp_path: Path) -> None:
    settings = make_settings(f"127.0.0.1:{free_port()}", "taken", tmp_path / "run.db", [])
    embedder = WarmingEmbedder()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        settings = settings.model_copy(update={"serve": ServeSettings(port=port)})
        try:
            with pytest.raises(UserError, match=f"cannot listen on 127.0.0.1:{port}: the "
                               "port is in use by another process"):
                run_with(settings, embedder, open_versions(settings, create=True))
        finally:
            close_stores()
    assert embedder.warm_ups_started == 0


def test_serve_waits_for_the_model_warm_up_before_it_returns(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Stopped (SIGINT) a moment after it answers, while the model still warms up."""
    embedder = WarmingEmbedder(warm_up_s=1.5)
    monkeypatch.setattr(commands_serve, "build_embedder", lambda _settings: embedder)
    db = serving_database(tmp_path / "serve.db")
    port = free_port()
    head: dict[str, int] = {}

    def stop_once_answering() -> None:
        try:
            wait_for(lambda: _ok(f"http://127.0.0.1:{port}/livez"), 30, "/livez")
            head["status"] = requests.head(f"http://127.0.0.1:{port}/livez", timeout=5
                                           ).status_code
        finally:
            os.kill(os.getpid(), signal.SIGINT)  # serve's handler: stop gracefully

    thread = threading.Thread(target=stop_once_answering, daemon=True)
    thread.start()
    assert main(["serve", "--port", str(port), "--milvus-uri", str(db)]) == 0
    thread.join(5)
    assert head == {"status": 200}
    assert (embedder.warm_ups_started, embedder.warm_ups_done) == (1, 1)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stop_signal_while_serve_starts_stops_it_gracefully(
        sig: signal.Signals, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """While the model loaded, SIGTERM ended ``serve`` with exit 143 and SIGINT with 130, where
    once it answered either stopped it gracefully with 0. The signal is held until the API
    can stop, which then stops before it serves."""
    embedder = WarmingEmbedder()

    def model_loading(_settings: Any) -> WarmingEmbedder:
        os.kill(os.getpid(), sig)
        return embedder

    monkeypatch.setattr(commands_serve, "build_embedder", model_loading)
    db = serving_database(tmp_path / "serve.db")
    assert main(["serve", "--port", str(free_port()), "--milvus-uri", str(db)]) == 0
    assert (embedder.warm_ups_started, embedder.warm_ups_done) == (1, 1)


def test_a_second_signal_while_serve_starts_stops_it_at_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    def model_loading(_settings: Any) -> WarmingEmbedder:
        os.kill(os.getpid(), signal.SIGTERM)  # held
        os.kill(os.getpid(), signal.SIGTERM)  # stops here
        raise AssertionError("not stopped by the second signal")

    monkeypatch.setattr(commands_serve, "build_embedder", model_loading)
    db = serving_database(tmp_path / "serve.db")
    assert main(["serve", "--port", str(free_port()), "--milvus-uri", str(db)]) == 143
    assert capsys.readouterr().err.strip().endswith(
        "lookalike serve: error: stopped by SIGTERM before it finished")


@pytest.mark.parametrize("command", ["run", "ingest"])
def test_sigterm_while_ingest_starts_stops_it_before_the_first_poll(
        command: str, bootstrap: str, unique: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """As for ``serve``: exit 143 while the model loaded, 0 once ingest polled."""
    from lookalike import commands

    def model_loading(_settings: Any) -> TinyEmbedder:
        os.kill(os.getpid(), signal.SIGTERM)
        return TinyEmbedder()

    monkeypatch.setattr(commands_serve if command == "run" else commands, "build_embedder",
                        model_loading)
    argv = [command, "--bootstrap-servers", bootstrap, "--topic", f"products-{unique}",
            "--group-id", f"g-{unique}", "--milvus-uri", str(tmp_path / "m.db")]
    with caplog.at_level(logging.INFO):
        code = main([*argv, *(["--port", str(free_port())] if command == "run" else [])])
    assert code == 0
    assert "SIGTERM came while starting: stopping before the first poll" in caplog.text
    assert "ingest finished stopped_by=SIGTERM batches=0" in caplog.text


@pytest.mark.model
def test_sigterm_at_any_point_of_the_start_of_run_exits_zero(
        bootstrap: str, unique: str, tmp_path: Path) -> None:
    """What a shell saw: ``lookalike run`` sent SIGTERM a second after it started (in the
    imports, Keras' among them) was killed by it (143, no word); stopped later in its start,
    143 with one line, or a pydantic ``SchemaError`` traceback (exit 1) where the signal
    landed in FastAPI's import."""
    argv = [sys.executable, "-m", "lookalike", "run", "--bootstrap-servers", bootstrap,
            "--topic", f"products-{unique}", "--group-id", f"g-{unique}",
            "--milvus-uri", str(tmp_path / "run.db"), "--port", str(free_port())]
    proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        time.sleep(1.0)  # starting: nothing of it can answer yet
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err[-3000:]
    assert "error:" not in err and "Traceback" not in err, err[-3000:]
    assert "ingest finished stopped_by=SIGTERM" in err
