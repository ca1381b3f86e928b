"""Fetch stage: image reference -> bytes, with every way of failing turned into a reason.

Three sources are allowed: http(s) URLs, local paths that resolve inside configured roots (no
traversal through ``..`` or symlinks), and inline base64 bytes. A failure is an
:class:`~schema.errors.ItemError` for that image alone.

URLs are fetched with a small HTTP/1.1 client of our own rather than ``requests``, because the
guarantees below need the socket:

* **Egress policy** (ingest/egress.py): the host is resolved once, every address checked, and
  the socket connects to a checked address; TLS still verifies the certificate and sends SNI
  for the *host name*. Every redirect hop is checked the same way, and hops are capped.
* **One deadline per image** covering connect, TLS, headers, body and retries: a watchdog
  shuts the socket down when it passes, so a server dribbling one byte a second cannot hold a
  fetch worker (or the batch waiting for it) longer than the deadline.
* **Bounded retries** with exponential backoff and jitter for connection errors, timeouts,
  429 and 5xx (``Retry-After`` honoured up to a cap), all inside the deadline.
* **A per-host concurrency limit**, below the number of fetch workers, so one shop's slow CDN
  cannot take every fetch worker. Ingest's images wait for a host's free slot in a queue of
  their own, not on a worker (ingest/fetch_queue.py); direct callers wait on the slot, within
  their deadline.
* **Hosts that keep timing out rest**: after ``HOST_TRIP_AFTER`` images of a host in a row timed
  out, its next images fail at once (``timeout``) for ``host_rest_s``, doubling while it stays
  silent: a hung host costs one deadline, not one deadline per image.

``requests-hardened`` was considered: it pins the connected address and re-checks redirects,
but checks only the first resolved address, has no allow-list of networks or hosts, and has
no total deadline; the deadline alone needs socket access, hence this module.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import heapq
import http.client
import logging
import os
import random
import socket
import ssl
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from ipaddress import IPv6Address
from pathlib import Path
from urllib.parse import urljoin, urlsplit

from requests.utils import requote_uri

from ingest.egress import Address, EgressPolicy
from lookalike.settings import HOST_TRIP_AFTER, MAX_HOST_REST_S, ImageSettings
from schema.errors import ItemError, Reason
from schema.events import ImageRef, url_problem

log = logging.getLogger(__name__)

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_CHUNK = 65536


_DEFAULTS = ImageSettings()
"""The defaults below are the settings' (lookalike/settings.py defines them, once)."""


@dataclass(frozen=True)
class FetchPolicy:
    """How URLs are fetched: deadlines, retries, concurrency (defaults: ``ImageSettings``)."""

    deadline_s: float = _DEFAULTS.timeout_s
    """Everything for one image, retries included."""
    max_attempts: int = _DEFAULTS.max_attempts
    backoff_s: float = _DEFAULTS.retry_backoff_s
    """First retry delay; doubles per attempt, with jitter."""
    retry_after_max_s: float = _DEFAULTS.retry_after_max_s
    per_host: int = _DEFAULTS.per_host_connections
    """Connections to one host at once (a waiting fetch counts against its deadline)."""
    max_redirects: int = _DEFAULTS.max_redirects
    batch_budget_s: float = _DEFAULTS.batch_fetch_budget_s
    """Most time one batch's images may take to fetch (ingest/fetch_queue.py)."""
    host_rest_s: float = _DEFAULTS.host_rest_s
    """First rest of a host whose images keep timing out; 0: hosts never rest."""


_MAX_HOSTS = 10_000
"""Hosts remembered at most; those not resting are forgotten first."""


class _Retryable(Exception):
    def __init__(self, error: ItemError, retry_after_s: float | None = None) -> None:
        super().__init__(str(error))
        self.error = error
        self.retry_after_s = retry_after_s


