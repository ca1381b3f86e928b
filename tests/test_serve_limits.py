"""The API over real sockets (uvicorn on a thread, Milvus Lite, a fake embedder): what slow,
stalled, vanishing and numerous clients get, and that they do not hold the server."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import h11
import pytest
import requests

from serve.api import PARSE_INLINE_BYTES, ServeConfig
from serve.metrics import ConnectionMetrics
from serve.server import (
    KEEP_ALIVE_S,
    MAX_HEADER_BYTES,
    BackgroundServer,
    HeadBound,
    HeaderDeadline,
)
from tests.serve_support import RED, Served, build_served, png

IDLE_S = 0.5
BODY_S = 1.5
HEADER_S = 0.5
MAX_JSON = 128 * 1024


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    config = ServeConfig(max_json_bytes=MAX_JSON, body_timeout_s=BODY_S, body_idle_s=IDLE_S)
    yield from build_served(tmp_path_factory.mktemp("limits"), config=config)


@pytest.fixture(scope="module")
def server(served: Served) -> Iterator[BackgroundServer]:
    with BackgroundServer(served.app, max_connections=8) as running:
        yield running


def connect(server: BackgroundServer) -> socket.socket:
    return socket.create_connection((server.host, server.port), timeout=10)


def post_head(length: int, content_type: str = "application/json") -> bytes:
    return (f"POST /v1/search HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {length}\r\n\r\n").encode()


def answer(sock: socket.socket) -> tuple[int, bytes, bool]:
    """Status, body and whether the server closed the connection after the answer."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body, True


def counted(served: Served, endpoint: str, status: str) -> float:
    return served.registry.get_sample_value(
        "lookalike_http_requests_total", {"endpoint": endpoint, "status": status}) or 0.0


def test_a_stalled_body_is_a_408_and_the_connection_closes(server: BackgroundServer) -> None:
    """It held its connection and the bytes sent for as long as the client liked."""
    with connect(server) as sock:
        started = time.monotonic()
        sock.sendall(post_head(1000) + b'{"product_id": "red-tee", ')
        status, body, _ = answer(sock)  # returns once the server closes
        waited = time.monotonic() - started
    assert status == 408
    assert json.loads(body)["error"]["code"] == "body_timeout"
    assert IDLE_S * 0.8 < waited < BODY_S, waited


def test_a_dripped_body_is_a_408_at_its_deadline(server: BackgroundServer) -> None:
    with connect(server) as sock:
        started = time.monotonic()
        sock.sendall(post_head(1000))
        sock.settimeout(IDLE_S / 4)
        data = b""
        while True:
            try:
                sock.sendall(b" ")
                data += sock.recv(65536)
                if not data or b"\r\n\r\n" in data:
                    break
            except TimeoutError:
                continue
            except OSError:
                break
        waited = time.monotonic() - started
        sock.settimeout(10)
        try:  # the head and the body may come in two reads: the rest, up to the close
            while chunk := sock.recv(65536):
                data += chunk
        except OSError:
            pass
    assert data.startswith(b"HTTP/1.1 408"), data[:100]
    assert b"did not arrive within" in data
    assert BODY_S * 0.8 < waited < BODY_S + 2, waited


def test_a_json_body_has_its_own_small_cap(server: BackgroundServer) -> None:
    url = f"{server.url}/v1/search"
    big = json.dumps({"product_id": "red-tee", "categories": ["x" * 200] * 800})
    assert len(big) > MAX_JSON
    declared = requests.post(url, data=big, headers={"content-type": "application/json"})
    assert declared.status_code == 413, declared.text
    assert "multipart/form-data" in declared.json()["error"]["message"]
    chunked = requests.post(url, data=iter([big.encode()[i:i + 4096]
                                            for i in range(0, len(big), 4096)]),
                            headers={"content-type": "application/json"})
    assert chunked.status_code == 413, chunked.text
    upload = requests.post(url, files={"image": ("a.png", b"\x89PNG" + b"0" * 100_000)})
    assert upload.status_code == 422, upload.text  # past the JSON cap, under the upload cap


