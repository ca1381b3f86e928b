"""Fetch stage: every way an image reference can fail is a reason, for that image alone.

All traffic stays on loopback: refusals are checked to happen *before* connecting (the servers
count requests), and the address classifier is tested on address literals only.
"""

from __future__ import annotations

import base64
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from ipaddress import ip_address
from pathlib import Path
from typing import ClassVar
from urllib.parse import quote, unquote

import pytest

from bench.loopback import SilentServer
from ingest.egress import EgressPolicy, is_public
from ingest.fetch import FetchPolicy, ImageFetcher, _HostRest
from lookalike.broker import free_port
from lookalike.settings import MAX_HOST_REST_S
from schema.errors import ItemError
from schema.events import ImageRef

PAYLOAD = b"\xff\xd8\xff" + b"x" * 1000
LOOPBACK = ["127.0.0.0/8", "::1/128"]


_GARBLED = {
    "/many-headers": b"HTTP/1.1 200 OK\r\n" + b"X-H: v\r\n" * 150 + b"\r\n" + PAYLOAD,
    "/long-header": b"HTTP/1.1 200 OK\r\nX-Long: " + b"a" * 70_000 + b"\r\n\r\n" + PAYLOAD,
    "/status-2000": b"HTTP/1.1 2000 OK\r\nContent-Length: 5\r\n\r\nhello",
    "/http09": PAYLOAD,  # no status line: the body at once
    "/http2": b"HTTP/2.0 200 OK\r\nContent-Length: 5\r\n\r\nhello",
    "/bad-chunk": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n",
}
"""Answers that are not HTTP, as hostile or broken servers send them."""


class _State:
    requests = 0
    active = 0
    max_active = 0
    flaky: ClassVar[dict[str, int]] = {}
    lock = threading.Lock()


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        with _State.lock:
            _State.requests += 1
        self._route()

    def _route(self) -> None:
        path, _, query = self.path.partition("?")
        if path == "/ok.jpg":
            self._send(200, PAYLOAD)
        elif path == "/big.jpg":
            self._send(200, b"x" * 5000)
        elif path == "/big-undeclared.jpg":
            self.send_response(200)
            self.end_headers()  # no Content-Length: the cap must hold while streaming
            for _ in range(10):
                self.wfile.write(b"x" * 1000)
        elif path == "/slow.jpg":
            time.sleep(2)
            self._send(200, PAYLOAD)
        elif path == "/busy.jpg":
            # Counted while the request is held, before its answer: once answered, the
            # client may free its slot and the next request start before this thread
            # runs again, which a count ended after the answer would read as overlap.
            with _State.lock:
                _State.active += 1
                _State.max_active = max(_State.max_active, _State.active)
            time.sleep(0.3)
            with _State.lock:
                _State.active -= 1
            self._send(200, PAYLOAD)
        elif path == "/dribble.jpg":  # a complete header, then one byte every 0.2 s
            self.send_response(200)
            self.send_header("Content-Length", str(len(PAYLOAD)))
            self.end_headers()
            for byte in PAYLOAD:
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
                time.sleep(0.2)
        elif path == "/dribble-headers.jpg":  # the status line and headers, slowly
            for char in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 100:
                self.wfile.write(bytes([char]))
                self.wfile.flush()
                time.sleep(0.2)
        elif path.startswith("/flaky/"):  # fails `query` times with the status in the path
            status = int(path.split("/")[2])
            with _State.lock:
                seen = _State.flaky.get(self.path, 0)
                _State.flaky[self.path] = seen + 1
            if seen < int(query or "1"):
                self.send_response(status)
                self.send_header("Retry-After", "1")
                self.send_header("Content-Length", "0")
                self.end_headers()
            else:
                self._send(200, PAYLOAD)
        elif path == "/superscript-length.jpg":  # Latin-1 0xB2: "²".isdigit() is True
            self.send_response(200)
            self.send_header("Content-Length", "\u00b2")
            self.end_headers()
            self.wfile.write(PAYLOAD)
        elif path == "/superscript-retry.jpg":
            self.send_response(503)
            self.send_header("Retry-After", "\u00b2")
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif path == "/redirect":
            self.send_response(302)
            self.send_header("Location", query)
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif path == "/redirect-raw":  # any Location, control characters included
            self.wfile.write(b"HTTP/1.1 302 Found\r\nLocation: "
                             + unquote(query).replace("PORT", str(self.server.server_address[1]))
                             .encode("latin-1") + b"\r\nContent-Length: 0\r\n\r\n")
        elif path in _GARBLED:
            self.wfile.write(_GARBLED[path])
        elif path == "/loop":
            self.send_response(301)
            self.send_header("Location", "/loop")
            self.send_header("Content-Length", "0")
            self.end_headers()
        else:
            self._send(404, b"no")

    def _send(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: object) -> None:
        pass


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # the fetcher hangs up on oversized or late bodies on purpose


