"""Milvus Lite in a child process of its own.

milvus-lite 3.x is pure Python: opened in-process (pymilvus' default for a ``*.db`` URI) its
gRPC servicer, validation, WAL, memtable and flushes share this process' one GIL with the
pipeline's own Python work (packing, state reads, decode). Run in a child process, the same
engine gets the second core: the scale bench wrote 765 -> 1,075 rows/s at 10k rows and 610 ->
767 at 100k on 2 cores (docs/scaling.md, "Milvus Lite in its own process"). The child speaks
the same gRPC the in-process engine does, on a loopback port the kernel picks, and holds the
database's LOCK, so a second process that opens the same file is still refused, as before.

Lifetime: the child serves until its standard input closes. The parent holds the only write
end, so the child stops when :meth:`LiteProcess.stop` closes it, and also when the parent
dies in any way (even SIGKILL), releasing the LOCK; on a clean stop it drains in-flight calls
and closes the database (a flush). It ignores SIGINT and SIGTERM: a Ctrl-C or a service
manager's SIGTERM reaches the whole process group, and the parent must still be able to write
its last batch and commit before the engine goes.

The child also makes Lite's own write path cheaper (:func:`speed_up_lite`: 749-789 ->
1,031-1,081 rows/s at 100k rows in the scale bench).

This file is also the child's program (``python lite_process.py PATH LOCK_WAIT_S
speedups|plain``); it imports only the standard library, milvus_lite and pyarrow (a
dependency of milvus_lite), so it runs whether or not the product is installed.
"""

from __future__ import annotations

import logging
import os
import selectors
import signal
import subprocess
import sys
import time
from typing import Any

START_TIMEOUT_S = 60.0
"""How long the parent waits for the child to announce its port (~0.7 s on an idle 2-core
machine: the interpreter and milvus_lite's imports; opening a large database replays its WAL)."""
LOCK_WAIT_S = 10.0
"""How long a child waits for the database's LOCK. The child of a killed parent releases it
only once it has drained and closed the database; a restarted parent opens it meanwhile. A
live process that holds it is reported after this wait."""
STOP_TIMEOUT_S = 30.0
"""How long a clean stop may take (drain, flush, close) before the child is killed."""


class LiteProcessError(RuntimeError):
    """The child could not open the database (locked, unreadable) or did not start."""


class LiteProcess:
    """A running child that serves one Milvus Lite database on a loopback port."""

    def __init__(self, proc: subprocess.Popen[bytes], port: int, path: str,
                 speedups: tuple[str, ...] = ()) -> None:
        self._proc = proc
        self.port = port
        self.path = path
        self.speedups = speedups
        """What :func:`speed_up_lite` replaced in the child (empty: nothing)."""

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self._proc.pid

    def alive(self) -> bool:
        return self._proc.poll() is None

    @property
    def returncode(self) -> int | None:
        """The child's exit status once it has exited (negative: the signal that ended it)."""
        return self._proc.poll()

    @classmethod
    def start(cls, path: str, *, timeout_s: float = START_TIMEOUT_S,
              lock_wait_s: float | None = None, speedups: bool = True) -> LiteProcess:
        """Start the child on ``path`` (a Lite data folder) and wait for its port.

        ``lock_wait_s`` (default :data:`LOCK_WAIT_S`): how long the child waits for a
        database another process holds before it reports it locked. ``speedups``: let the
        child apply :func:`speed_up_lite`."""
        path = os.path.abspath(path)
        wait = LOCK_WAIT_S if lock_wait_s is None else lock_wait_s
        proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), path, str(wait),
             "speedups" if speedups else "plain"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=None,
        )
        assert proc.stdout is not None
        waited = timeout_s + wait
        line = _read_line(proc, waited)
        if line.startswith("port "):  # "port 41234 [name,name]"
            words = line.split()
            applied = tuple(words[2].split(",")) if len(words) > 2 else ()
            return cls(proc, int(words[1]), path, applied)
        _reap(proc, 5.0)
        reason = line.removeprefix("error ") if line else (
            f"it exited with status {proc.returncode}" if proc.returncode is not None
            else f"no port after {waited:g} s")
        raise LiteProcessError(f"Milvus Lite process for {path}: {reason}")

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """Close the child's input (it drains, flushes and closes the database) and wait."""
        _reap(self._proc, timeout_s)


