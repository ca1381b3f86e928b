"""Load one image reference: fetch, decode, and turn every failure into an ItemError.

Ingest and reindex both go from a stored or sent reference to pixels; doing it here once means
they fail the same way, with the same reasons, and an unexpected decoder bug fails one image
(``image_error``) in both rather than a whole batch.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import TypeVar

from PIL import Image

from embedding.decode import decode_image
from ingest.fetch import ImageFetcher
from schema.errors import ItemError, Reason
from schema.events import ImageRef

log = logging.getLogger(__name__)

T = TypeVar("T")


def load_image_ref(
    fetcher: ImageFetcher,
    image: ImageRef,
    then: Callable[[Image.Image], T],
    *,
    max_pixels: int,
    min_size: int | None = None,
    cpu_slot: AbstractContextManager[object] | None = None,
    cutoff: float | None = None,
    fetched: Callable[[], None] | None = None,
) -> T:
    """Fetch ``image``, decode it, and hand it to ``then`` (e.g. the model's preprocessing),
    decoding and ``then`` inside ``cpu_slot`` (CPU work is rationed; fetching is not).
    ``cutoff`` and ``fetched``: see ingest/fetch_queue.py (``Load``).

    Raises only :class:`ItemError`."""
    try:
        try:
            data = fetcher.fetch(image, cutoff=cutoff)
        finally:
            if fetched is not None:
                fetched()
        with cpu_slot or nullcontext():
            return then(decode_image(data, max_pixels, min_size=min_size))
    except ItemError:
        raise
    except Exception as exc:  # a decoder or preprocessing bug fails this image only
        log.debug("unexpected error loading %s", image.reference[:200], exc_info=True)
        raise ItemError(Reason.IMAGE_ERROR, f"{type(exc).__name__}: {exc}"[:300]) from exc
