"""Milvus Lite in a child process (store/lite_process.py): the product's default for a ``.db``
URI. It serves what it was given, keeps the database's one-process lock, stops when the store
closes or the parent dies in any way (its data flushed on a clean stop), and ignores the
Ctrl-C / SIGTERM that reach the whole process group."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from lookalike.app import open_store
from lookalike.errors import UserError
from lookalike.settings import Settings
from schema.collection import CollectionSpec
from store import MilvusStore, StoreError, StoreUnavailableError, ensure_collections, lite_process
from store.lite_process import LiteProcess, LiteProcessError
from tests.milvus_support import DIM, record, unit

REPO = Path(__file__).resolve().parent.parent


def _gone(pid: int, within_s: float = 20.0) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def _write(store: MilvusStore, spec: CollectionSpec, n: int) -> None:
    ensure_collections(store, spec)
    store.upsert(spec.name, [record(f"p{i}", "a", unit(i % DIM)).to_row() for i in range(n)])
    store.flush(spec.name)


def _product_ids(store: MilvusStore, spec: CollectionSpec) -> set[str]:
    ensure_collections(store, spec)  # loaded (a reopened database starts released)
    rows = store.client.query(spec.name, filter='pk != ""', output_fields=["product_id"],
                              limit=100, consistency_level="Strong")
    return {r["product_id"] for r in rows}


def test_a_lite_database_opened_in_a_child_process_serves_and_keeps_its_rows(
        tmp_path: Path) -> None:
    uri = str(tmp_path / "shop.db")
    spec = CollectionSpec(name="lp", dim=DIM)
    store = MilvusStore.open(uri, lite_process=True)
    child = store.lite_process
    assert child is not None and child.alive() and child.pid != os.getpid()
    assert store.engine.is_lite and store.uri == uri
    _write(store, spec, 5)
    assert _product_ids(store, spec) == {f"p{i}" for i in range(5)}
    store.close()
    assert _gone(child.pid), "the child outlived close()"

    again = MilvusStore.open(uri)  # in this process: what the child wrote is on disk
    try:
        assert again.lite_process is None
        assert _product_ids(again, spec) == {f"p{i}" for i in range(5)}
    finally:
        again.close()


def test_a_second_opener_of_the_same_database_is_refused_in_one_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lite_process, "LOCK_WAIT_S", 0.5)
    uri = str(tmp_path / "shop.db")
    first = MilvusStore.open(uri, lite_process=True)
    try:
        with pytest.raises(StoreError, match="another process holds the lock") as err:
            MilvusStore.open(uri, lite_process=True)
        assert "\n" not in str(err.value)
        settings = Settings().model_copy(update={"milvus": Settings().milvus.model_copy(
            update={"uri": uri})})
        with pytest.raises(UserError, match="in use by another process"):
            open_store(settings)
    finally:
        first.close()


def test_the_child_that_cannot_open_its_folder_fails_the_open_in_one_line(
        tmp_path: Path) -> None:
    blocker = tmp_path / "file.db"
    blocker.write_text("not a folder")
    with pytest.raises(LiteProcessError) as err:
        LiteProcess.start(str(blocker), timeout_s=30)
    assert str(blocker) in str(err.value) and "\n" not in str(err.value)


def test_the_child_ignores_sigint_and_sigterm_until_its_parent_lets_go(tmp_path: Path) -> None:
    spec = CollectionSpec(name="lp", dim=DIM)
    store = MilvusStore.open(str(tmp_path / "shop.db"), lite_process=True)
    child = store.lite_process
    assert child is not None
    try:
        os.kill(child.pid, signal.SIGINT)
        os.kill(child.pid, signal.SIGTERM)
        time.sleep(0.5)
        assert child.alive()
        _write(store, spec, 3)  # the parent's last batch still lands
        assert len(_product_ids(store, spec)) == 3
    finally:
        store.close()
    assert not child.alive()


def test_the_child_stops_and_frees_the_database_when_its_parent_is_killed(
        tmp_path: Path) -> None:
    uri = str(tmp_path / "shop.db")
    parent = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys, time
            sys.path.insert(0, {str(REPO)!r})
            from schema.collection import CollectionSpec
            from store import MilvusStore, ensure_collections
            from tests.milvus_support import DIM, record, unit
            store = MilvusStore.open({uri!r}, lite_process=True)
            spec = CollectionSpec(name="lp", dim=DIM)
            ensure_collections(store, spec)
            store.upsert(spec.name, [record("p1", "a", unit(1)).to_row()])
            store.flush(spec.name)
            print(store.lite_process.pid, flush=True)
            time.sleep(600)
        """)],
        stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    child_pid = int(parent.stdout.readline())
    parent.kill()  # SIGKILL: no cleanup code runs in the parent
    parent.wait()
    assert _gone(child_pid), "the child outlived its killed parent"
    store = MilvusStore.open(uri, lite_process=True)  # the lock is free again
    try:
        assert _product_ids(store, CollectionSpec(name="lp", dim=DIM)) == {"p1"}
    finally:
        store.close()


