"""Product events: the contract between shops and the ingest service.

Events are JSON on one topic, keyed by ``product_id`` so that every event of a product lands on
the same partition and is applied in order. Each event carries a per-product ``version``; an
event whose version is not newer than the stored state is ignored as stale, so replays and
out-of-order deliveries never roll a listing back.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import re
from array import array
from datetime import datetime, timezone
from decimal import Decimal
from ipaddress import ip_address
from itertools import accumulate
from typing import Annotated, Any, Final, Literal, TypeAlias
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from schema.errors import ItemError, Reason

SCHEMA_VERSION: Final = 1

MAX_TITLE_CHARS: Final = 512
MAX_CATEGORY_CHARS: Final = 512
MAX_SELLER_CHARS: Final = 128
MAX_PRICE: Final = Decimal("1e12")
"""Limits of a listing's text fields and price; the collection's fields are sized for them
(:mod:`schema.collection`) and ``lookalike eval`` holds its galleries to them."""

MAX_EVENT_BYTES: Final = 1024 * 1024
"""Largest payload parsed at all (larger: ``message_too_large``); Kafka's default limit."""
MAX_NESTING: Final = 16
"""Deepest ``[``/``{`` nesting accepted (an event needs 3); checked before parsing."""
MAX_NUMBER_CHARS: Final = 40
"""Longest JSON number literal accepted (a 5,000-digit integer must not reach ``int()``)."""

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
SCHEME = re.compile(r"^\s*[A-Za-z][A-Za-z0-9+.\-]*://")
"""A URL's start (``scheme://``): an image reference with one is a URL, never a path. Leading
whitespace is allowed before it, as the fields are stripped: ``" http://..."`` is a URL."""

ProductId = Annotated[
    str,
    Field(
        min_length=1,
        max_length=128,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/@+\-]*$",
        description="Shop-wide product (listing) id: letters, digits and . _ : / @ + -",
    ),
]
Currency = Annotated[
    str, Field(pattern=r"^[A-Z]{3}$",
               description="ISO 4217 form, e.g. USD: three capitals, not looked up")
]
Price = Annotated[
    Decimal,
    Field(ge=0, le=MAX_PRICE, max_digits=18, decimal_places=4, allow_inf_nan=False),
]
MAX_ATTRIBUTE_NAME_CHARS: Final = 128
"""The longest attribute name (a catalog line's extra field: ``color``, ``size``)."""
MAX_VERSION: Final = 2**62
"""The largest event version (it is stored in an int64 field)."""
Version = Annotated[
    int,
    Field(ge=0, le=MAX_VERSION, strict=True, description="Monotonic per-product version"),
]

MAX_IMAGES_PER_PRODUCT = 32
MAX_CATEGORY_DEPTH = 8