def _read_line(proc: subprocess.Popen[bytes], timeout_s: float) -> str:
    """The child's first line, or "" when it exits or stays silent past the deadline."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout_s
    buf = b""
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while b"\n" not in buf:
            left = deadline - time.monotonic()
            if left <= 0 or not sel.select(left):
                return ""
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                break
            buf += chunk
    return buf.split(b"\n", 1)[0].decode("utf-8", "replace").strip()


def _reap(proc: subprocess.Popen[bytes], timeout_s: float) -> None:
    """Close the child's input, wait up to ``timeout_s`` for it to exit, else kill it."""
    if proc.stdin is not None:
        proc.stdin.close()
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


# -- speedups of milvus_lite's write path ------------------------------------------------------

SPEEDUP_SERIES = ("3", "2")
"""The milvus_lite release series whose internals :func:`speed_up_lite` was written against
and tested on (3.2.2). On any other series it replaces nothing."""


def speedups_fit(version: str) -> bool:
    """Whether :func:`speed_up_lite` applies to this milvus_lite version."""
    return tuple(version.split(".")[:2]) == SPEEDUP_SERIES


def speed_up_lite() -> list[str]:
    """Replace three costs of milvus_lite's write path with work that gives the same result;
    returns the names of what was replaced. Only this child calls it: it changes milvus_lite's
    module state for the whole process.

    Measured in a 30k-row fill (py-spy on this child, milvus_lite 3.2.2), of the child's CPU:

    * ``validate_record`` checks every value of a float vector with ``isinstance`` (~0.2 ms per
      1,472-d row): 25 %. :func:`_fast_validate` makes the same check over
      ``set(map(type, vector))``; a row it cannot vouch for goes through the original check,
      which raises its own error.
    * ``MemTable._build_data_table`` (each flush) turns every value of every row into a
      Python object and back (``as_py()``): 13 %. :func:`_build_data_table` takes the rows
      with one Arrow ``take``, as milvus_lite's own ``MemTable`` does for reads.
    * Data files (each flush and compaction; 38 % at 100k rows) were Parquet with dictionary
      encoding and Snappy on every column. Neither shrinks float vectors (118-119 MB per 20k
      rows either way) and both cost: written plain, a vector column writes 2.5x and reads
      5.7x faster. :class:`_PlainVectors` writes list columns so; other columns as before.

    The files stay ordinary Parquet, which any milvus_lite reads (tested)."""
    try:
        import milvus_lite
        import pyarrow.parquet as pq
        from milvus_lite.engine import collection as engine_collection
        from milvus_lite.schema import validation
        from milvus_lite.storage import data_file
        from milvus_lite.storage.memtable import MemTable
    except ImportError:
        return []
    if not speedups_fit(str(getattr(milvus_lite, "__version__", ""))):
        return []
    applied = []
    original = getattr(engine_collection, "validate_record", None)
    find_vector = getattr(validation, "_find_float_vector", None)
    if callable(original) and callable(find_vector):
        engine_collection.validate_record = _fast_validate(original, find_vector)
        applied.append("validate_record")
    if callable(getattr(MemTable, "_build_data_table", None)):
        MemTable._build_data_table = _build_data_table
        applied.append("build_data_table")
    if getattr(data_file, "pq", None) is pq:
        data_file.pq = _PlainVectors(pq)
        applied.append("plain_vectors")
    return applied


class _CheckedVector(list):  # type: ignore[type-arg]
    """A float vector whose values were checked already: the original check's per-value loop
    iterates over nothing. Used only during that call (:func:`_fast_validate`)."""

    def __iter__(self) -> Any:
        return iter(())