def test_a_second_content_type_is_refused_before_the_body(server: BackgroundServer) -> None:
    """The body cap read the last Content-Type and the API the first: a JSON body over the
    JSON cap, declared as JSON and then as multipart, had the upload cap and was searched
    (200). Now one decision: refused on the headers, the body unread, the connection closed."""
    body = b'{"product_id": "red-tee", "k": 2, "vector": null}' + b" " * (MAX_JSON + 10_000)
    assert MAX_JSON < len(body) < 200_000  # under the upload cap of build_served
    for first, second in (("application/json", "multipart/form-data; boundary=X"),
                          ("multipart/form-data; boundary=X", "application/json")):
        with connect(server) as sock:
            sock.sendall(f"POST /v1/search HTTP/1.1\r\nHost: x\r\nContent-Type: {first}\r\n"
                         f"Content-Type: {second}\r\nContent-Length: {len(body)}\r\n\r\n"
                         .encode())
            status, answered, _ = answer(sock)  # returns once the server closes
        assert status == 400, answered
        error = json.loads(answered)["error"]
        assert error["code"] == "bad_request"
        assert "more than one Content-Type header" in error["message"]


def test_a_chunked_form_cut_short_is_refused_and_a_whole_one_searched(
        server: BackgroundServer) -> None:
    """A chunked upload ended (its last chunk sent) before the form's closing boundary: its
    ``max_price`` was dropped and the search ran unfiltered. ``requests``' own form passes."""
    url = f"{server.url}/v1/search"
    whole = requests.post(url, files={"image": ("q.png", png(RED), "image/png")},
                          data={"k": "5", "max_price": "25"})
    assert whole.status_code == 200, whole.text
    assert [h["product_id"] for h in whole.json()["hits"]] == ["red-tee", "red-tee-resale",
                                                               "far"]
    body = (b'--X\r\nContent-Disposition: form-data; name="image"; filename="q.png"\r\n'
            b"Content-Type: image/png\r\n\r\n" + png(RED) + b'\r\n--X\r\n'
            b'Content-Disposition: form-data; name="max_price"\r\n\r\n')
    with connect(server) as sock:
        sock.sendall(b"POST /v1/search HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                     b"Content-Type: multipart/form-data; boundary=X\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n"
                     + f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n")
        status, answered, _ = answer(sock)
    assert status == 400, answered
    error = json.loads(answered)["error"]
    assert error["code"] == "bad_upload" and "closing boundary" in error["message"]


def test_connections_beyond_the_limit_are_a_503(served: Served) -> None:
    """There was no limit: 200 clients sending their headers a byte a second all held one."""
    with BackgroundServer(served.app, max_connections=4) as server:
        held: list[socket.socket] = []
        try:
            for _ in range(3):  # uvicorn counts the connection asking: 3 and it make 4
                held.append(connect(server))
                held[-1].sendall(post_head(1000) + b"{")
                time.sleep(0.1)
            busy = requests.get(f"{server.url}/livez", timeout=5)
            assert busy.status_code == 503
        finally:
            for sock in held:
                sock.close()
        time.sleep(0.3)
        assert requests.get(f"{server.url}/livez", timeout=5).status_code == 200


def test_a_client_gone_mid_body_is_no_500_and_no_traceback(
        server: BackgroundServer, served: Served, caplog: pytest.LogCaptureFixture) -> None:
    before = {s: counted(served, "/v1/search", s) for s in ("499", "500")}
    with caplog.at_level(logging.DEBUG):
        for content_type, part in (
                ("application/json", b'{"product_id"'),
                ("multipart/form-data; boundary=xx", b'--xx\r\nContent-Disposition: '
                 b'form-data; name="image"; filename="a.png"\r\n\r\n\x89PNG')):
            with connect(server) as sock:
                sock.sendall(post_head(1000, content_type) + part)
                time.sleep(0.1)
            time.sleep(0.3)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    after = {s: counted(served, "/v1/search", s) - n for s, n in before.items()}
    assert after == {"499": 2, "500": 0}


def test_a_large_json_body_is_parsed_off_the_event_loop(
        served: Served, server: BackgroundServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """Four 19 MiB bodies held ``/livez`` up to 2 s while they were parsed on the loop."""
    import serve.api
    original = serve.api.check_nesting

    def slow_check(raw: bytes) -> None:
        if len(raw) > 32 * 1024:
            time.sleep(1.0)
        original(raw)

    monkeypatch.setattr(serve.api, "check_nesting", slow_check)
    body = json.dumps({"vector": [0.123456789012345678] * 4000, "k": 2})
    assert PARSE_INLINE_BYTES < len(body) < MAX_JSON
    results: list[Any] = []

    def post() -> None:
        results.append(requests.post(f"{server.url}/v1/search", data=body,
                                     headers={"content-type": "application/json"}))

    poster = threading.Thread(target=post)
    poster.start()
    time.sleep(0.3)
    started = time.monotonic()
    assert requests.get(f"{server.url}/livez", timeout=5).status_code == 200
    assert time.monotonic() - started < 0.5
    poster.join(10)
    assert results[0].status_code == 422  # 4,000 numbers: not the model's dimension


# -- the header phase: slowloris -----------------------------------------------------------


@pytest.fixture(scope="module")
def quick_headers(served: Served) -> Iterator[BackgroundServer]:
    """A server whose requests must have their line and headers in within HEADER_S, counted
    into the app's registry (one such server per registry)."""
    with BackgroundServer(served.app, header_timeout_s=HEADER_S,
                          metrics=ConnectionMetrics(served.registry)) as running:
        yield running


def header_timeouts(served: Served) -> float:
    return served.registry.get_sample_value("lookalike_http_header_timeouts_total") or 0.0


def until_closed(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def one_answer(sock: socket.socket) -> tuple[int, bytes]:
    """Status and body of the next answer on a kept-alive connection (by its Content-Length)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"closed before an answer: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "closed mid-answer"
        body += chunk
    assert len(body) == length, "more than one answer read at once"
    return int(head.split()[1]), body


def statuses(sock: socket.socket, count: int) -> list[int]:
    """The statuses of the next ``count`` answers on a kept-alive connection, however they
    arrive (pipelined answers may come in one read)."""
    data, found = b"", []
    while len(found) < count:
        head, sep, rest = data.partition(b"\r\n\r\n")
        if sep:
            length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length:"))
            if len(rest) >= length:
                found.append(int(head.split()[1]))
                data = rest[length:]
                continue
        chunk = sock.recv(65536)
        assert chunk, f"closed after {found}: {data[:200]!r}"
        data += chunk
    assert data == b"", f"more than {count} answers: {data[:200]!r}"
    return found


LIVEZ = b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n"


def test_a_connection_that_sends_nothing_is_closed_at_the_header_deadline(
        quick_headers: BackgroundServer, served: Served,
        caplog: pytest.LogCaptureFixture) -> None:
    """It was held for ever: a few hundred such clients took every one of max_connections.
    Closed without an answer (there is no request; a browser's unused preconnect is one),
    said at INFO (a dribbled request's closing is a WARNING)."""
    before = header_timeouts(served)
    with caplog.at_level(logging.INFO, logger="serve.server"), \
            connect(quick_headers) as sock:
        host, port = sock.getsockname()[:2]
        client = f"{host}:{port}"
        started = time.monotonic()
        data = until_closed(sock)
        waited = time.monotonic() - started
    assert data == b""
    assert HEADER_S * 0.5 < waited < HEADER_S + 3, waited
    assert header_timeouts(served) == before + 1
    lines = [r.getMessage() for r in caplog.records if "serve.header_timeout_s" in r.getMessage()]
    assert len(lines) == 1 and client in lines[0] and "sent no request" in lines[0], lines
    assert [r.levelno for r in caplog.records if "sent no request" in r.getMessage()] == [
        logging.INFO]


def dribble(sock: socket.socket, first: bytes = b"") -> tuple[bytes, float, int]:
    """Sends ``first``, then a request line and headers three bytes every 0.2 s without ever
    ending them, until the server answers and closes; what it answered, after how long, and
    how many bytes went out."""
    head = first + b"GET /livez HTTP/1.1\r\nHost: x\r\n" + b"X-Slow: yes\r\n" * 200
    started = time.monotonic()
    sent = 0
    sock.settimeout(0.2)
    while time.monotonic() - started < HEADER_S + 5:
        try:
            data = sock.recv(65536)
        except TimeoutError:
            sock.sendall(head[sent:sent + 3])
            sent += 3
            continue
        sock.settimeout(10)
        data += until_closed(sock) if data else b""
        return data, time.monotonic() - started, sent
    raise AssertionError(f"still open after {HEADER_S + 5} s of dribbling")


def test_a_client_dribbling_its_headers_is_closed_although_it_keeps_sending(
        quick_headers: BackgroundServer, served: Served) -> None:
    before = header_timeouts(served)
    with connect(quick_headers) as sock:
        data, waited, sent = dribble(sock)
    assert data.startswith(b"HTTP/1.1 408 "), data[:100]
    assert b"connection: close" in data.lower()
    assert json.loads(data.partition(b"\r\n\r\n")[2])["error"]["code"] == "header_timeout"
    assert HEADER_S * 0.5 < waited < HEADER_S + 3, waited
    assert sent >= 6  # it kept sending past the deadline's half
    assert header_timeouts(served) == before + 1


def test_the_deadline_holds_for_a_later_request_on_a_kept_alive_connection(
        quick_headers: BackgroundServer, served: Served) -> None:
    """Counted from the later request's first byte: the idle wait before it is keep-alive's."""
    before = header_timeouts(served)
    with connect(quick_headers) as sock:
        sock.sendall(LIVEZ)
        assert one_answer(sock)[0] == 200
        time.sleep(HEADER_S * 2)  # idle: not the header deadline's business
        data, waited, _ = dribble(sock)
    assert data.startswith(b"HTTP/1.1 408 "), data[:100]
    assert HEADER_S * 0.5 < waited < HEADER_S + 3, waited
    assert header_timeouts(served) == before + 1


def test_requests_in_time_kept_alive_and_pipelined_are_answered(
        quick_headers: BackgroundServer, served: Served) -> None:
    before = header_timeouts(served)
    assert requests.get(f"{quick_headers.url}/livez", timeout=5).status_code == 200
    with connect(quick_headers) as sock:
        sock.sendall(LIVEZ)
        assert one_answer(sock)[0] == 200
        time.sleep(HEADER_S * 2)  # past the header deadline, within keep-alive
        assert HEADER_S * 2 < KEEP_ALIVE_S - 2
        sock.sendall(LIVEZ)
        assert one_answer(sock)[0] == 200
        sock.sendall(LIVEZ * 3)  # pipelined (the answers may come in one read)
        assert statuses(sock, 3) == [200] * 3
        sock.sendall(LIVEZ[:10])  # a request split across packets, in time
        time.sleep(HEADER_S / 3)
        sock.sendall(LIVEZ[10:])
        assert one_answer(sock)[0] == 200
    assert header_timeouts(served) == before


def test_headers_over_the_bound_are_a_431_however_they_arrive(
        server: BackgroundServer) -> None:
    """h11 bounds a request's head only while it is incomplete: a 100,000-byte header that
    came in one read was answered 200 (the docs said 16 KiB), one in pieces a plain 400."""
    big = LIVEZ[:-2] + b"X-Big: " + b"a" * 100_000 + b"\r\n\r\n"
    just_over = LIVEZ[:-2] + b"X-Big: " + b"a" * MAX_HEADER_BYTES + b"\r\n\r\n"
    for sent in (big, just_over, big[:MAX_HEADER_BYTES + 100]):  # whole; whole; incomplete
        with connect(server) as sock:
            sock.sendall(sent)
            data = until_closed(sock)
        assert data.startswith(b"HTTP/1.1 431 "), data[:100]
        head, _, body = data.partition(b"\r\n\r\n")
        assert b"connection: close" in head.lower()
        error = json.loads(body)["error"]
        assert error["code"] == "headers_too_large"
        assert error["message"] == (f"the request line and headers are over "
                                    f"{MAX_HEADER_BYTES:,} bytes")


def test_headers_within_the_bound_bodies_and_pipelined_requests_are_not_counted(
        server: BackgroundServer) -> None:
    """What is counted is one request's line and headers: several KiB of them are answered,
    and so are a body past the bound sent with its head and requests pipelined together."""
    several = LIVEZ[:-2] + b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 1000) for i in range(12))
    several += b"\r\n"
    assert 12_000 < len(several) < MAX_HEADER_BYTES
    with connect(server) as sock:
        sock.sendall(several)
        assert statuses(sock, 1) == [200]
        sock.sendall(several * 3)  # pipelined: 3 heads together are over the bound
        assert statuses(sock, 3) == [200] * 3
        body = b'{"vector": [1, 0, 0, 0, 0, 0, 0, 0]' + b" " * 50_000 + b"}"
        sock.sendall(post_head(len(body)) + body + several)  # one send: the body is no header
        assert statuses(sock, 2) == [200, 200]


def test_the_head_bound_counts_a_complete_head_and_nothing_after_it() -> None:
    """Whatever the reads: h11 alone passed a head over its bound that came in one read."""
    head = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n"
    within = HeadBound(len(head))
    within.receive_data(head + b"b" * 5000)  # the body, past the bound, came with it
    assert isinstance(within.next_event(), h11.Request)
    assert isinstance(within.next_event(), h11.Data)
    assert not within.head_too_large
    over = HeadBound(len(head) - 1)
    over.receive_data(head + b"b" * 5000)
    with pytest.raises(h11.RemoteProtocolError) as refused:
        over.next_event()
    assert refused.value.error_status_hint == 431 and over.head_too_large


def test_a_slow_body_after_prompt_headers_is_the_body_deadlines_408(
        quick_headers: BackgroundServer, served: Served) -> None:
    """The header deadline ends with the headers: a body dripped within body_idle_s runs to
    body_timeout_s (three header deadlines) and gets the app's 408 ``body_timeout``."""
    assert BODY_S >= HEADER_S * 3
    before = header_timeouts(served)
    with connect(quick_headers) as sock:
        started = time.monotonic()
        sock.sendall(post_head(1000))
        sock.settimeout(IDLE_S / 3)
        data = b""
        while not data and time.monotonic() - started < BODY_S + 5:
            try:
                data = sock.recv(65536)
            except TimeoutError:
                sock.sendall(b" ")
        sock.settimeout(10)
        data += until_closed(sock)
        waited = time.monotonic() - started
    assert data.startswith(b"HTTP/1.1 408 "), data[:100]
    assert json.loads(data.partition(b"\r\n\r\n")[2])["error"]["code"] == "body_timeout"
    assert BODY_S * 0.8 < waited < BODY_S + 3, waited
    assert header_timeouts(served) == before


def test_silent_connections_at_the_limit_free_it_at_their_deadline(served: Served) -> None:
    """Three connections that never send a byte took every place of four: /livez was 503
    for as long as they liked. They now go at the header deadline."""
    deadline = 1.5  # a wide margin for the 503 before it
    with BackgroundServer(served.app, max_connections=4, header_timeout_s=deadline) as server:
        held = [connect(server) for _ in range(3)]
        try:
            time.sleep(0.1)
            assert requests.get(f"{server.url}/livez", timeout=5).status_code == 503
            time.sleep(deadline + 0.5)
            assert requests.get(f"{server.url}/livez", timeout=5).status_code == 200
            assert [until_closed(sock) for sock in held] == [b""] * 3
        finally:
            for sock in held:
                sock.close()


def test_serve_and_run_build_their_server_from_the_settings() -> None:
    from prometheus_client import CollectorRegistry

    from lookalike.commands_serve import _api_server
    from lookalike.settings import ServeSettings
    from serve.server import listen

    registry = CollectorRegistry()
    sockets = listen("127.0.0.1", 0)
    try:
        server = _api_server(object(), ServeSettings(header_timeout_s=2.5), sockets, registry)
        protocol = server._server.config.http
        assert isinstance(protocol, type) and issubclass(protocol, HeaderDeadline)
        assert protocol.header_timeout_s == 2.5
        assert registry.get_sample_value("lookalike_http_header_timeouts_total") == 0.0
    finally:
        for sock in sockets:
            sock.close()


# -- probes on a hung or dead store ------------------------------------------------------


class HungStore:
    """A store whose calls never answer until released (a SIGSTOPped Milvus Lite)."""

    lite_process = None

    def __init__(self) -> None:
        self.release = threading.Event()
        self.calls = 0

    def has_collection(self, name: str) -> bool:
        self.calls += 1
        self.release.wait(30)
        return False


class DeadLite:
    returncode = -9

    def alive(self) -> bool:
        return False


class DeadStore:
    """A store whose Milvus Lite child was killed."""

    lite_process = DeadLite()


def test_readyz_answers_503_within_a_second_on_a_hung_store_without_search_workers(
        tmp_path: Path) -> None:
    """Five probes hung 63 s on a frozen store and took the search pool: a search by id
    waited 60 s. Now each answers 503 in ~1 s, one check runs, and searches go on."""
    hung = HungStore()
    for served in build_served(tmp_path, probed_store=hung):
        with BackgroundServer(served.app) as server:
            try:
                _probe_while_hung(server, hung)
            finally:
                hung.release.set()


def _probe_while_hung(server: BackgroundServer, hung: HungStore) -> None:
    answers: list[tuple[int, float]] = []

    def probe() -> None:
        started = time.monotonic()
        status = requests.get(f"{server.url}/readyz", timeout=30).status_code
        answers.append((status, time.monotonic() - started))

    probes = [threading.Thread(target=probe) for _ in range(5)]
    for thread in probes:
        thread.start()
    time.sleep(0.2)
    started = time.monotonic()
    search = requests.post(f"{server.url}/v1/search", timeout=30,
                           json={"vector": [1.0] + [0.0] * 7, "k": 1})
    assert search.status_code == 200 and time.monotonic() - started < 1.0
    for thread in probes:
        thread.join(10)
    assert [s for s, _ in answers] == [503] * 5
    assert max(t for _, t in answers) < 2.0, answers
    body = requests.get(f"{server.url}/readyz", timeout=5).json()
    assert body["checks"]["milvus"] == "no answer within 1 s"
    assert hung.calls == 1  # shared by every probe while it hangs


def test_livez_is_503_once_the_lite_process_is_gone(tmp_path: Path) -> None:
    """It said 200 for ever while every search answered 503: nothing restarted it."""
    for served in build_served(tmp_path, probed_store=DeadStore()):
        with BackgroundServer(served.app) as server:
            livez = requests.get(f"{server.url}/livez", timeout=5)
            assert livez.status_code == 503
            assert "restarted" in livez.json()["reason"]
            assert requests.head(f"{server.url}/livez", timeout=5).status_code == 503
            assert requests.get(f"{server.url}/readyz", timeout=5).status_code == 503


def test_a_failed_ingest_under_run_says_ingest_stopped_once(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """``lookalike run: error: ingest stopped: ingest stopped: StoreError(...)``."""
    from ingest.runner import IngestError
    from lookalike import commands
    from lookalike.errors import UserError
    from lookalike.settings import Settings

    class FailingRunner:
        def run(self, until_caught_up: bool) -> None:
            raise IngestError("ingest stopped: StoreError('the Milvus Lite process exited')")

        def stop(self, reason: str) -> None:
            pass

    guard = SimpleNamespace(check=lambda: None)
    monkeypatch.setattr(commands, "open_for_writing", lambda *_: (None, guard))
    monkeypatch.setattr(commands, "build_runner", lambda *_, **__: FailingRunner())
    versions: Any = SimpleNamespace(store=None)
    with pytest.raises(UserError) as raised:
        commands._ingest(Settings(), None, versions, until_caught_up=False)
    assert str(raised.value).count("ingest stopped") == 1, raised.value
