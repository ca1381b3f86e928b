"""Load one image reference: fetch, decode, and turn every failure into an ItemError.

Ingest and reindex both go from a stored or sent reference to pixels; doing it here once means
they fail the same way, with the same reasons, and an unexpected decoder bug fails one image
(``image_error``) in both rather than a whole batch.

Decoding a large photo takes hundreds of megabytes for a moment, and glibc keeps what a
thread freed in that thread's own malloc arena: 8 fetch threads that each decoded one
40-megapixel PNG held 4.7 GB between them for good. So ingest and reindex decode on a pool of
their own, ``decode_workers`` threads (:func:`decode_pool`, :func:`load_image_ref`'s
``decoder``), and after a large photo the freed memory is handed back to the system
(:func:`release_freed_memory`).
"""

from __future__ import annotations

import ctypes
import functools
import logging
import platform
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Final, TypeVar

from PIL import Image

from embedding.decode import decode_image
from ingest.fetch import ImageFetcher
from schema.errors import ItemError, Reason
from schema.events import ImageRef

log = logging.getLogger(__name__)

T = TypeVar("T")

LARGE_DECODE_PIXELS: Final = 8_000_000
"""Photos decoded at this size or larger (32 MB of RGB and more) are followed by a
``malloc_trim``; smaller ones reuse what the arena holds."""


def decode_pool(workers: int) -> ThreadPoolExecutor:
    """The threads that decode photos (``decoder`` of :func:`load_image_ref`): ingest's
    stages and ``lookalike reindex`` each hold one of ``decode_workers`` threads (settings
    ``images.decode_workers``; ``lookalike.app.decode_workers``), so that decoding does not
    preempt CPU inference and only those threads' malloc arenas ever hold a large photo."""
    return ThreadPoolExecutor(max(1, workers), thread_name_prefix="decode")


def load_image_ref(
    fetcher: ImageFetcher,
    image: ImageRef,
    then: Callable[[Image.Image], T],
    *,
    max_pixels: int,
    min_size: int | None = None,
    decoder: Executor | None = None,
    cutoff: float | None = None,
    fetched: Callable[[], None] | None = None,
) -> T:
    """Fetch ``image``, decode it, and hand it to ``then`` (e.g. the model's preprocessing),
    decoding and ``then`` on ``decoder``'s threads when given (CPU work is rationed and its
    memory stays with those threads; fetching is not), else on the calling thread.
    ``cutoff`` and ``fetched``: see ingest/fetch_queue.py (``Load``).

    Raises only :class:`ItemError`."""
    try:
        try:
            data = fetcher.fetch(image, cutoff=cutoff)
        finally:
            if fetched is not None:
                fetched()

        def decode() -> T:
            return _decode_then(data, then, max_pixels, min_size)

        if decoder is None:
            return decode()
        return decoder.submit(decode).result()
    except ItemError:
        raise
    except Exception as exc:  # a decoder or preprocessing bug fails this image only
        log.debug("unexpected error loading %s", image.reference[:200], exc_info=True)
        raise ItemError(Reason.IMAGE_ERROR, f"{type(exc).__name__}: {exc}"[:300]) from exc


def _decode_then(data: bytes, then: Callable[[Image.Image], T], max_pixels: int,
                 min_size: int | None) -> T:
    """``then`` of the decoded photo; a large photo's memory handed back once it is freed."""
    photo = decode_image(data, max_pixels, min_size=min_size)
    large = photo.width * photo.height >= LARGE_DECODE_PIXELS
    try:
        return then(photo)
    finally:
        del photo
        if large:
            release_freed_memory()


def release_freed_memory() -> None:
    """Hand freed heap memory back to the system (glibc's ``malloc_trim(0)``, all arenas;
    ~ms). Elsewhere (musl, macOS) nothing: their allocators return large blocks anyway."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        trim: Callable[[int], int] = ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None
    return trim
