"""Outages are waited out (fast: a fake source, a flaky in-memory store, a fake producer).

The runner must keep polling while the store is down (so a real consumer keeps its group),
pause consumption, commit nothing that was not written, resume when the store is back, and
exit non-zero only when the outage outlasts its budget.
"""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from kafka.consumer.fetcher import ConsumerRecord

from ingest import runner as runner_module
from ingest.fetch import ImageFetcher
from ingest.outage import OutageBudgetExceededError, OutageWait
from ingest.runner import IngestError
from schema.versions import ModelRetiredError
from store import StoreError, StoreUnavailableError
from tests.pipeline_support import upsert_payload, write_image
from tests.runner_fakes import FakeSource, FlakyStore, fake_runner, record


def _records(tmp_path: Path, n: int) -> list[ConsumerRecord]:
    out = []
    for i in range(n):
        write_image(tmp_path / f"p{i}.png", seed=i)
        payload = upsert_payload(f"p{i}", 1, [f"p{i}.png"])
        out.append(record(i, json.dumps(payload).encode(), f"p{i}".encode()))
    out.append(record(n, b"{not json", b"junk"))
    return out


def test_store_outage_is_waited_out_and_nothing_committed_unwritten(tmp_path: Path) -> None:
    store = FlakyStore()
    source = FakeSource(_records(tmp_path, 20))
    unwritten_commits: list[int] = []

    def check_commit(offset: int) -> None:  # every offset below a commit must be written
        written = {int(p[1:]) for p in store.states}
        if any(i not in written for i in range(min(offset, 20))):
            unwritten_commits.append(offset)
        if offset >= 8 and not store.down.is_set() and store.failures == 0:
            store.down.set()  # the store goes away after the first batches
            threading.Timer(1.5, store.down.clear).start()

    source.on_commit = check_commit
    with ThreadPoolExecutor(4) as pool:
        runner, producer = fake_runner(ImageFetcher([tmp_path]), store, source, pool, budget_s=30)
        report = runner.run(until_caught_up=True)
    assert store.failures > 0, "the outage happened"
    assert source.polls_while_paused > 0, "the loop kept polling while paused"
    assert unwritten_commits == []
    assert source.committed == 21
    assert sorted(store.states) == sorted(f"p{i}" for i in range(20))
    assert len(store.rows) == 20
    assert report.totals.applied == 20 and report.totals.dead_lettered == 1
    assert [h for h in producer.sent[0][2] if h[0] == "lookalike.reason"] == [
        ("lookalike.reason", b"malformed_json")]


def test_an_outage_longer_than_the_budget_stops_ingest_uncommitted(tmp_path: Path) -> None:
    store = FlakyStore()
    store.down.set()
    source = FakeSource(_records(tmp_path, 3))
    with ThreadPoolExecutor(2) as pool:
        runner, _ = fake_runner(ImageFetcher([tmp_path]), store, source, pool, budget_s=0.5)
        with pytest.raises(IngestError) as info:
            runner.run(until_caught_up=True)
    assert isinstance(info.value.__cause__, OutageBudgetExceededError)
    assert source.commits == []


def test_an_outage_met_by_the_serving_check_is_waited_out(tmp_path: Path) -> None:
    """The serving guard reads the model registry after each write: Milvus going away right
    then is an outage like any other, not the end of ingest (found by `make faults`)."""
    store = FlakyStore()
    checks: list[bool] = []

    def guard() -> None:  # down for the first two checks, like a registry read mid-outage
        checks.append(True)
        if len(checks) <= 2:
            store.down.set()
            threading.Timer(0.3, store.down.clear).start()
            raise StoreUnavailableError("query failed after 4 attempt(s): server unavailable")

    source = FakeSource(_records(tmp_path, 6))
    with ThreadPoolExecutor(2) as pool:
        runner, _ = fake_runner(ImageFetcher([tmp_path]), store, source, pool, budget_s=30,
                                after_write=guard)
        report = runner.run(until_caught_up=True)
    assert len(checks) > 2
    assert source.committed == 7
    assert sorted(store.states) == sorted(f"p{i}" for i in range(6))
    assert report.totals.applied == 6


def test_only_outages_are_waited_out() -> None:
    calls: list[int] = []

    def broken() -> Any:
        calls.append(1)
        raise StoreError("apply failed: a bug")  # not an outage: fails at once

    with pytest.raises(StoreError):
        OutageWait(60, sleep=lambda s: None).call("milvus", broken)
    assert calls == [1]


def test_a_hung_idle_check_never_holds_up_polling(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The serving guard also runs while ingest is idle (a quiet catalog must notice a model
    switch); its Milvus calls have no deadline, so it runs off the poll loop, one at a time,
    and the loop keeps polling (a real consumer keeps its group) until it answers."""
    monkeypatch.setattr(runner_module, "IDLE_CHECK_EVERY_S", 0.05)
    answer = threading.Event()
    checks: list[int] = []
    polls_while_hung: list[int] = []

    def serving_check() -> None:
        checks.append(1)
        answer.wait(10)  # hangs like a Milvus call to a server that does not answer
        raise ModelRetiredError("c now serves model b (c__b); this process writes model a")

    source = FakeSource(_records(tmp_path, 3))
    real_poll = source.poll

    def poll(timeout_ms: int, max_records: int) -> list[ConsumerRecord]:
        if checks and not answer.is_set():
            polls_while_hung.append(1)
            if len(polls_while_hung) == 20:
                answer.set()
        return real_poll(timeout_ms, max_records)

    source.poll = poll  # type: ignore[method-assign]
    with ThreadPoolExecutor(2) as pool:
        runner, _ = fake_runner(ImageFetcher([tmp_path]), FlakyStore(), source, pool,
                                idle_check=serving_check)
        with pytest.raises(IngestError) as info:
            runner.run()
    assert isinstance(info.value.__cause__, ModelRetiredError)
    assert len(polls_while_hung) >= 20 and checks == [1]
    assert source.committed == 4  # the events before the switch; none lost, nothing after
