"""Fetch stage: image reference -> bytes, with every way of failing turned into a reason.

Only three sources are allowed: http(s) URLs (timeouts, a byte cap, no other schemes), local
paths that resolve inside configured roots (no traversal through ``..`` or symlinks), and
inline base64 bytes. A failure is a value (``FetchError``) for that image alone.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import requests

from schema.events import ImageRef


class FetchError(Exception):
    """One image could not be fetched; ``reason`` is a short code for counting."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class ImageFetcher:
    """Gets the raw bytes of an image reference. Thread-safe: one instance serves a pool."""

    def __init__(
        self,
        roots: Sequence[Path],
        *,
        timeout_s: float = 10.0,
        max_bytes: int = 20 * 1024 * 1024,
        session: requests.Session | None = None,
    ) -> None:
        self._roots = [Path(r).resolve() for r in roots]
        self._timeout_s = timeout_s
        self._max_bytes = max_bytes
        self._session = session or requests.Session()

    def fetch(self, image: ImageRef) -> bytes:
        if image.data is not None:
            data = image.inline_bytes()
            self._check_size(len(data))
            return data
        if image.url is not None:
            return self._fetch_url(image.url)
        assert image.path is not None
        return self._read_path(image.path)

    def _check_size(self, size: int) -> None:
        if size > self._max_bytes:
            raise FetchError("image_too_big", f"{size} bytes > limit {self._max_bytes}")
        if size == 0:
            raise FetchError("empty_image", "0 bytes")

    def resolve_path(self, path: str) -> Path:
        """The real file a path refers to, if it lies inside one of the roots."""
        if not self._roots:
            raise FetchError("path_not_allowed", "no image roots are configured for local paths")
        candidate = Path(path)
        bases: list[Path | None] = [None] if candidate.is_absolute() else list(self._roots)
        for base in bases:
            real = (candidate if base is None else base / candidate).resolve()
            if not any(real.is_relative_to(root) for root in self._roots):
                raise FetchError("path_not_allowed", f"{path} is outside the image roots")
            if real.is_file():
                return real
        raise FetchError("not_found", f"{path} not found under the image roots")

    def _read_path(self, path: str) -> bytes:
        real = self.resolve_path(path)
        try:
            size = os.stat(real).st_size
            self._check_size(size)
            with open(real, "rb") as fh:
                return fh.read(self._max_bytes + 1)
        except OSError as exc:
            raise FetchError("unreadable", f"{path}: {exc.strerror or exc}") from None

    def _fetch_url(self, url: str) -> bytes:
        try:
            with self._session.get(
                url, timeout=self._timeout_s, stream=True, allow_redirects=True
            ) as response:
                if response.status_code != 200:
                    raise FetchError("http_status", f"{url} answered HTTP {response.status_code}")
                declared = response.headers.get("Content-Length")
                if declared is not None and declared.isdigit():
                    self._check_size(int(declared))
                chunks: list[bytes] = []
                total = 0
                for chunk in response.iter_content(chunk_size=65536):
                    total += len(chunk)
                    if total > self._max_bytes:
                        raise FetchError(
                            "image_too_big", f"{url} sent more than {self._max_bytes} bytes"
                        )
                    chunks.append(chunk)
        except requests.Timeout:
            raise FetchError("timeout", f"{url} did not answer within {self._timeout_s}s") from None
        except requests.RequestException as exc:
            raise FetchError("unreachable", f"{url}: {type(exc).__name__}") from None
        data = b"".join(chunks)
        self._check_size(len(data))
        return data