class _QuietServer6(_QuietServer):
    address_family = socket.AF_INET6


def _serve(server: ThreadingHTTPServer) -> None:
    threading.Thread(target=server.serve_forever, daemon=True).start()


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    httpd = _QuietServer(("127.0.0.1", 0), _Handler)
    _serve(httpd)
    yield int(httpd.server_address[1])
    httpd.shutdown()


@pytest.fixture(scope="module")
def server(port: int) -> str:
    return f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def server6() -> Iterator[str]:
    httpd = _QuietServer6(("::1", 0), _Handler)
    _serve(httpd)
    yield f"http://[::1]:{httpd.server_address[1]}"
    httpd.shutdown()


def fetcher(roots: list[Path] | None = None, *, networks: list[str] | None = None,
            hosts: list[str] | None = None, **policy: float) -> ImageFetcher:
    return ImageFetcher(
        roots or [], max_bytes=2000,
        egress=EgressPolicy(LOOPBACK if networks is None else networks, hosts or []),
        policy=FetchPolicy(**{"deadline_s": 0.5, "backoff_s": 0.05, **policy}),  # type: ignore[arg-type]
    )


def failure(fetch: ImageFetcher, ref: ImageRef) -> ItemError:
    with pytest.raises(ItemError) as info:
        fetch.fetch(ref)
    return info.value


def reason(fetch: ImageFetcher, ref: ImageRef) -> str:
    return failure(fetch, ref).reason.value


def test_url_ok(server: str) -> None:
    assert fetcher().fetch(ImageRef(url=f"{server}/ok.jpg")) == PAYLOAD


@pytest.mark.parametrize(
    ("path", "expected"),
    [("/missing.jpg", "http_status"), ("/big.jpg", "image_too_large"),
     ("/big-undeclared.jpg", "image_too_large"), ("/slow.jpg", "timeout"),
     ("/loop", "too_many_redirects")],
)
def test_url_failures(server: str, path: str, expected: str) -> None:
    assert reason(fetcher(), ImageRef(url=f"{server}{path}")) == expected


@pytest.mark.parametrize("path", ["/superscript-length.jpg", "/superscript-retry.jpg"])
def test_numbers_in_headers_are_ascii_digits(server: str, path: str) -> None:
    # "²" passes str.isdigit() and int() refuses it: the image failed as a bug (image_error,
    # "ValueError"); a Content-Length that is no number is a bad answer, a Retry-After is
    # ignored (the backoff applies).
    error = failure(fetcher(deadline_s=2.0), ImageRef(url=f"{server}{path}"))
    assert error.reason.value == "http_status"
    if "length" in path:
        assert "Content-Length" in error.detail


def test_unreachable_url_names_no_socket_error() -> None:
    error = failure(fetcher(), ImageRef(url=f"http://127.0.0.1:{free_port()}/x.jpg"))
    assert error.reason.value == "unreachable"
    assert "refused" not in error.detail.lower() and "errno" not in error.detail.lower()


# -- egress policy ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "address",
    ["127.0.0.1", "127.1.2.3", "10.0.0.1", "172.16.0.1", "192.168.1.1", "169.254.169.254",
     "100.64.0.1", "100.100.100.200", "0.0.0.0", "0.1.2.3", "224.0.0.1", "239.255.255.250",
     "240.0.0.1", "255.255.255.255", "192.0.0.1", "198.18.0.1", "192.0.2.1",
     "::1", "::", "fe80::1", "fc00::1", "fd00:ec2::254", "ff02::1", "fec0::1",
     "::ffff:127.0.0.1", "::ffff:10.0.0.1", "::ffff:169.254.169.254", "64:ff9b::7f00:1",
     "2002:7f00:1::1", "2001:0:7f00:1::1", "2001:db8::1"],
)
def test_classifier_refuses_non_public_addresses(address: str) -> None:
    assert not is_public(ip_address(address))
    assert not EgressPolicy().allows("example.com", ip_address(address))


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "93.184.216.34",
                                     "2606:4700:4700::1111", "::ffff:8.8.8.8"])
