"""A consumer killed mid-batch loses nothing and duplicates nothing; SIGTERM exits cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pymilvus import MilvusClient

from tests.pipeline_support import (
    committed_and_end,
    make_settings,
    rows,
    send,
    upsert_payload,
    write_image,
)

pytestmark = pytest.mark.kafka
REPO = Path(__file__).resolve().parent.parent
N = 24


def start_child(bootstrap: str, unique: str, db: Path, root: Path, *extra: str,
                log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-m", "tests.ingest_child", bootstrap, unique, str(db), str(root), *extra],
        cwd=REPO, env=env, stdout=open(log, "ab"), stderr=subprocess.STDOUT,
    )


def wait_for(log: Path, needle: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if needle in log.read_text(errors="replace"):
            return
        time.sleep(0.05)
    raise AssertionError(f"{needle!r} not in {log}:\n{log.read_text(errors='replace')[-3000:]}")


def signal_after_first_batch(child: subprocess.Popen[bytes], log: Path, sig: signal.Signals,
                             wait_s: float) -> int:
    """Send ``sig`` once the child committed one batch (others in flight); its exit code.
    A child still running afterwards is killed, so no test leaves one behind."""
    try:
        wait_for(log, "batch=1 ", 60)
        child.send_signal(sig)
        return child.wait(wait_s)
    finally:
        if child.poll() is None:
            child.kill()


@pytest.fixture
def published(bootstrap: str, unique: str, tmp_path: Path) -> tuple[Path, Path]:
    root = tmp_path / "images"
    root.mkdir()
    for i in range(N):
        write_image(root / f"p{i}.png", seed=100 + i)
    settings = make_settings(bootstrap, unique, tmp_path / "m.db", [root])
    from ingest.topics import ensure_topics

    ensure_topics(bootstrap, {settings.kafka.topic: 2})
    send(bootstrap, settings.kafka.topic,
         [upsert_payload(f"p{i}", 1, [f"p{i}.png"]) for i in range(N)])
    return root, tmp_path / "m.db"


def test_killed_mid_batch_then_restarted_loses_and_duplicates_nothing(
    bootstrap: str, unique: str, tmp_path: Path, published: tuple[Path, Path]
) -> None:
    root, db = published
    log = tmp_path / "child.log"
    child = start_child(bootstrap, unique, db, root, log=log)
    assert signal_after_first_batch(child, log, signal.SIGKILL, wait_s=10) == -signal.SIGKILL
    restarted = start_child(bootstrap, unique, db, root, "--until-caught-up", log=log)
    assert restarted.wait(120) == 0, log.read_text()[-3000:]

    settings = make_settings(bootstrap, unique, db, [root])
    stored = rows(MilvusClient(str(db)), settings)
    assert sorted(r["product_id"] for r in stored) == sorted(f"p{i}" for i in range(N))
    assert all(c == e for c, e in committed_and_end(bootstrap, settings).values())


def test_sigterm_finishes_in_flight_work_commits_and_exits_zero(
    bootstrap: str, unique: str, tmp_path: Path, published: tuple[Path, Path]
) -> None:
    root, db = published
    log = tmp_path / "child.log"
    child = start_child(bootstrap, unique, db, root, log=log)
    assert signal_after_first_batch(child, log, signal.SIGTERM, wait_s=60) == 0
    text = log.read_text()
    assert "EXIT stopped_by=SIGTERM" in text
    settings = make_settings(bootstrap, unique, db, [root])
    stored = {r["product_id"] for r in rows(MilvusClient(str(db)), settings)}
    committed = sum(c for c, _ in committed_and_end(bootstrap, settings).values())
    # Every committed event is stored; what was not committed will be consumed again.
    assert committed > 0 and len(stored) >= committed
