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

This file is also the child's program (``python lite_process.py PATH LOCK_WAIT_S``); it
imports only the standard library and milvus_lite, so it runs whether or not the product is
installed.
"""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
import time

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

    def __init__(self, proc: subprocess.Popen[bytes], port: int, path: str) -> None:
        self._proc = proc
        self.port = port
        self.path = path

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self._proc.pid

    def alive(self) -> bool:
        return self._proc.poll() is None

    @classmethod
    def start(cls, path: str, *, timeout_s: float = START_TIMEOUT_S,
              lock_wait_s: float | None = None) -> LiteProcess:
        """Start the child on ``path`` (a Lite data folder) and wait for its port.

        ``lock_wait_s`` (default :data:`LOCK_WAIT_S`): how long the child waits for a
        database another process holds before it reports it locked."""
        path = os.path.abspath(path)
        wait = LOCK_WAIT_S if lock_wait_s is None else lock_wait_s
        proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), path, str(wait)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=None,
        )
        assert proc.stdout is not None
        waited = timeout_s + wait
        line = _read_line(proc, waited)
        if line.startswith("port "):
            return cls(proc, int(line.split()[1]), path)
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


def _child(path: str, lock_wait_s: float) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    deadline = time.monotonic() + lock_wait_s
    try:
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
    print(f"port {port}", flush=True)
    os.dup2(2, 1)  # nothing reads stdout from here on: a stray print must not fill the pipe
    try:
        while sys.stdin.buffer.read(65536):
            pass  # nothing is sent; EOF is the signal to stop
    finally:
        server.stop(grace=5).wait()
        db.close()
    return 0


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1], float(sys.argv[2])))
