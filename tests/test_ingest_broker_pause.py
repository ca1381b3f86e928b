"""A broker that stops answering mid-ingest is waited out (a private Tansu, frozen by SIGSTOP).

Tansu keeps its state in memory, so the outage is a freeze rather than a restart: connections
stay open and every request times out, which is what a hung or partitioned broker looks like.
Ingest must not exit, must not commit what it did not write, and must finish the topic once
the broker answers again.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pymilvus import MilvusClient

from ingest.runner import RunReport
from ingest.stages import Batch
from lookalike.broker import LocalBroker, tansu_binary
from tests.fakes import TinyEmbedder
from tests.pipeline_support import (
    committed_and_end,
    make_settings,
    rows,
    run_until_caught_up,
    send,
    upsert_payload,
    write_image,
)

pytestmark = pytest.mark.kafka

FREEZE_S = 35.0


@pytest.fixture
def broker() -> Iterator[LocalBroker]:
    try:
        tansu_binary()
    except Exception as exc:
        pytest.skip(f"no tansu binary: {exc}")
    port = int(os.environ.get("LOOKALIKE_TEST_PRIVATE_BROKER_PORT", "0")) or None
    with LocalBroker(port=port) as started:
        yield started


def test_a_frozen_broker_is_waited_out(broker: LocalBroker, unique: str, tmp_path: Path) -> None:
    root = tmp_path / "images"
    root.mkdir()
    for i in range(4):
        write_image(root / f"p{i}.png", seed=i)
    bootstrap = broker.bootstrap_servers
    settings = make_settings(bootstrap, unique, tmp_path / "m.db", [root], batch_events=4)
    payloads: list[object] = [
        upsert_payload(f"p{i}", 1, [f"p{i % 4}.png"]) for i in range(40)
    ]
    payloads.insert(3, b"{poison")  # a dead letter early on: the DLQ must survive it too
    send(bootstrap, settings.kafka.topic, payloads)
    froze = threading.Event()

    def freeze_once(batch: Batch, report: RunReport) -> None:
        if report.batches == 2 and not froze.is_set() and broker.pid is not None:
            froze.set()
            os.kill(broker.pid, signal.SIGSTOP)
            threading.Timer(FREEZE_S, os.kill, (broker.pid, signal.SIGCONT)).start()

    client = MilvusClient(str(tmp_path / "m.db"))
    started = time.monotonic()
    report = run_until_caught_up(settings, TinyEmbedder(), client, on_batch=freeze_once)
    assert froze.is_set() and time.monotonic() - started >= FREEZE_S
    assert report.totals.applied == 40 and report.totals.dead_lettered == 1
    assert {r["product_id"] for r in rows(client, settings)} == {f"p{i}" for i in range(40)}
    for committed, end in committed_and_end(bootstrap, settings).values():
        assert committed == end