def test_classifier_allows_public_unicast(address: str) -> None:
    assert is_public(ip_address(address))


def test_allow_lists() -> None:
    policy = EgressPolicy(["10.20.0.0/16"], ["cdn.internal"])
    assert policy.allows("x", ip_address("10.20.1.1"))
    assert policy.allows("x", ip_address("::ffff:10.20.1.1"))
    assert not policy.allows("x", ip_address("10.21.1.1"))
    assert policy.allows("CDN.internal.", ip_address("10.99.0.1"))


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::1]", "0.0.0.0", "[::]",
                                  "[::ffff:127.0.0.1]", "169.254.169.254", "2130706433"])
def test_default_policy_refuses_loopback_before_connecting(port: int, host: str) -> None:
    before = _State.requests
    error = failure(fetcher(networks=[]), ImageRef(url=f"http://{host}:{port}/ok.jpg"))
    assert error.reason.value == "address_not_allowed"
    if host == "localhost":  # the detail names the host as sent, never what it resolved to
        assert "127.0.0.1" not in error.detail
    assert _State.requests == before


def test_redirect_to_loopback_is_refused(port: int) -> None:
    # The first hop is allowed by name; its redirect to localhost is checked again.
    fetch = fetcher(networks=[], hosts=["127.0.0.1"])
    start = f"http://127.0.0.1:{port}"
    assert fetch.fetch(ImageRef(url=f"{start}/ok.jpg")) == PAYLOAD
    before = _State.requests
    target = f"http://localhost:{port}/ok.jpg"
    assert reason(fetch, ImageRef(url=f"{start}/redirect?{target}")) == "address_not_allowed"
    assert _State.requests == before + 1  # the redirect itself, nothing after it


def test_allowing_loopback_makes_it_work(port: int, server6: str) -> None:
    fetch = fetcher(networks=LOOPBACK)
    for host in ("127.0.0.1", "localhost"):
        assert fetch.fetch(ImageRef(url=f"http://{host}:{port}/ok.jpg")) == PAYLOAD
    assert fetch.fetch(ImageRef(url=f"{server6}/ok.jpg")) == PAYLOAD
    target = f"http://localhost:{port}/ok.jpg"
    assert fetch.fetch(ImageRef(url=f"http://127.0.0.1:{port}/redirect?{target}")) == PAYLOAD


# -- deadlines, retries, concurrency -------------------------------------------------------


@pytest.mark.parametrize("path", ["/dribble.jpg", "/dribble-headers.jpg"])
def test_a_dribbling_server_is_cut_at_the_deadline(server: str, path: str) -> None:
    started = time.monotonic()
    assert reason(fetcher(deadline_s=1.0), ImageRef(url=f"{server}{path}")) == "timeout"
    assert time.monotonic() - started < 1.5


def test_transient_statuses_are_retried(server: str) -> None:
    fetch = fetcher(deadline_s=5.0, retry_after_max_s=0.2)
    for status in (500, 503, 429):
        assert fetch.fetch(ImageRef(url=f"{server}/flaky/{status}/a?1")) == PAYLOAD
    before = _State.requests
    assert reason(fetch, ImageRef(url=f"{server}/flaky/500/b?99")) == "http_status"
    assert _State.requests - before == 3  # max_attempts
    assert reason(fetch, ImageRef(url=f"{server}/flaky/404/c?1")) == "http_status"


def test_retry_after_is_honoured_up_to_its_cap(server: str) -> None:
    started = time.monotonic()
    fetcher(deadline_s=5.0, retry_after_max_s=0.6).fetch(ImageRef(url=f"{server}/flaky/503/d?1"))
    assert 0.6 <= time.monotonic() - started < 2.0