_NUMBERS = frozenset({float, int})


def _fast_validate(original: Any, find_vector: Any) -> Any:
    def validate_record(record: dict[str, Any], schema: Any, *args: Any, **kwargs: Any) -> Any:
        field = find_vector(schema)
        value = record.get(field.name) if field is not None else None
        # exact types only: a bool (an int subclass) or a float subclass takes the slow path
        if type(value) is not list or not set(map(type, value)) <= _NUMBERS:
            return original(record, schema, *args, **kwargs)
        record[field.name] = _CheckedVector(value)
        try:
            return original(record, schema, *args, **kwargs)
        finally:
            record[field.name] = value

    return validate_record


def _build_data_table(self: Any, rows: list[tuple[int, int]]) -> Any:
    """``MemTable._build_data_table``: the (batch, row) rows, in order, as a ``data_schema``
    table."""
    import pyarrow as pa

    batches = self._insert_batches
    used = sorted({b for b, _ in rows})
    if not used:
        return self._data_schema.empty_table()
    offsets, total = {}, 0
    for b in used:
        offsets[b] = total
        total += batches[b].num_rows
    table = pa.Table.from_batches([batches[b] for b in used])
    taken = table.take(pa.array([offsets[b] + r for b, r in rows], type=pa.int64()))
    return taken.select(self._data_schema.names).cast(self._data_schema)


class _PlainVectors:
    """``pyarrow.parquet`` for milvus_lite's data files: list (vector) columns written without
    dictionary encoding or compression, the other columns as pyarrow's defaults write them."""

    def __init__(self, pq: Any) -> None:
        self._pq = pq

    def write_table(self, table: Any, where: Any, **kwargs: Any) -> Any:
        import pyarrow as pa

        lists = {f.name for f in table.schema
                 if pa.types.is_list(f.type) or pa.types.is_fixed_size_list(f.type)}
        names = table.schema.names
        kwargs.setdefault("use_dictionary", [n for n in names if n not in lists])
        kwargs.setdefault("compression", {n: "none" if n in lists else "snappy" for n in names})
        return self._pq.write_table(table, where, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pq, name)


# -- the child ---------------------------------------------------------------------------------


class _OneLine(logging.Formatter):
    """The child's log lines on the shared stderr, one line each: Milvus Lite logs a call it
    fails with its traceback (a read-only database: 20 lines), which the parent raises as one
    ``StoreError`` line anyway."""

    def format(self, record: logging.LogRecord) -> str:
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        return " ".join(super().format(record).split())[:500]


def _child(path: str, lock_wait_s: float, speedups: bool) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    handler = logging.StreamHandler()
    handler.setFormatter(_OneLine("milvus-lite %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.WARNING, handlers=[handler])
    deadline = time.monotonic() + lock_wait_s
    applied: list[str] = []
    try:
        if speedups:
            try:
                applied = speed_up_lite()
            except Exception:  # a milvus_lite unlike 3.2.2 inside: serve it, reported as plain
                applied = []
        from milvus_lite.adapter.grpc.server import start_server_in_thread
        from milvus_lite.exceptions import DataDirLockedError

        while True:
            try:
                server, db, port = start_server_in_thread(path, host="127.0.0.1", port=0)
                break
            except DataDirLockedError:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.1)  # a predecessor still closing (its parent was killed)
    except Exception as exc:  # one line for the parent's error message
        detail = " ".join(str(exc).split())[:500]
        print(f"error {type(exc).__name__}: {detail}", flush=True)
        return 1
    print(f"port {port} {','.join(applied)}".rstrip(), flush=True)
    os.dup2(2, 1)  # nothing reads stdout from here on: a stray print must not fill the pipe
    try:
        while sys.stdin.buffer.read(65536):
            pass  # nothing is sent; EOF is the signal to stop
    finally:
        server.stop(grace=5).wait()
        db.close()
    return 0


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1], float(sys.argv[2]), sys.argv[3:4] != ["plain"]))