class _Watchdog:
    """Shuts sockets down at their deadlines, from one thread for all fetches.

    ``shutdown()`` makes a blocked ``recv`` or ``send`` return at once; the fetch then sees a
    closed connection and, because its deadline passed, reports ``timeout``."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, socket.socket]] = []
        self._cond = threading.Condition()
        self._seq = 0
        self._thread: threading.Thread | None = None

    def watch(self, sock: socket.socket, deadline: float) -> None:
        with self._cond:
            self._seq += 1
            heapq.heappush(self._heap, (deadline, self._seq, sock))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="fetch-watchdog",
                                                daemon=True)
                self._thread.start()
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._heap:
                    self._cond.wait()
                deadline, _, sock = self._heap[0]
                now = time.monotonic()
                if deadline > now:
                    self._cond.wait(deadline - now)
                    continue
                heapq.heappop(self._heap)
            if sock.fileno() != -1:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


class _HostRest:
    """Which hosts just timed out, and until when their images fail at once.

    A host that accepts connections and never answers costs each of its images the whole
    deadline; without this, a batch with 64 of them took 64 / workers deadlines. After
    ``HOST_TRIP_AFTER`` timeouts in a row a host rests for ``rest_s``; when the rest is over its
    next image is tried, and one more timeout makes it rest twice as long (up to
    ``MAX_HOST_REST_S``). Any answer from the host (an image, an HTTP status) forgets all that."""

    def __init__(self, rest_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._rest_s = rest_s
        self._clock = clock
        self._lock = threading.Lock()
        self._timeouts: dict[str, int] = {}
        self._until: dict[str, tuple[float, float]] = {}
        """host -> (rest ends, length of that rest)."""

    def resting(self, host: str) -> ItemError | None:
        """The failure for an image of ``host`` while it rests, else None."""
        with self._lock:
            until, rest_s = self._until.get(host, (0.0, 0.0))
            left = until - self._clock()
            if left <= 0:
                return None
            timeouts = self._timeouts.get(host, 0)
        return ItemError(
            Reason.TIMEOUT,
            f"{host}: not tried, {timeouts} of its images in a row timed out; it rests "
            f"{left:.1f}s more of {rest_s:g}s (LOOKALIKE_IMAGES__HOST_REST_S)",
        )

    def suspect(self, host: str) -> bool:
        """Whether the host's last image timed out and nothing has answered since."""
        with self._lock:
            return host in self._timeouts

    def timed_out(self, host: str) -> None:
        if self._rest_s <= 0:
            return
        with self._lock:
            now = self._clock()
            if len(self._timeouts) >= _MAX_HOSTS:
                self._forget(now)
            count = self._timeouts.get(host, 0) + 1
            self._timeouts[host] = count
            until, last = self._until.get(host, (0.0, 0.0))
            if count < HOST_TRIP_AFTER or until > now:  # fetches started before it rested
                return
            rest_s = min(MAX_HOST_REST_S, last * 2 if last else self._rest_s)
            self._until[host] = (now + rest_s, rest_s)
        log.warning("image host %s timed out %d times in a row: its images fail at once for "
                    "%.0fs", host, count, rest_s)

    def answered(self, host: str) -> None:
        with self._lock:
            self._timeouts.pop(host, None)
            self._until.pop(host, None)

    def _forget(self, now: float) -> None:
        for host in [h for h in self._timeouts if self._until.get(h, (0.0, 0.0))[0] <= now]:
            self._timeouts.pop(host, None)
            self._until.pop(host, None)