def test_per_host_concurrency_is_limited(server: str) -> None:
    fetch = fetcher(deadline_s=5.0, per_host=1)
    _State.max_active = 0
    threads = [threading.Thread(target=fetch.fetch, args=(ImageRef(url=f"{server}/busy.jpg"),))
               for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert _State.max_active == 1


@pytest.fixture
def hung() -> Iterator[SilentServer]:
    server = SilentServer("127.0.0.2")
    yield server
    server.stop()


def test_a_host_that_keeps_timing_out_rests(hung: SilentServer, server: str) -> None:
    fetch = fetcher(deadline_s=0.5, host_rest_s=60.0)
    for i in range(2):
        assert reason(fetch, ImageRef(url=f"{hung.base}/{i}.jpg")) == "timeout"
    assert hung.accepted == 2
    error = failure(fetch, ImageRef(url=f"{hung.base}/2.jpg"))
    assert error.reason.value == "timeout" and "not tried" in error.detail
    assert "LOOKALIKE_IMAGES__HOST_REST_S" in error.detail
    assert hung.accepted == 2  # failed at once, without a connection
    assert fetch.fetch(ImageRef(url=f"{server}/ok.jpg")) == PAYLOAD  # another host: as ever


def test_one_timeout_or_an_answer_does_not_make_a_host_rest(server: str) -> None:
    fetch = fetcher(deadline_s=0.5, host_rest_s=60.0)
    assert reason(fetch, ImageRef(url=f"{server}/slow.jpg")) == "timeout"
    assert fetch.fetch(ImageRef(url=f"{server}/ok.jpg")) == PAYLOAD
    assert reason(fetch, ImageRef(url=f"{server}/slow.jpg")) == "timeout"
    assert fetch.fetch(ImageRef(url=f"{server}/ok.jpg")) == PAYLOAD
    assert not fetch.suspect("127.0.0.1")


def test_rests_double_while_a_host_stays_silent() -> None:
    now = [0.0]
    rest = _HostRest(5.0, clock=lambda: now[0])
    rest.timed_out("h")
    assert rest.resting("h") is None and rest.suspect("h")
    rest.timed_out("h")
    assert rest.resting("h") is not None
    rest.timed_out("h")  # a fetch that started before the rest: it does not lengthen it
    now[0] = 5.1
    assert rest.resting("h") is None  # rested: its next image is tried
    rest.timed_out("h")  # ...and timed out: twice as long
    now[0] = 5.1 + 9.9
    assert rest.resting("h") is not None
    now[0] = 5.1 + 10.1
    assert rest.resting("h") is None
    for length in (20.0, 40.0, 80.0, 160.0, MAX_HOST_REST_S, MAX_HOST_REST_S):
        rest.timed_out("h")
        now[0] += length - 0.1
        assert rest.resting("h") is not None
        now[0] += 0.2
        assert rest.resting("h") is None
    rest.answered("h")
    rest.timed_out("h")
    assert rest.resting("h") is None  # an answer starts the count again
    off = _HostRest(0.0, clock=lambda: now[0])
    for _ in range(5):
        off.timed_out("h")
    assert off.resting("h") is None


# -- local paths and inline bytes -------------------------------------------------------


def test_paths_only_inside_roots(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "a.jpg").write_bytes(PAYLOAD)
    outside = tmp_path / "secret.jpg"
    outside.write_bytes(PAYLOAD)
    (root / "link.jpg").symlink_to(outside)
    fetch = fetcher([root])
    assert fetch.fetch(ImageRef(path="sub/a.jpg")) == PAYLOAD
    assert fetch.fetch(ImageRef(path=str(root / "sub" / "a.jpg"))) == PAYLOAD
    assert reason(fetch, ImageRef(path="../secret.jpg")) == "path_not_allowed"
    assert reason(fetch, ImageRef(path=str(outside))) == "path_not_allowed"
    assert reason(fetch, ImageRef(path="link.jpg")) == "path_not_allowed"
    assert reason(fetch, ImageRef(path="sub/nope.jpg")) == "not_found"


def test_without_roots_the_detail_says_how_to_allow_paths() -> None:
    error = failure(fetcher([]), ImageRef(path="sub/a.jpg"))
    assert error.reason.value == "path_not_allowed"
    assert "LOOKALIKE_IMAGES__ROOTS" in error.detail


def test_oversized_and_empty_files(tmp_path: Path) -> None:
    (tmp_path / "big.jpg").write_bytes(b"x" * 3000)
    (tmp_path / "empty.jpg").write_bytes(b"")
    fetch = fetcher([tmp_path])
    assert reason(fetch, ImageRef(path="big.jpg")) == "image_too_large"
    assert reason(fetch, ImageRef(path="empty.jpg")) == "empty_image"


def test_inline_bytes() -> None:
    ref = ImageRef(data=base64.b64encode(PAYLOAD).decode())
    assert fetcher().fetch(ref) == PAYLOAD
    big = ImageRef(data=base64.b64encode(b"x" * 3000).decode())
    assert reason(fetcher(), big) == "image_too_large"


# -- TLS: verified for the host name while connecting to the pinned address -----------------


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, ssl.SSLContext]]:
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    made = subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
         "-out", str(cert), "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost"],
        capture_output=True, check=False,
    ) if shutil.which("openssl") else None
    if made is None or made.returncode != 0:
        pytest.skip("openssl is needed to make a test certificate")
    httpd = _QuietServer(("127.0.0.1", 0), _Handler)
    served = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    served.load_cert_chain(cert, key)
    httpd.socket = served.wrap_socket(httpd.socket, server_side=True)
    _serve(httpd)
    client = ssl.create_default_context(cafile=str(cert))
    yield int(httpd.server_address[1]), client
    httpd.shutdown()


