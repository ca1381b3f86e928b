"""Ingest series from one committed batch, and the ``--metrics-port`` endpoint of ingest
(where it listens: ``ingest.metrics_host``)."""

from __future__ import annotations

import socket
import threading
import time
import urllib.request
from collections import Counter
from contextlib import nullcontext
from types import SimpleNamespace

import pytest
from kafka import TopicPartition
from prometheus_client import CollectorRegistry, generate_latest

from ingest.runner import RunReport
from ingest.stages import Batch, BatchStats
from lookalike import commands
from lookalike.cli import build_parser
from lookalike.commands_serve import serving_ingest_metrics
from lookalike.errors import ExitCode, UserError
from lookalike.settings import Settings
from schema.errors import DEAD_LETTER_REASONS, IMAGE_REASONS
from serve.metrics import IngestMetrics, publish_model_version


def a_batch() -> Batch:
    stats = BatchStats(events=7, applied=3, stale=1, dead_lettered=2, revoked=1, images_ok=5,
                       images_failed=Counter({"http_error": 2, "corrupt_image": 1}),
                       dlq_reasons=Counter({"malformed_json": 1, "no_usable_image": 1}),
                       rows_upserted=5, rows_rewritten=4, rows_deleted=3,
                       decode_s=0.2, embed_s=1.5, write_s=0.1,
                       freshness_ms=[800.0, 1200.0, 2500.0])
    return Batch(1, [], [], 5, 0.0, stats=stats)


def value(text: str, series: str) -> float:
    line = next(ln for ln in text.splitlines() if ln.startswith(series + " "))
    return float(line.split()[-1])


def test_a_batch_fills_the_ingest_series() -> None:
    registry = CollectorRegistry()
    metrics = IngestMetrics(registry)
    metrics.observe_batch(a_batch())
    metrics.observe_batch(a_batch())
    metrics.observe_lag({TopicPartition("t", 0): 7, TopicPartition("t", 1): None})
    metrics.observe_lag({TopicPartition("t", 0): 0})
    text = generate_latest(registry).decode()
    assert value(text, 'lookalike_ingest_events_total{outcome="applied",reason=""}') == 6
    assert value(text, 'lookalike_ingest_events_total{outcome="stale",reason=""}') == 2
    assert value(text, 'lookalike_ingest_events_total{outcome="dead_lettered",'
                       'reason="malformed_json"}') == 2
    assert value(text, 'lookalike_ingest_image_failures_total{reason="http_error"}') == 4
    assert value(text, "lookalike_ingest_images_total") == 10
    assert value(text, "lookalike_ingest_rows_written_total") == 10
    assert value(text, "lookalike_ingest_rows_rewritten_total") == 8
    assert value(text, "lookalike_ingest_rows_deleted_total") == 6
    assert value(text, 'lookalike_ingest_events_total{outcome="revoked",reason=""}') == 2
    assert value(text, "lookalike_ingest_batches_total") == 2
    assert value(text, "lookalike_ingest_freshness_seconds_count") == 6
    assert value(text, 'lookalike_ingest_freshness_seconds_bucket{le="1.0"}') == 2
    assert value(text, "lookalike_ingest_freshness_seconds_sum") == 9.0
    assert value(text, 'lookalike_ingest_batch_stage_duration_seconds_sum{stage="embed"}') == 3.0
    assert value(text, 'lookalike_ingest_consumer_lag_events{partition="0",topic="t"}') == 0
    assert 'partition="1"' not in text  # unknown lag is not reported as 0


def test_outcomes_add_up_to_the_events_of_the_log_line() -> None:
    """``events=`` counts revoked events (left to the partition's new owner); the counter
    had no such outcome, so its outcomes summed short of the log's events."""
    registry = CollectorRegistry()
    IngestMetrics(registry).observe_batch(a_batch())
    text = generate_latest(registry).decode()
    outcomes = sum(float(ln.split()[-1]) for ln in text.splitlines()
                   if ln.startswith("lookalike_ingest_events_total{"))
    assert outcomes == a_batch().stats.events == 7


def test_every_reason_series_exists_at_zero_before_the_first() -> None:
    """An alert on a dead-letter or image-failure reason (its increase, or its absence as a
    sign the exporter broke) needs the series before the first such event."""
    registry = CollectorRegistry()
    IngestMetrics(registry)
    text = generate_latest(registry).decode()
    for reason in DEAD_LETTER_REASONS:
        assert value(text, 'lookalike_ingest_events_total{outcome="dead_lettered",'
                           f'reason="{reason.value}"}}') == 0
    for reason in IMAGE_REASONS:
        assert value(text, f'lookalike_ingest_image_failures_total{{reason="{reason}"}}') == 0
    for outcome in ("applied", "stale", "revoked"):
        assert value(text, f'lookalike_ingest_events_total{{outcome="{outcome}",reason=""}}') == 0
    assert "lookalike_ingest_consumer_lag_events{" not in text