class ImageFetcher:
    """Gets the raw bytes of an image reference. Thread-safe: one instance serves a pool."""

    def __init__(
        self,
        roots: Sequence[Path],
        *,
        timeout_s: float = _DEFAULTS.timeout_s,
        max_bytes: int = _DEFAULTS.max_bytes,
        egress: EgressPolicy | None = None,
        policy: FetchPolicy | None = None,
        tls: ssl.SSLContext | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._roots = [Path(r).resolve() for r in roots]
        self._max_bytes = max_bytes
        self._egress = egress or EgressPolicy()
        self._policy = policy or FetchPolicy(deadline_s=timeout_s)
        self._sleep = sleep
        self._tls = tls or _tls_context()
        self._watchdog = _Watchdog()
        self._rest = _HostRest(self._policy.host_rest_s)
        self._resolver = concurrent.futures.ThreadPoolExecutor(
            max_workers=8, thread_name_prefix="resolve"
        )
        self._slots: weakref.WeakValueDictionary[str, threading.BoundedSemaphore] = (
            weakref.WeakValueDictionary()
        )
        self._slots_lock = threading.Lock()

    @property
    def deadline_s(self) -> float:
        return self._policy.deadline_s

    @property
    def policy(self) -> FetchPolicy:
        return self._policy

    def fetch(self, image: ImageRef, *, cutoff: float | None = None) -> bytes:
        """The image's bytes, or an :class:`ItemError`. ``cutoff``: a ``time.monotonic()``
        by which the caller needs the answer (a batch's fetch budget), when it comes before
        the image's own deadline; an image it cuts short fails as ``timeout`` too."""
        if image.data is not None:
            data = image.inline_bytes()
            self._check_size(len(data))
            return data
        if image.url is not None:
            return self._fetch_url(image.url, cutoff)
        assert image.path is not None
        return self._read_path(image.path)

    @staticmethod
    def host_of(image: ImageRef) -> str | None:
        """The host an image URL is fetched from (the key of the per-host limit and of the
        rests); None for paths, inline bytes and URLs without a usable host."""
        return _host_key(image.url) if image.url is not None else None

    def resting(self, host: str) -> ItemError | None:
        """The failure an image of ``host`` gets at once while the host rests, else None."""
        return self._rest.resting(host)

    def suspect(self, host: str) -> bool:
        """Whether the last image of ``host`` timed out and nothing has answered since: its
        next image had better be tried alone (a second timeout makes it rest)."""
        return self._rest.suspect(host)

    def _check_size(self, size: int) -> None:
        if size > self._max_bytes:
            raise ItemError(Reason.IMAGE_TOO_LARGE, f"{size} bytes > limit {self._max_bytes}")
        if size == 0:
            raise ItemError(Reason.EMPTY_IMAGE, "0 bytes")

    # -- local paths --------------------------------------------------------------------

    def resolve_path(self, path: str) -> Path:
        """The real file a path refers to, if it lies inside one of the roots."""
        if not self._roots:
            raise ItemError(
                Reason.PATH_NOT_ALLOWED,
                "local image paths are refused: no image root is set (--image-root DIR or "
                "LOOKALIKE_IMAGES__ROOTS)",
            )
        candidate = Path(path)
        bases: list[Path | None] = [None] if candidate.is_absolute() else list(self._roots)
        for base in bases:
            try:
                real = (candidate if base is None else base / candidate).resolve()
            except (OSError, RuntimeError, ValueError):  # symlink loops, NUL bytes
                raise ItemError(Reason.PATH_NOT_ALLOWED, f"{path} cannot be resolved") from None
            if not any(real.is_relative_to(root) for root in self._roots):
                raise ItemError(Reason.PATH_NOT_ALLOWED, f"{path} is outside the image roots")
            if real.is_file():
                return real
        raise ItemError(Reason.NOT_FOUND, f"{path} not found under the image roots")

    def _read_path(self, path: str) -> bytes:
        real = self.resolve_path(path)
        try:
            size = os.stat(real).st_size
            self._check_size(size)
            with open(real, "rb") as fh:
                return fh.read(self._max_bytes + 1)
        except OSError as exc:
            raise ItemError(Reason.UNREADABLE, f"{path}: {exc.strerror or exc}") from None

    # -- URLs ---------------------------------------------------------------------------

    def _fetch_url(self, url: str, cutoff: float | None) -> bytes:
        """The attempts, with the host's rest checked before and noted after."""
        host = _host_key(url)
        if host is not None and (resting := self._rest.resting(host)) is not None:
            raise resting
        own = time.monotonic() + self._policy.deadline_s
        deadline = own if cutoff is None else min(own, cutoff)
        try:
            if time.monotonic() >= deadline:  # the budget ran out before this image's turn
                raise _timeout(host or "the host", self._policy.deadline_s)
            data = self._attempts(url, deadline)
        except ItemError as exc:
            if exc.reason is Reason.TIMEOUT and deadline < own:  # not the host's doing
                raise ItemError(Reason.TIMEOUT, f"{host or url[:200]}: cut off when the "
                                "batch's fetch budget ran out "
                                "(LOOKALIKE_IMAGES__BATCH_FETCH_BUDGET_S)") from None
            if host is not None and exc.reason is Reason.TIMEOUT:
                if not isinstance(exc, _NoSlot):
                    self._rest.timed_out(host)
            elif host is not None and exc.reason is Reason.HTTP_STATUS:
                self._rest.answered(host)
            raise
        if host is not None:
            self._rest.answered(host)
        return data

    def _attempts(self, url: str, deadline: float) -> bytes:
        """Attempts within one deadline; only transient failures are tried again."""
        attempt = 0
        while True:
            attempt += 1
            try:
                return self._follow(url, deadline)
            except _Retryable as exc:
                delay = self._policy.backoff_s * (2 ** (attempt - 1)) * (0.5 + random.random())
                if exc.retry_after_s is not None:
                    delay = max(delay, min(exc.retry_after_s, self._policy.retry_after_max_s))
                if (
                    attempt >= self._policy.max_attempts
                    or time.monotonic() + delay >= deadline
                ):
                    raise exc.error from None
                log.debug("retrying %s in %.2fs after %s", url[:200], delay, exc.error.reason)
                self._sleep(delay)

    def _follow(self, url: str, deadline: float) -> bytes:
        for _hop in range(self._policy.max_redirects + 1):
            location = self._get(url, deadline)
            if isinstance(location, bytes):
                return location
            # A redirect's target meets the rule of an event's URLs, checked before any
            # lookup: a NUL in its host was resolved cut at the NUL, and connected to.
            if (problem := url_problem(location)) is not None:
                raise ItemError(Reason.BAD_REFERENCE, f"{_host_key(url)} redirected to a URL "
                                f"that is refused: {problem}")
            url = location
        raise ItemError(
            Reason.TOO_MANY_REDIRECTS, f"more than {self._policy.max_redirects} redirects"
        )

    def _get(self, url: str, deadline: float) -> bytes | str:
        """One request: the body, or the URL a redirect points to."""
        try:
            parts = urlsplit(url)
        except ValueError:  # events' URLs are checked (url_problem); direct callers' may not be
            raise ItemError(Reason.BAD_REFERENCE, "URL cannot be parsed") from None
        scheme = parts.scheme.lower()
        try:
            host, port = parts.hostname, parts.port
        except ValueError:
            raise ItemError(Reason.BAD_REFERENCE, "invalid port in URL") from None
        if scheme not in ("http", "https") or not host:
            raise ItemError(Reason.BAD_REFERENCE, "only http(s) URLs with a host are fetched")
        if parts.username is not None or parts.password is not None:
            raise ItemError(Reason.BAD_REFERENCE, "URLs with credentials are not fetched")
        port = port or (443 if scheme == "https" else 80)
        addresses = self._resolve(host, port, deadline)
        with self._slot(host, deadline):
            sock = self._connect(host, port, addresses, deadline, tls=scheme == "https")
            try:
                return self._exchange(sock, url, host, port, deadline)
            except (OSError, http.client.HTTPException) as exc:
                raise self._answer_error(host, deadline, exc) from None
            finally:
                sock.close()

    def _resolve(self, host: str, port: int, deadline: float) -> list[Address]:
        """The egress-checked addresses of ``host``, looked up on a resolver thread so that a
        DNS server that never answers costs this image its deadline, not a fetch worker."""
        future = self._resolver.submit(self._egress.resolve, host, port)
        try:
            return future.result(timeout=max(0.0, deadline - time.monotonic()))
        except concurrent.futures.TimeoutError:
            raise _timeout(host, self._policy.deadline_s) from None

    def _slot(self, host: str, deadline: float) -> _Slot:
        with self._slots_lock:
            slot = self._slots.get(host)
            if slot is None:
                slot = threading.BoundedSemaphore(self._policy.per_host)
                self._slots[host] = slot
        return _Slot(slot, host, deadline)

    def _connect(
        self, host: str, port: int, addresses: list[Address], deadline: float, *, tls: bool
    ) -> socket.socket:
        """Connect to the first reachable *checked* address; wrap TLS for the host name."""
        last: OSError | None = None
        for ip in addresses:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            family = socket.AF_INET6 if isinstance(ip, IPv6Address) else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            self._watchdog.watch(sock, deadline)
            try:
                sock.settimeout(remaining)
                sock.connect((str(ip), port))
                if tls:  # wrapping detaches ``sock``: the TLS socket is watched instead
                    wrapped = self._tls.wrap_socket(sock, server_hostname=host)
                    self._watchdog.watch(wrapped, deadline)
                    return wrapped
                return sock
            except ssl.SSLError:
                sock.close()
                if time.monotonic() >= deadline:
                    break
                raise ItemError(Reason.UNREACHABLE, f"{host}: TLS handshake failed") from None
            except OSError as exc:
                sock.close()
                last = exc
        raise self._transport_error(host, deadline, last)

    def _exchange(
        self, sock: socket.socket, url: str, host: str, port: int, deadline: float
    ) -> bytes | str:
        split = urlsplit(url)
        # Percent-encode what a shop left raw (spaces, non-ASCII file names), as browsers do.
        target = requote_uri((split.path or "/") + (f"?{split.query}" if split.query else ""))
        default_port = 443 if split.scheme.lower() == "https" else 80
        host_header = f"[{host}]" if ":" in host else host
        if port != default_port:
            host_header += f":{port}"
        conn = http.client.HTTPConnection(host, port)
        conn.sock = sock
        try:
            conn.putrequest("GET", target, skip_host=True, skip_accept_encoding=True)
        except (http.client.InvalidURL, ValueError, UnicodeError):
            raise ItemError(Reason.BAD_REFERENCE, "URL has characters HTTP cannot send") from None
        conn.putheader("Host", host_header.encode("idna").decode("ascii"))
        conn.putheader("User-Agent", "lookalike-ingest")
        conn.putheader("Accept", "image/*")
        conn.putheader("Accept-Encoding", "identity")
        conn.putheader("Connection", "close")
        sock.settimeout(max(0.001, deadline - time.monotonic()))
        conn.endheaders()
        response = conn.getresponse()
        status = response.status
        if status in _REDIRECTS:
            location = response.getheader("Location")
            if not location:
                raise ItemError(Reason.HTTP_STATUS, f"{host} answered HTTP {status} without "
                                "a Location")
            try:
                return urljoin(url, location)
            except ValueError:  # "http://[::1/x": urlsplit raises a bare ValueError
                raise ItemError(Reason.BAD_REFERENCE, f"{host} redirected to a URL that "
                                "cannot be parsed") from None
        if status == 429 or status >= 500:
            raise _Retryable(
                ItemError(Reason.HTTP_STATUS, f"{host} answered HTTP {status}"),
                _retry_after(response.getheader("Retry-After")),
            )
        if status != 200:
            raise ItemError(Reason.HTTP_STATUS, f"{host} answered HTTP {status}")
        declared = response.getheader("Content-Length")
        if declared is not None:
            size = _ascii_int(declared)
            if size is None:  # "²" passes str.isdigit() and fails int(): refused, not a bug
                raise ItemError(Reason.HTTP_STATUS, f"{host} answered HTTP 200 with an invalid "
                                "Content-Length")
            self._check_size(size)
        return self._read_body(sock, response, host, deadline)

    def _read_body(
        self, sock: socket.socket, response: http.client.HTTPResponse, host: str,
        deadline: float,
    ) -> bytes:
        chunks: list[bytes] = []
        total = 0
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _timeout(host, self._policy.deadline_s)
            sock.settimeout(remaining)
            chunk = response.read1(_CHUNK)
            if not chunk:
                break
            total += len(chunk)
            if total > self._max_bytes:
                raise ItemError(
                    Reason.IMAGE_TOO_LARGE, f"{host} sent more than {self._max_bytes} bytes"
                )
            chunks.append(chunk)
        if time.monotonic() >= deadline:  # the watchdog may have cut the body short
            raise _timeout(host, self._policy.deadline_s)
        if response.length:  # Content-Length not met: the connection ended early
            raise _Retryable(ItemError(Reason.UNREACHABLE, f"{host}: answer cut short"))
        data = b"".join(chunks)
        self._check_size(len(data))
        return data

    def _answer_error(self, host: str, deadline: float, exc: BaseException) -> Exception:
        """What a failed exchange means. The host answered, but not in HTTP (a status line
        that is none, ``2000``, an HTTP/0.9 body, 100+ headers, a 70 KB header line):
        ``http_status``, not retried, as another bad answer is. A body cut short, chunked
        (``IncompleteRead``; a bad chunk size reads the same): retried, like one cut short
        of its Content-Length. Anything else (the connection failed): retried."""
        if isinstance(exc, OSError) or time.monotonic() >= deadline:
            return self._transport_error(host, deadline, exc)
        if isinstance(exc, http.client.IncompleteRead):
            return _Retryable(ItemError(Reason.UNREACHABLE, f"{host}: answer cut short"))
        if isinstance(exc, http.client.HTTPException) and not isinstance(
            exc, http.client.ImproperConnectionState | http.client.NotConnected
        ):
            return ItemError(Reason.HTTP_STATUS, f"{host}: bad HTTP answer: {_garbled(exc)}")
        return self._transport_error(host, deadline, exc)

    def _transport_error(self, host: str, deadline: float, exc: BaseException | None) -> Exception:
        """Connection trouble -> a retryable timeout or unreachable. The detail names the
        host, never the socket error: those texts tell a sender which ports are open."""
        if time.monotonic() >= deadline or isinstance(exc, TimeoutError):
            return _Retryable(_timeout(host, self._policy.deadline_s))
        return _Retryable(ItemError(Reason.UNREACHABLE, f"{host}: connection failed"))


class _NoSlot(ItemError):
    """A timeout waiting for a host's slot: says nothing of the host (not counted in its
    rest), only that its other fetches were slow."""


class _Slot:
    """A per-host connection slot, waited for within the image's deadline."""

    def __init__(self, semaphore: threading.BoundedSemaphore, host: str, deadline: float):
        self._semaphore = semaphore
        self._host = host
        self._deadline = deadline

    def __enter__(self) -> None:
        if not self._semaphore.acquire(timeout=max(0.0, self._deadline - time.monotonic())):
            raise _NoSlot(Reason.TIMEOUT, f"{self._host}: no free connection slot in time")

    def __exit__(self, *_exc: object) -> None:
        self._semaphore.release()


def _timeout(host: str, deadline_s: float) -> ItemError:
    return ItemError(Reason.TIMEOUT, f"{host} did not deliver the image within {deadline_s}s")


def _retry_after(value: str | None) -> float | None:
    seconds = None if value is None else _ascii_int(value)
    # HTTP-date forms are rare for images; the backoff applies instead
    return None if seconds is None else float(seconds)


def _garbled(exc: http.client.HTTPException) -> str:
    """What was wrong with an answer, in our words: http.client's messages quote the
    server's bytes (a status line can be anything it sent)."""
    if isinstance(exc, http.client.LineTooLong):
        return str(exc)  # "got more than 65536 bytes when reading header line"
    if isinstance(exc, http.client.UnknownProtocol):
        return "not HTTP/1.x"
    if isinstance(exc, http.client.BadStatusLine):
        return "no valid status line"
    if "headers" in str(exc):  # "got more than 100 headers"
        return "too many headers"
    return type(exc).__name__


def _ascii_int(value: str) -> int | None:
    """A header's decimal number (ASCII digits only: ``"²"`` and ``"١"`` pass ``isdigit()``,
    and int() refuses the first and reads the second), else None."""
    value = value.strip(" \t")
    if not value or len(value) > 20 or not (value.isascii() and value.isdigit()):
        return None
    return int(value)


def _host_key(url: str) -> str | None:
    """A URL's host name as the per-host limit and the rests know it (lower case)."""
    try:
        return urlsplit(url).hostname or None
    except ValueError:
        return None


def _tls_context() -> ssl.SSLContext:
    """Certificate and host-name verification on; certifi's CAs where installed (they come
    with requests), so verification does not depend on the machine's CA store."""
    try:
        import certifi

        return ssl.create_default_context(cafile=certifi.where())
    except ImportError:  # pragma: no cover
        return ssl.create_default_context()
