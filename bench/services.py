"""Processes the benchmark harnesses start and stop themselves: a Milvus server on a port of
their own (through ``scripts/milvus_server.sh``, the one place that knows how to run it), and
the resident memory of a process tree. Shared by ``bench/faults.py`` and ``bench/scale.py``.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MILVUS_SCRIPT = REPO / "scripts" / "milvus_server.sh"


class ServiceError(RuntimeError):
    """A service the harness needs could not be started or stopped."""


def milvus_venv() -> Path | None:
    """The virtualenv holding the ``milvus`` server package: ``$MILVUS_VENV``, else the
    ``.venv-milvus`` that ``.ci/run`` creates in the repository, else none."""
    from_env = os.environ.get("MILVUS_VENV")
    if from_env:
        return Path(from_env)
    local = REPO / ".venv-milvus"
    return local if (local / "bin" / "milvus-server").exists() else None


def milvus_available() -> bool:
    venv = milvus_venv()
    if venv is not None:
        return (venv / "bin" / "milvus-server").exists()
    return bool(os.environ.get("MILVUS_SERVER_BIN") or shutil.which("milvus-server"))


class MilvusServer:
    """A Milvus standalone server in ``data_dir`` on ``127.0.0.1:port``.

    Its embedded etcd listens on ``etcd_port`` (clients) and ``etcd_port + 1`` (peers): the
    launcher moves the client port off a busy default but not the peer port (2380), so a
    second server on the machine fails to start ("bind: address already in use") unless
    both are set through Milvus' ``ETCD_CONFIG_PATH`` / ``ETCD_ENDPOINTS`` variables.

    ``stop()`` keeps the data, so ``start()`` again is a server restart (the outage
    scenario); ``remove()`` deletes the folder.
    """

    def __init__(self, data_dir: Path, port: int, etcd_port: int) -> None:
        self.data_dir = data_dir
        self.port = port
        self.etcd_port = etcd_port

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _script(self, *args: str, timeout_s: float) -> None:
        env = dict(os.environ)
        etcd_config = self.data_dir / "embed-etcd.yaml"
        client = f"http://127.0.0.1:{self.etcd_port}"
        peer = f"http://127.0.0.1:{self.etcd_port + 1}"
        etcd_config.write_text(
            f"listen-client-urls: {client}\nadvertise-client-urls: {client}\n"
            f"listen-peer-urls: {peer}\ninitial-advertise-peer-urls: {peer}\n"
            f"initial-cluster: default={peer}\n"
        )
        env["ETCD_CONFIG_PATH"] = str(etcd_config)
        env["ETCD_ENDPOINTS"] = f"127.0.0.1:{self.etcd_port}"
        env["MILVUS_START_TIMEOUT"] = str(int(timeout_s))
        venv = milvus_venv()
        if venv is not None:
            env["MILVUS_VENV"] = str(venv)
        done = subprocess.run(
            ["bash", str(MILVUS_SCRIPT), *args], env=env, capture_output=True, text=True,
            timeout=timeout_s, check=False,
        )
        if done.returncode != 0:
            raise ServiceError(
                f"milvus_server.sh {' '.join(args)} failed: {(done.stderr or done.stdout)[-800:]}"
            )

    def start(self, timeout_s: float = 240.0) -> None:
        """Start (or restart) and wait until it answers. After a stop the port stays
        unbindable while the old connections sit in TIME_WAIT (up to 60 s); the launcher would
        then pick another port, so this waits for the port first."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + 90
        while not _bindable(self.port) and time.monotonic() < deadline:
            time.sleep(1)
        self._script("start", str(self.data_dir), str(self.port), timeout_s=timeout_s)

    def stop(self) -> None:
        self._script("stop", str(self.data_dir), timeout_s=90.0)

    def server_pid(self) -> int | None:
        """The ``milvus run standalone`` process (the launcher's child)."""
        pidfile = self.data_dir / "milvus-server.pid"
        if not pidfile.exists():
            return None
        launcher = int(pidfile.read_text().strip())
        children = child_pids(launcher)
        return children[0] if children else None

    def remove(self) -> None:
        shutil.rmtree(self.data_dir, ignore_errors=True)


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def child_pids(pid: int) -> list[int]:
    """Direct children of ``pid`` (from /proc; empty when it is gone)."""
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out.extend(int(c) for c in (task / "children").read_text().split())
        except OSError:
            continue
    return out


def tree_pids(pid: int) -> list[int]:
    """``pid`` and all its descendants (those alive when /proc was read)."""
    out, stack = [], [pid]
    while stack:
        current = stack.pop()
        out.append(current)
        stack.extend(child_pids(current))
    return out


def tree_rss_bytes(pid: int) -> int:
    """Resident memory of ``pid`` and all its descendants (VmRSS from /proc)."""
    total = 0
    for current in tree_pids(pid):
        try:
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
                    break
        except OSError:
            continue
    return total


def tree_cpu_seconds(pid: int) -> float:
    """CPU time (user + system) used so far by ``pid`` and its living descendants."""
    ticks = 0
    for current in tree_pids(pid):
        try:  # fields 14 and 15 of /proc/PID/stat, counted after the ")" closing the name
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")
