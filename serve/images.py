"""Product images for the search page: only files inside the configured image roots.

A hit's ``image_ref`` is whatever the catalog said: a local path, an http(s) URL, or inline
data. Local paths are served when, after resolving every symlink, they lie inside one of the
roots and look like an image; nothing else on disk is reachable, whatever the caller puts in
the reference (``..``, symlinks out of a root, absolute paths, NUL bytes). http(s) URLs are
never fetched by the server: the page hands them to the browser as they are.

:class:`CatalogImage` serves such a file: Starlette's ``FileResponse`` (ETag, Last-Modified,
byte ranges) plus the revalidation the page's thumbnails need and the API's error shape.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timezone
from email.utils import parsedate_to_datetime
from pathlib import Path

from starlette.datastructures import Headers
from starlette.responses import FileResponse, Response
from starlette.types import Message, Receive, Scope, Send

from serve.errors import error_response

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"})
MAX_REF_LENGTH = 4096


@dataclass(frozen=True)
class ImageRefused:
    """Why a reference is not served: ``not_found`` (404) for any path that is not an image
    file inside the roots, whatever made it one (an empty one, ``..``, a NUL byte: the
    same answer, no probing), ``not_local`` (400) for a URL."""

    reason: str
    detail: str


class ImageRoots:
    """Resolves catalog image references to files inside ``roots`` (resolved once)."""

    def __init__(self, roots: Sequence[Path]) -> None:
        self._roots = [Path(r).resolve() for r in roots]

    def resolve(self, ref: str) -> Path | ImageRefused:
        if not ref or len(ref) > MAX_REF_LENGTH or "\x00" in ref:  # no file has such a path
            return ImageRefused("not_found", "no such image")  # the same answer as the others
        if ref.startswith("file://"):
            ref = ref[len("file://"):]
        if "://" in ref or ref.startswith("data:"):
            return ImageRefused("not_local", "only local catalog images are served here; "
                                "the page loads http(s) images from their own URL")
        try:
            path = Path(ref).resolve(strict=True)
        except (OSError, RuntimeError):
            return ImageRefused("not_found", "no such image")
        if not any(path.is_relative_to(root) for root in self._roots):
            return ImageRefused("not_found", "no such image")  # same answer: no probing
        if path.suffix.lower() not in IMAGE_SUFFIXES or not path.is_file():
            return ImageRefused("not_found", "no such image")
        return path


class CatalogImage(FileResponse):
    """A file :meth:`ImageRoots.resolve` allowed (``OSError`` if it is gone since). Starlette
    re-sent the whole file to a browser revalidating its copy, and answered a Range it could
    not serve in plain text; here:

    * ``If-None-Match`` naming the current ETag (or ``*``), or, without it, an
      ``If-Modified-Since`` not older than the file, is a 304 with no body (RFC 9110 13.1-13.2);
    * a Range it cannot read is the API's ``bad_range`` (400), one that starts past the end
      ``range_not_satisfiable`` (416, ``Content-Range: bytes */size``);
    * a Range in another unit than ``bytes`` is ignored, as RFC 9110 14.2 requires.
    """

    def __init__(self, path: Path, headers: Mapping[str, str]) -> None:
        super().__init__(path, headers=headers, stat_result=os.stat(path))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        asked = Headers(scope=scope)
        if self._unchanged(asked):
            kept = {k: v for k, v in self.headers.items() if k in ("etag", "cache-control")}
            await Response(status_code=304, headers=kept)(scope, receive, send)
            return
        refused: list[int] = []

        async def unless_refused(message: Message) -> None:
            """FileResponse answers 400 and 416 only for a Range: held back, replaced below."""
            if message["type"] == "http.response.start" and message["status"] in (400, 416):
                refused.append(message["status"])
            if not refused:
                await send(message)

        await super().__call__(_bytes_ranges_only(scope, asked), receive, unless_refused)
        if refused:
            await self._range_refused(refused[0], asked.get("range", ""))(scope, receive, send)

    def _unchanged(self, asked: Headers) -> bool:
        """If-None-Match decides when it is there (weak comparison); If-Modified-Since only
        without it, and an unreadable date is ignored."""
        tags = asked.get("if-none-match")
        if tags is not None:
            listed = {tag.strip().removeprefix("W/") for tag in tags.split(",")}
            return "*" in listed or self.headers["etag"].removeprefix("W/") in listed
        since = asked.get("if-modified-since")
        if since is None or self.stat_result is None:
            return False
        try:
            when = parsedate_to_datetime(since)
        except (TypeError, ValueError):
            return False
        if when.tzinfo is None:  # "-0000": UTC as well
            when = when.replace(tzinfo=timezone.utc)
        return int(self.stat_result.st_mtime) <= when.timestamp()

    def _range_refused(self, status: int, asked: str) -> Response:
        size = self.stat_result.st_size if self.stat_result is not None else 0
        shown = repr(asked if len(asked) <= 64 else asked[:64] + "...")
        if status == 416:
            return error_response(416, "range_not_satisfiable",
                                  f"the Range {shown} starts past the end of this {size}-byte "
                                  "image", headers={"Content-Range": f"bytes */{size}"})
        return error_response(400, "bad_range",
                              f"the Range {shown} is not bytes=FIRST-LAST, bytes=FIRST- or "
                              "bytes=-SUFFIX (comma-separated, FIRST not after LAST)")


def _bytes_ranges_only(scope: Scope, asked: Headers) -> Scope:
    """``scope`` without its Range header when that asks for another unit than bytes (which
    FileResponse refuses with a 400: RFC 9110 says to ignore it and send the whole file)."""
    unit, equals, _ = asked.get("range", "").partition("=")
    if not equals or unit.strip().lower() == "bytes":
        return scope
    return {**scope, "headers": [(k, v) for k, v in scope["headers"] if k.lower() != b"range"]}