class StrictModel(BaseModel):
    """Base for contracts: unknown keys are errors, values are never coerced silently."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


def no_control_chars(value: str, what: str) -> str:
    if _CONTROL.search(value):
        raise ValueError(f"{what} must not contain control characters")
    return value


_HOST_NAME = re.compile(r"[A-Za-z0-9_.-]+")
"""What a host name may hold once IDNA-encoded (underscores: some CDNs use them)."""


def url_problem(url: str) -> str | None:
    """Why ``url`` is no image URL to fetch, or None. One rule for an event's URLs (refused
    as ``invalid_event``) and the targets of redirects (``bad_reference``, ingest/fetch.py):
    http(s), no control characters, parseable (``http://[::1/x`` made urlsplit raise a bare
    ValueError, an ``image_error``), and a host that is an address or a name DNS can carry
    (a NUL in a redirect's host was looked up cut at the NUL). A bad port or credentials are
    the fetcher's to refuse (``bad_reference``)."""
    if _CONTROL.search(url):
        return "image url must not contain control characters"
    if not url.lower().startswith(("http://", "https://")):
        return "image url must be http:// or https://"
    try:
        host = urlsplit(url).hostname or ""
    except ValueError:
        return "image url cannot be parsed (brackets around its host?)"
    if not host:
        return "image url has no host"
    try:
        ip_address(host)
        return None
    except ValueError:
        pass
    try:
        ascii_host = host.encode("idna").decode("ascii")
    except UnicodeError:
        return "image url's host is no valid host name (empty or over-long label)"
    if not _HOST_NAME.fullmatch(ascii_host):
        return "image url's host has characters a host name cannot have"
    return None


def normalize_category(value: str) -> str:
    """Validate a category path such as ``Men/Tops/Hoodies & Sweatshirts``.

    Segments are separated by ``/``; each is trimmed and must be non-empty.
    """
    no_control_chars(value, "category")
    parts = [p.strip() for p in value.split("/")]
    if not value.strip() or any(not p for p in parts):
        raise ValueError("category must be a '/'-separated path of non-empty segments")
    if len(parts) > MAX_CATEGORY_DEPTH:
        raise ValueError(f"category has more than {MAX_CATEGORY_DEPTH} levels")
    return "/".join(parts)


def category_ancestors(category: str) -> list[str]:
    """``A/B/C`` -> ``["A", "A/B", "A/B/C"]``: stored so that a filter on a category also
    matches its sub-paths with exact comparisons (no LIKE patterns to escape)."""
    parts = category.split("/")
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


def image_key(reference: str) -> str:
    """The 16-hex-digit key of an image reference (URL, path or inline data), as stored in
    ``image_key`` and in the row's primary key."""
    return hashlib.sha1(reference.encode("utf-8")).hexdigest()[:16]


class ImageRef(StrictModel):
    """One product image: exactly one of an http(s) URL, a local path or inline base64 bytes.

    A bare string in an event's ``images`` list is taken as a URL when it has a scheme
    (``https://...``) and as a path otherwise.
    """

    url: Annotated[str, Field(max_length=2048)] | None = None
    path: Annotated[str, Field(max_length=1024)] | None = None
    data: Annotated[str, Field(description="base64-encoded image bytes")] | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value: Any) -> Any:
        if isinstance(value, str):
            # Anything with a scheme is a URL (and only http/https pass validation).
            return {"url": value} if SCHEME.match(value) else {"path": value}
        return value

    @model_validator(mode="after")
    def _exactly_one(self) -> ImageRef:
        given = [n for n in ("url", "path", "data") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError(
                f"an image needs exactly one of url, path or data (got {given or 'none'})"
            )
        if self.url is not None and (problem := url_problem(self.url)) is not None:
            raise ValueError(problem)
        if self.path is not None:
            no_control_chars(self.path, "image path")
        if self.data is not None:
            try:
                base64.b64decode(self.data, validate=True)
            except (binascii.Error, ValueError) as exc:
                raise ValueError(f"image data is not valid base64: {exc}") from None
        return self

    @property
    def reference(self) -> str:
        """A stable, human-readable reference to store with the vector."""
        if self.url is not None:
            return self.url
        if self.path is not None:
            return self.path
        assert self.data is not None
        digest = hashlib.sha256(self.data.encode("ascii")).hexdigest()[:32]
        return f"inline:sha256:{digest}"

    @property
    def key(self) -> str:
        """Deterministic image key: the same reference always gives the same row."""
        return image_key(self.reference)

    def inline_bytes(self) -> bytes:
        assert self.data is not None
        return base64.b64decode(self.data, validate=True)


_EPOCH: Final = datetime(1970, 1, 1, tzinfo=timezone.utc)


def epoch_ms(moment: datetime) -> int:
    """Whole milliseconds from the Unix epoch to ``moment`` (timezone-aware), floored.

    Exact integer arithmetic on the timedelta: ``int(moment.timestamp() * 1000)`` goes
    through a float and was one millisecond short for ~0.6 % of values outside ~2001-2037
    (``1978-09-08T07:20:59.715Z`` gave 274087259714)."""
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


class _EventBase(StrictModel):
    schema_version: Literal[1] = SCHEMA_VERSION
    product_id: ProductId
    version: Version | None = None
    updated_at: datetime | None = Field(
        default=None, description="Alternative to version: its epoch milliseconds become it"
    )

    @field_validator("schema_version", mode="before")
    @classmethod
    def _exact_int(cls, value: Any) -> Any:
        # ``True == 1`` in Python, so a Literal[1] alone would accept ``true``.
        if type(value) is not int:
            raise ValueError("schema_version must be the integer 1")
        return value

    @field_validator("updated_at", mode="before")
    @classmethod
    def _iso_text(cls, value: Any) -> Any:
        # Numbers are not timestamps here: epoch seconds vs ms would be a silent guess.
        if value is not None and not isinstance(value, str | datetime):
            raise ValueError("updated_at must be an ISO-8601 string with a timezone")
        return value

    @model_validator(mode="after")
    def _resolve_version(self) -> _EventBase:
        if self.version is None:
            if self.updated_at is None:
                raise ValueError("either version or updated_at is required")
            if self.updated_at.tzinfo is None:
                raise ValueError("updated_at must carry a timezone (e.g. 2026-01-01T00:00:00Z)")
            version = epoch_ms(self.updated_at)
            if version < 0:
                raise ValueError("updated_at must not be before 1970-01-01T00:00:00Z")
            object.__setattr__(self, "version", version)
        return self

    @property
    def resolved_version(self) -> int:
        assert self.version is not None
        return self.version


class ProductUpserted(_EventBase):
    """The full current state of a listing; replaces whatever was stored for the product."""

    type: Literal["product.upserted"] = "product.upserted"
    title: Annotated[str, Field(min_length=1, max_length=MAX_TITLE_CHARS)]
    category: Annotated[str, Field(min_length=1, max_length=MAX_CATEGORY_CHARS)]
    price: Price
    currency: Currency
    images: Annotated[list[ImageRef], Field(min_length=1, max_length=MAX_IMAGES_PER_PRODUCT)]
    seller_id: Annotated[str, Field(min_length=1, max_length=MAX_SELLER_CHARS)]
    attributes: Annotated[dict[
        Annotated[str, Field(min_length=1, max_length=MAX_ATTRIBUTE_NAME_CHARS)],
        Annotated[str, Field(max_length=1024)],
    ], Field(max_length=64)] = Field(default_factory=dict)

    @field_validator("title", "seller_id")
    @classmethod
    def _text(cls, value: str) -> str:
        return no_control_chars(value, "text fields")

    @field_validator("category")
    @classmethod
    def _category(cls, value: str) -> str:
        return normalize_category(value)

    @field_validator("attributes")
    @classmethod
    def _attribute_names(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            no_control_chars(name, "attribute names")
        return value

    @model_validator(mode="after")
    def _distinct_images(self) -> ProductUpserted:
        keys = [img.key for img in self.images]
        if len(set(keys)) != len(keys):
            raise ValueError("images must not repeat the same reference")
        return self


class ProductPriceChanged(_EventBase):
    """Updates the stored price without fetching or embedding images again."""

    type: Literal["product.price_changed"] = "product.price_changed"
    price: Price
    currency: Currency


class ProductDelisted(_EventBase):
    """Removes every stored row of the product."""

    type: Literal["product.delisted"] = "product.delisted"


ProductEvent: TypeAlias = Annotated[
    ProductUpserted | ProductPriceChanged | ProductDelisted, Field(discriminator="type")
]
_EVENT_ADAPTER: TypeAdapter[ProductEvent] = TypeAdapter(ProductEvent)


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False)[:5]:
        loc = ".".join(str(p) for p in err["loc"]) or "event"
        parts.append(f"{loc}: {err['msg']}")
    more = len(exc.errors()) - 5
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


def _bounded_int(text: str) -> int:
    if len(text) > MAX_NUMBER_CHARS:
        raise ValueError(f"a number has more than {MAX_NUMBER_CHARS} characters")
    return int(text)


def _bounded_float(text: str) -> float:
    if len(text) > MAX_NUMBER_CHARS:
        raise ValueError(f"a number has more than {MAX_NUMBER_CHARS} characters")
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} does not fit a 64-bit float")
    return value