def test_the_setting_chooses_the_child_process_and_defaults_to_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOOKALIKE_MILVUS__URI", str(tmp_path / "a.db"))
    assert Settings().milvus.lite_process is True
    store = open_store(Settings(), create=True)
    try:
        assert store.lite_process is not None and store.lite_process.alive()
    finally:
        store.close()
    monkeypatch.setenv("LOOKALIKE_MILVUS__LITE_PROCESS", "false")
    store = open_store(Settings(), create=True)
    try:
        assert store.lite_process is None
    finally:
        store.close()


def test_a_command_closes_its_store_so_the_next_one_can_open_the_database(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    from lookalike.cli import main

    monkeypatch.setattr(lite_process, "LOCK_WAIT_S", 0.5)  # no waiting out a leftover child
    uri = str(tmp_path / "shop.db")
    MilvusStore.open(uri, lite_process=True).close()
    for _ in range(2):  # in one process, as a test or a notebook runs commands
        assert main(["models", "--milvus-uri", uri]) == 0
    assert "does not exist yet" in capsys.readouterr().out
    MilvusStore.open(uri, lite_process=True).close()  # the lock is free: no child left


def test_a_child_that_died_fails_the_next_call_at_once_not_as_an_outage(
        tmp_path: Path) -> None:
    """A killed Milvus Lite child (the OOM killer, a stray kill) refused every call, which the
    store retried as an outage and ingest waited out for its whole budget (300 s) before it
    failed. Its unflushed rows are gone with it, so it is not started again behind the
    caller's back: the next call fails at once, without retries, naming the exit."""
    spec = CollectionSpec(name="lp", dim=DIM)
    slept: list[float] = []
    store = MilvusStore.open(str(tmp_path / "shop.db"), lite_process=True, sleep=slept.append)
    child = store.lite_process
    assert child is not None
    try:
        _write(store, spec, 3)
        os.kill(child.pid, signal.SIGKILL)
        deadline = time.monotonic() + 20
        while child.alive() and time.monotonic() < deadline:  # reaped by poll()
            time.sleep(0.05)
        with pytest.raises(StoreError) as err:
            store.upsert(spec.name, [record("late", "a", unit(1)).to_row()])
        assert not isinstance(err.value, StoreUnavailableError)  # nothing to wait for
        assert "Milvus Lite process" in str(err.value) and "exited (status -9)" in str(err.value)
        assert "\n" not in str(err.value)
        assert slept == []  # no retry
    finally:
        store.close()


def test_a_failed_call_is_logged_in_one_line_not_as_tracebacks(tmp_path: Path) -> None:
    """A call Milvus Lite fails (a read-only database) printed two tracebacks on stderr, the
    child's (milvus_lite's ``logger.exception``) and pymilvus' (``_log_rpc_error``), around the
    one ``StoreError`` line the command ends with: the child logs one line per record, and the
    parent's pymilvus per-call log is off once a store is open."""
    import logging

    try:
        raise PermissionError("[Errno 1] Operation not permitted: 'wal_data_000002.arrow'")
    except PermissionError:
        record = logging.LogRecord("milvus_lite.adapter.grpc.servicer", logging.ERROR, "x", 1,
                                   "Upsert failed: %s", ("Operation\nnot permitted",),
                                   sys.exc_info())
    line = lite_process._OneLine("milvus-lite %(levelname)s %(name)s: %(message)s").format(record)
    assert line == ("milvus-lite ERROR milvus_lite.adapter.grpc.servicer: Upsert failed: "
                    "Operation not permitted")
    store = MilvusStore.open(str(tmp_path / "shop.db"))
    try:
        assert not logging.getLogger("pymilvus.decorators").isEnabledFor(logging.ERROR)
    finally:
        store.close()
