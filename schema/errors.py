"""The one kind of per-item failure: a :class:`Reason` code plus a human-readable detail.

Every event and every image ends applied, stale or failed *with a reason*; the reason is what
dead-letter headers (``lookalike.reason``), image-failure counts and reindex reports carry, so
operators can count and alert on it. Defining the codes once here keeps the documented table
(docs/hardening.md, "Reasons"), the dead letters and the log lines from drifting apart
(``tests/test_reasons.py`` checks that table against this enum).

``ItemError`` is raised deep inside fetch/decode/parse code and caught at the stage boundary,
where it becomes a value (``failure``) attached to the item; nothing but the item fails.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


class Reason(str, Enum):
    """Machine-readable reason codes (the values are the wire/log spelling)."""

    # -- events (dead letters) --------------------------------------------------------------
    MESSAGE_TOO_LARGE = "message_too_large"
    MALFORMED_JSON = "malformed_json"
    INVALID_EVENT = "invalid_event"
    UNSUPPORTED_SCHEMA_VERSION = "unsupported_schema_version"
    MISSING_KEY = "missing_key"
    KEY_MISMATCH = "key_mismatch"
    CORRUPT_RECORD = "corrupt_record"
    ALL_IMAGES_FAILED = "all_images_failed"
    PRODUCT_NOT_LISTED = "product_not_listed"
    SUPERSEDED_UPSERT_FAILED = "superseded_upsert_failed"
    # -- stale events (not dead-lettered) ---------------------------------------------------
    STALE_VERSION = "stale_version"
    # -- images (counted per image; in a dead letter's detail) ------------------------------
    ADDRESS_NOT_ALLOWED = "address_not_allowed"
    PATH_NOT_ALLOWED = "path_not_allowed"
    NOT_FOUND = "not_found"
    UNREADABLE = "unreadable"
    HTTP_STATUS = "http_status"
    TOO_MANY_REDIRECTS = "too_many_redirects"
    TIMEOUT = "timeout"
    UNREACHABLE = "unreachable"
    BAD_REFERENCE = "bad_reference"
    INLINE_IMAGE = "inline_image"
    EMPTY_IMAGE = "empty_image"
    IMAGE_TOO_LARGE = "image_too_large"
    CORRUPT_IMAGE = "corrupt_image"
    UNSUPPORTED_FORMAT = "unsupported_format"
    IMAGE_ERROR = "image_error"

    def __str__(self) -> str:
        return self.value


DEAD_LETTER_REASONS: tuple[Reason, ...] = (
    Reason.MESSAGE_TOO_LARGE, Reason.MALFORMED_JSON, Reason.INVALID_EVENT,
    Reason.UNSUPPORTED_SCHEMA_VERSION, Reason.MISSING_KEY, Reason.KEY_MISMATCH,
    Reason.CORRUPT_RECORD, Reason.ALL_IMAGES_FAILED, Reason.PRODUCT_NOT_LISTED,
    Reason.SUPERSEDED_UPSERT_FAILED,
)
"""The reasons an event is dead-lettered for (the metrics declare one series each)."""

IMAGE_REASONS: tuple[Reason, ...] = (
    Reason.ADDRESS_NOT_ALLOWED, Reason.PATH_NOT_ALLOWED, Reason.NOT_FOUND, Reason.UNREADABLE,
    Reason.HTTP_STATUS, Reason.TOO_MANY_REDIRECTS, Reason.TIMEOUT, Reason.UNREACHABLE,
    Reason.BAD_REFERENCE, Reason.INLINE_IMAGE, Reason.EMPTY_IMAGE, Reason.IMAGE_TOO_LARGE,
    Reason.CORRUPT_IMAGE, Reason.UNSUPPORTED_FORMAT, Reason.IMAGE_ERROR,
)
"""The reasons an image cannot be used for (counted per image)."""


def printable(detail: str) -> str:
    """``detail`` with control characters escaped (``\\x00``): a detail can quote what a
    sender or a server sent (a NUL in a redirect's Location), and it goes into log lines and
    the ``lookalike.detail`` header, where a raw NUL or newline forges or cuts them."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}" if m.group() < "\u0100"
                        else f"\\u{ord(m.group()):04x}", detail)


def clipped(detail: str, limit: int) -> str:
    """``detail`` cut to at most ``limit`` characters for a log line or a report, at the end
    of a whole part (``"; "``-separated, as an event's image failures are joined) or else of
    a word, with ``… (+N characters)`` saying how much was left out: a cut mid-word made a
    detail's own hint unreadable (``... e.g. '["/data/images"]'); image 1: ... read fr``)."""
    if len(detail) <= limit:
        return detail
    room = max(limit - 24, limit // 2)  # the marker's length for up to a 10^9-character detail
    head = detail[:room]
    cut = head.rfind("; ")
    if cut < room // 2:
        cut = head.rfind(" ")
    if cut < room // 2:
        cut = room
    head = head[:cut].rstrip(" ;,:")
    return f"{head} … (+{len(detail) - len(head)} characters)"


@dataclass(frozen=True)
class ItemFailure:
    """What became of one failed item: the value stored on events, images and reports. Its
    detail is :func:`printable`, however it was made."""

    reason: Reason
    detail: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "detail", printable(self.detail))


class ItemError(Exception):
    """Raised for one item (an event, an image) that cannot be used; carries its reason."""

    def __init__(self, reason: Reason, detail: str) -> None:
        detail = printable(detail)
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail

    @property
    def failure(self) -> ItemFailure:
        return ItemFailure(self.reason, self.detail)
