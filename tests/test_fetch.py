"""Fetch stage: every way an image reference can fail is a reason, for that image alone."""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from ingest.fetch import FetchError, ImageFetcher
from lookalike.broker import free_port
from schema.events import ImageRef

PAYLOAD = b"\xff\xd8\xff" + b"x" * 1000


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/ok.jpg":
            self._send(200, PAYLOAD)
        elif self.path == "/big.jpg":
            self._send(200, b"x" * 5000)
        elif self.path == "/big-undeclared.jpg":
            self.send_response(200)
            self.end_headers()  # no Content-Length: the cap must hold while streaming
            for _ in range(10):
                self.wfile.write(b"x" * 1000)
        elif self.path == "/slow.jpg":
            time.sleep(2)
            self._send(200, PAYLOAD)
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
    def handle_error(self, request: object, client_address: object) -> None:
        pass  # the fetcher hangs up on oversized bodies on purpose: a broken pipe is expected


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = _QuietServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def fetcher(roots: list[Path] | None = None) -> ImageFetcher:
    return ImageFetcher(roots or [], timeout_s=0.5, max_bytes=2000)


def reason(fetch: ImageFetcher, ref: ImageRef) -> str:
    with pytest.raises(FetchError) as info:
        fetch.fetch(ref)
    return info.value.reason


def test_url_ok(server: str) -> None:
    assert fetcher().fetch(ImageRef(url=f"{server}/ok.jpg")) == PAYLOAD


@pytest.mark.parametrize(
    ("path", "expected"),
    [("/missing.jpg", "http_status"), ("/big.jpg", "image_too_big"),
     ("/big-undeclared.jpg", "image_too_big"), ("/slow.jpg", "timeout")],
)
def test_url_failures(server: str, path: str, expected: str) -> None:
    assert reason(fetcher(), ImageRef(url=f"{server}{path}")) == expected


def test_unreachable_url() -> None:
    assert reason(fetcher(), ImageRef(url=f"http://127.0.0.1:{free_port()}/x.jpg")) == "unreachable"


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
    assert reason(fetcher([]), ImageRef(path="sub/a.jpg")) == "path_not_allowed"


def test_oversized_and_empty_files(tmp_path: Path) -> None:
    (tmp_path / "big.jpg").write_bytes(b"x" * 3000)
    (tmp_path / "empty.jpg").write_bytes(b"")
    fetch = fetcher([tmp_path])
    assert reason(fetch, ImageRef(path="big.jpg")) == "image_too_big"
    assert reason(fetch, ImageRef(path="empty.jpg")) == "empty_image"


def test_inline_bytes() -> None:
    ref = ImageRef(data=base64.b64encode(PAYLOAD).decode())
    assert fetcher().fetch(ref) == PAYLOAD
    big = ImageRef(data=base64.b64encode(b"x" * 3000).decode())
    assert reason(fetcher(), big) == "image_too_big"