def test_tls_is_verified_for_the_host_name(tls_server: tuple[int, ssl.SSLContext]) -> None:
    port, client = tls_server
    fetch = ImageFetcher([], egress=EgressPolicy(LOOPBACK), tls=client,
                         policy=FetchPolicy(deadline_s=2.0, max_attempts=1))
    assert fetch.fetch(ImageRef(url=f"https://localhost:{port}/ok.jpg")) == PAYLOAD
    # The same server by address: the certificate does not name 127.0.0.1, so it is refused.
    assert reason(fetch, ImageRef(url=f"https://127.0.0.1:{port}/ok.jpg")) == "unreachable"
    # And a client that does not trust the certificate refuses it too.
    plain = ImageFetcher([], egress=EgressPolicy(LOOPBACK),
                         policy=FetchPolicy(deadline_s=2.0, max_attempts=1))
    assert reason(plain, ImageRef(url=f"https://localhost:{port}/ok.jpg")) == "unreachable"


def test_raw_characters_in_paths_are_percent_encoded(server: str) -> None:
    # The handler answers 404 for an unknown path: reaching it proves the request was sent.
    assert reason(fetcher(), ImageRef(url=f"{server}/a photo é.jpg")) == "http_status"


@pytest.mark.parametrize(
    ("path", "needle"),
    [("/many-headers", "too many headers"), ("/long-header", "header line"),
     ("/status-2000", "no valid status line"), ("/http09", "no valid status line"),
     ("/http2", "not HTTP/1.x")],
)
def test_an_answer_that_is_not_http_is_a_bad_status_not_retried(
    server: str, path: str, needle: str
) -> None:
    # The host answered, so this is no connection failure ("unreachable", tried 3 times).
    before = _State.requests
    error = failure(fetcher(deadline_s=2.0), ImageRef(url=f"{server}{path}"))
    assert error.reason.value == "http_status"
    assert "bad HTTP answer" in error.detail and needle in error.detail
    assert _State.requests - before == 1


def test_a_bad_chunk_size_reads_as_an_answer_cut_short(server: str) -> None:
    # http.client raises the same IncompleteRead for a connection closed between chunks.
    error = failure(fetcher(deadline_s=2.0, max_attempts=1),
                    ImageRef(url=f"{server}/bad-chunk"))
    assert (error.reason.value, error.detail.split(": ", 1)[1]) == (
        "unreachable", "answer cut short")


@pytest.mark.parametrize(
    "location",
    ["http://127.0.0.1\x00.evil:PORT/ok.jpg", "http://127.0.0.1\x1b[2J:PORT/ok.jpg",
     "http://[::1/x", "http://[127.0.0.1]/x", "http://]x/", "http://a b:PORT/ok.jpg",
     "http://.../ok.jpg", "ftp://127.0.0.1/ok.jpg"],
)
def test_a_redirect_to_a_malformed_url_is_refused_before_connecting(
    server: str, location: str
) -> None:
    # The NUL one was looked up cut at the NUL (127.0.0.1, allowed), connected to 3 times,
    # and the NUL went raw into the log line and the dead letter's detail header. A deadline
    # of seconds: at 0.5 s the redirect itself timed out once on a loaded 2-core box.
    before = _State.requests
    error = failure(fetcher(deadline_s=5.0),
                    ImageRef(url=f"{server}/redirect-raw?{quote(location)}"))
    assert error.reason.value == "bad_reference"
    assert _State.requests - before == 1  # the redirect only
    assert error.detail.isprintable() and str(error).isprintable()


@pytest.mark.parametrize("url", ["http://[::1/x", "http://]x/"])
def test_an_unparseable_url_from_a_direct_caller_is_a_bad_reference(url: str) -> None:
    # Events' URLs are checked when parsed (invalid_event); a caller that built an ImageRef
    # unchecked still gets a reason, not a bare ValueError (image_error).
    assert reason(fetcher(), ImageRef.model_construct(url=url)) == "bad_reference"