def test_the_lag_series_of_a_revoked_partition_goes() -> None:
    registry = CollectorRegistry()
    metrics = IngestMetrics(registry)
    metrics.observe_lag({TopicPartition("t", 0): 3, TopicPartition("t", 1): 9})
    metrics.observe_lag({TopicPartition("t", 0): 4})  # partition 1 moved to another consumer
    text = generate_latest(registry).decode()
    assert value(text, 'lookalike_ingest_consumer_lag_events{partition="0",topic="t"}') == 4
    assert 'partition="1"' not in text, "its new owner reports it; a stale 9 stayed here"
    metrics.observe_lag({TopicPartition("t", 1): 0})  # handed back
    text = generate_latest(registry).decode()
    assert value(text, 'lookalike_ingest_consumer_lag_events{partition="1",topic="t"}') == 0
    assert 'partition="0"' not in text


def test_ingest_metrics_port_serves_them() -> None:
    args = build_parser().parse_args(["ingest", "--metrics-port", "9109"])
    assert args.metrics_port == 9109
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with serving_ingest_metrics("127.0.0.1", port) as (registry, metrics):
        publish_model_version(registry, "model-x")
        metrics.observe_batch(a_batch())
        url = f"http://127.0.0.1:{port}/metrics"
        text = urllib.request.urlopen(url, timeout=5).read().decode()
    assert 'lookalike_model_serving_info{model_version="model-x"} 1.0' in text
    assert 'lookalike_ingest_events_total{outcome="applied",reason=""} 3.0' in text
    with serving_ingest_metrics("127.0.0.1", port):  # the block released it (ingest ended)
        pass


def test_a_taken_metrics_port_is_one_line() -> None:
    """It was an ``OSError: [Errno 98] Address already in use`` traceback, after the model
    loaded (ingest now opens the endpoint first: tests/test_cli_errors.py)."""
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(UserError) as refused, serving_ingest_metrics("127.0.0.1", port):
            pass
    assert refused.value.code == ExitCode.USAGE
    assert str(refused.value) == (f"cannot serve metrics on 127.0.0.1:{port}: the port is in "
                                  "use by another process (choose another --metrics-port)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def answers(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=5).close()
    except ConnectionRefusedError:
        return False
    return True


@pytest.mark.parametrize(("metrics_host", "reached"), [
    (None, {"127.0.0.1": True, "127.0.0.2": False}),
    ("127.0.0.2", {"127.0.0.1": False, "127.0.0.2": True}),
])
def test_ingest_metrics_listen_on_loopback_unless_told(
    metrics_host: str | None, reached: dict[str, bool], monkeypatch: pytest.MonkeyPatch
) -> None:
    """They listened on every interface (prometheus_client's 0.0.0.0), where ``serve`` keeps
    the API on loopback; now on ``ingest.metrics_host``, 127.0.0.1 unless set (127.0.0.2 is
    loopback too, so the test needs no other interface)."""
    if metrics_host is not None:
        monkeypatch.setenv("LOOKALIKE_INGEST__METRICS_HOST", metrics_host)
    port = free_port()
    seen: dict[str, bool] = {}

    def probe(_settings: Settings) -> None:  # create_topics: the endpoint is open by then
        seen.update((host, answers(host, port)) for host in reached)
        raise UserError("probed")

    monkeypatch.setattr(commands, "create_topics", probe)
    args = build_parser().parse_args(["ingest", "--metrics-port", str(port)])
    with pytest.raises(UserError, match="probed"):
        commands.ingest(Settings(), args)
    assert seen == reached


def test_until_caught_up_keeps_its_metrics_up_for_the_linger(
    monkeypatch: pytest.MonkeyPatch
) -> None:
    """``ingest --until-caught-up --metrics-port`` shut its endpoint as it caught up, before
    any scrape could read the final counts; ``ingest.metrics_linger_s`` keeps it up."""
    monkeypatch.setenv("LOOKALIKE_INGEST__METRICS_LINGER_S", "1.5")
    port = free_port()
    monkeypatch.setattr(commands, "create_topics", lambda _settings: None)
    monkeypatch.setattr(commands, "open_versions", lambda *_a, **_k: None)
    monkeypatch.setattr(commands, "build_embedder", lambda _settings: SimpleNamespace(
        model_version="model-x"))
    monkeypatch.setattr(commands, "warming_up", lambda _embedder: nullcontext())

    def ingest(*_args: object, metrics: IngestMetrics, **_kwargs: object) -> RunReport:
        metrics.observe_batch(a_batch())
        return RunReport(batches=1, stopped_by="caught_up")

    monkeypatch.setattr(commands, "_ingest", ingest)
    scraped: list[str] = []

    def scrape() -> None:  # once the run has ended, while ingest lingers
        time.sleep(0.7)
        scraped.append(urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics",
                                              timeout=5).read().decode())

    scraper = threading.Thread(target=scrape)
    scraper.start()
    started = time.monotonic()
    args = build_parser().parse_args(["ingest", "--until-caught-up", "--metrics-port",
                                      str(port)])
    assert commands.ingest(Settings(), args) == ExitCode.OK
    scraper.join(10)
    assert 1.5 <= time.monotonic() - started < 5
    assert value(scraped[0], 'lookalike_ingest_events_total{outcome="applied",reason=""}') == 3
    assert not answers("127.0.0.1", port), "closed once the linger ended"