def _no_constant(text: str) -> float:
    raise ValueError(f"{text} is not valid JSON")


_STRINGS = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_DEPTH_STEPS = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")
"""``[``/``{`` to 1, ``]``/``}`` to -1 (as signed bytes)."""
_NOT_BRACKETS = bytes(sorted(set(range(256)) - set(b"[]{}")))


def check_nesting(data: bytes) -> None:
    """Refuse deep nesting before ``json`` recurses into it (RecursionError, C stack): strip
    strings, keep only brackets, and count. Linear in the payload and done in C (the API's
    JSON bodies may be 20 MiB: a Python loop over their brackets took ~2 s)."""
    steps = array("b", _STRINGS.sub(b"", data).translate(_DEPTH_STEPS, _NOT_BRACKETS))
    if max(accumulate(steps), default=0) > MAX_NESTING:
        raise ItemError(Reason.MALFORMED_JSON, f"nesting deeper than {MAX_NESTING} levels")


def load_json(payload: bytes | str) -> Any:
    """Parse one untrusted JSON document within explicit limits (size, nesting, number
    length); every way it can fail is an :class:`ItemError`, never another exception."""
    data = payload.encode("utf-8", "surrogatepass") if isinstance(payload, str) else payload
    if len(data) > MAX_EVENT_BYTES:
        raise ItemError(
            Reason.MESSAGE_TOO_LARGE, f"{len(data)} bytes > limit {MAX_EVENT_BYTES}"
        )
    check_nesting(data)
    try:
        value = json.loads(
            data, parse_int=_bounded_int, parse_float=_bounded_float, parse_constant=_no_constant
        )
        # "\ud800" is valid JSON but no valid text: it would fail later, in the store's encoder.
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeError: ValueError
        raise ItemError(Reason.MALFORMED_JSON, str(exc)[:300]) from None
    return value


def parse_event(payload: bytes | str) -> ProductEvent:
    """Decode and validate one event, raising :class:`ItemError` naming field and problem."""
    raw = load_json(payload)
    if not isinstance(raw, dict):
        raise ItemError(Reason.INVALID_EVENT, "event must be a JSON object")
    schema_version = raw.get("schema_version", SCHEMA_VERSION)
    if isinstance(schema_version, int) and not isinstance(schema_version, bool) and (
        schema_version != SCHEMA_VERSION
    ):
        raise ItemError(
            Reason.UNSUPPORTED_SCHEMA_VERSION,
            f"schema_version {schema_version} is not supported "
            f"(this service reads {SCHEMA_VERSION})",
        )
    try:
        return _EVENT_ADAPTER.validate_python(raw)
    except ValidationError as exc:
        raise ItemError(Reason.INVALID_EVENT, _describe(exc)) from None


def dump_event(event: ProductUpserted | ProductPriceChanged | ProductDelisted) -> bytes:
    """Serialise an event for the wire (decimals as strings keep prices exact)."""
    return event.model_dump_json(exclude_none=True).encode("utf-8")
