"""Product images for the search page: only files inside the configured image roots.

A hit's ``image_ref`` is whatever the catalog said: a local path, an http(s) URL, or inline
data. Local paths are served when, after resolving every symlink, they lie inside one of the
roots and look like an image; nothing else on disk is reachable, whatever the caller puts in
the reference (``..``, symlinks out of a root, absolute paths, NUL bytes). http(s) URLs are
never fetched by the server: the page hands them to the browser as they are.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"})
MAX_REF_LENGTH = 4096


@dataclass(frozen=True)
class ImageRefused:
    """Why a reference is not served (the API answers 404 or 400 with this reason)."""

    reason: str
    detail: str


class ImageRoots:
    """Resolves catalog image references to files inside ``roots`` (resolved once)."""

    def __init__(self, roots: Sequence[Path]) -> None:
        self._roots = [Path(r).resolve() for r in roots]

    def resolve(self, ref: str) -> Path | ImageRefused:
        if not ref or len(ref) > MAX_REF_LENGTH or "\x00" in ref:
            return ImageRefused("bad_reference", "an image reference is a non-empty path")
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
