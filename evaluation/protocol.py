"""Evaluation protocols: a gallery in the catalog format and a queries file.

GALLERY.jsonl: one product per line, in the catalog format ``lookalike publish`` reads
(``product_id``, ``category``, ``images``: each a path string, a ``file://`` URL or an object
with ``path``, relative to the file's folder). A ``product_id`` is a string or a JSON integer
(read as its decimal string, ``1`` is ``"1"``); ``category`` may be null or missing
(:data:`UNCATEGORIZED`); ``title``, ``price``, ``currency`` and ``seller_id`` may be null or
missing (given, within a product event's limits). Unknown keys are ignored, ``type`` among
them unless it names another product event (``product.delisted``, ``product.price_changed``:
not a listing). For ``--task same-item`` each line is a listing: several may show the same
item, even with the same photo.
QUERIES.jsonl: ``{"image": PATH, "relevant": [product_id, ...]}`` per line, ``PATH`` relative
to the queries file's folder. ``relevant`` may be one id instead of a list, and empty, null or
missing: a query whose right answer is nothing (same-item scores it; retrieval skips it).
Relevant ids that are not in the gallery are dropped with a warning naming the line.

Every mistake in a line is a :class:`ProtocolError` naming the file, the line and the problem,
and so is a photo that does not exist: the list is wrong, not the photo. A photo that exists
but cannot be decoded is found when it is embedded, and is a per-item skip
(:mod:`evaluation.run`).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from pydantic import TypeAdapter, ValidationError

from ingest.publish import catalog_lines
from schema.collection import MAX_PRODUCT_ID_BYTES, too_long
from schema.events import (
    MAX_PRICE,
    MAX_SELLER_CHARS,
    MAX_TITLE_CHARS,
    SCHEME,
    Currency,
    ProductDelisted,
    ProductPriceChanged,
    ProductUpserted,
    image_key,
    normalize_category,
)
from schema.records import MAX_REF_LENGTH, ImageRecord, category_levels, image_pk
from store.expressions import check_string

log = logging.getLogger("lookalike")

MAX_LISTED = 5
"""Problems of one kind shown in an error before '... and N more'."""
UNCATEGORIZED = "uncategorized"
"""The category of a gallery product whose line gives none (missing, null or empty)."""
_CURRENCY: TypeAdapter[str] = TypeAdapter(Currency)
_EVENT_TYPES = frozenset(str(event.model_fields["type"].default)
                         for event in (ProductUpserted, ProductPriceChanged, ProductDelisted))


class ProtocolError(ValueError):
    """The gallery or queries file is wrong; the message says where and how."""


@dataclass(frozen=True)
class GalleryProduct:
    product_id: str
    category: str
    title: str
    price: float
    currency: str
    images: tuple[Path, ...]
    seller_id: str = "eval"
    where: str = ""
    """``FILE:LINE`` of its line, for the warnings about its photos."""

    def record(self, path: Path, vector: list[float], model_version: str) -> ImageRecord:
        """The row its photo ``path`` is indexed as (one per product and distinct photo)."""
        key = image_key(str(path))
        return ImageRecord(
            pk=image_pk(self.product_id, key), product_id=self.product_id, image_key=key,
            category=self.category, **category_levels(self.category), price=self.price,
            currency=self.currency, title=self.title, seller_id=self.seller_id,
            image_ref=str(path)[-MAX_REF_LENGTH:], model_version=model_version, version=1,
            updated_at_ms=0, vector=vector,
        )


@dataclass(frozen=True)
class Query:
    images: tuple[Path, ...]
    """One photo (``"image"``) or several views of the same item (``"images"``), searched
    together: a product scores its best match over all of them."""
    relevant: frozenset[str]
    category: str
    """The category of its (first) relevant product: what per-category figures group by
    (:data:`UNCATEGORIZED` for a query with none)."""
    where: str = ""
    """``FILE:LINE`` of its line, for the warnings and the skipped queries."""

    @property
    def image(self) -> Path:
        return self.images[0]


def _lines(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """The file's JSON objects by line number, read as ``lookalike publish`` reads a catalog
    (ingest/publish.py); here the first bad line stops the evaluation."""
    try:
        lines = list(catalog_lines(path))
    except OSError as exc:
        raise ProtocolError(f"{path}: cannot read: {exc.strerror or exc}") from None
    out = []
    for line in lines:
        if "__error__" in line.raw:
            raise ProtocolError(f"{path}:{line.line}: {line.raw['__error__']}")
        out.append((line.line, line.raw))
    if not out:
        raise ProtocolError(f"{path}: no lines")
    return out


def _image_path(entry: Any, base: Path, where: str) -> Path:
    """A local photo: eval and train read files only (a URL would become a path that cannot
    exist, ``cat/http:/host/x.jpg``)."""
    if isinstance(entry, dict):
        entry = entry.get("path", entry.get("url"))
    if not isinstance(entry, str) or not entry:
        raise ProtocolError(f"{where}: an image must be a path string or an object with 'path'")
    if entry.strip().lower().startswith("file:"):
        return _file_url(entry, where)
    if SCHEME.match(entry):  # publish hands URLs to ingest's fetcher; eval and train open files
        raise ProtocolError(f"{where}: image {entry[:80]!r} is a URL; this command reads local "
                            "files only (download the photos and list their paths)")
    return (base / entry).resolve()


def _file_url(entry: str, where: str) -> Path:
    """``file:///abs/x.jpg`` (or ``file://localhost/...``) as the local path it names."""
    url = urlsplit(entry.strip())
    if url.netloc not in ("", "localhost") or not url.path.startswith("/"):
        raise ProtocolError(f"{where}: image {entry[:80]!r}: a file URL must name an absolute "
                            "local path (file:///path/to/photo.jpg)")
    return Path(unquote(url.path)).resolve()


def read_id(value: Any) -> str | None:
    """A product id as a line gives it: a non-empty string, or a JSON integer read as its
    decimal string (``1`` is ``"1"``); None for anything else (a float, true/false, a list)."""
    if isinstance(value, str):
        return value or None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def _category(value: Any, where: str) -> str:
    """The line's category path; :data:`UNCATEGORIZED` when missing, null or empty."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if value is None or (isinstance(value, str) and not value.strip()):
        return UNCATEGORIZED
    if not isinstance(value, str):
        raise ProtocolError(f"{where}: category must be a string such as 'Men/Tops' or null, "
                            f"got {str(value)[:40]!r}")
    try:
        return normalize_category(value)
    except ValueError as exc:
        raise ProtocolError(f"{where}: category: {exc}") from None


def _missing(paths: list[tuple[str, Path]], what: str) -> None:
    """Every photo must be a regular file: a folder, a FIFO (which would wait for ever) or a
    device (``/dev/zero``, read for ever) is named as such, a missing one as not found."""
    odd = [(where, p) for where, p in paths if p.exists() and not p.is_file()]
    if odd:
        shown = "; ".join(f"{where}: {p}" for where, p in odd[:MAX_LISTED])
        more = f" ... and {len(odd) - MAX_LISTED} more" if len(odd) > MAX_LISTED else ""
        raise ProtocolError(f"{len(odd)} {what} image(s) not a regular file: {shown}{more}")
    gone = [(where, p) for where, p in paths if not p.is_file()]
    if gone:
        shown = "; ".join(f"{where}: {p}" for where, p in gone[:MAX_LISTED])
        more = f" ... and {len(gone) - MAX_LISTED} more" if len(gone) > MAX_LISTED else ""
        raise ProtocolError(f"{len(gone)} {what} image(s) not found: {shown}{more}")


def _price(value: Any, where: str) -> float:
    """A listing's price as the catalog allows it (0 to :data:`schema.events.MAX_PRICE`), 0
    when null or missing: NaN or infinity would sort price comparison's listings arbitrarily."""
    if value is None:
        return 0.0
    try:
        price = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError):
        price = math.nan
    most = float(MAX_PRICE)
    if not (math.isfinite(price) and 0.0 <= price <= most):
        raise ProtocolError(f"{where}: price must be a number from 0 to {most:,.0f} or null, "
                            f"got {str(value)[:40]!r}")
    return price


def _currency(value: Any, where: str) -> str:
    """The listing's currency, checked as product events check it; ``XXX`` when missing."""
    if value is None or value == "":
        return "XXX"
    try:
        return str(_CURRENCY.validate_python(value))
    except ValidationError:
        raise ProtocolError(f"{where}: currency must be a 3-letter ISO 4217 code such as USD, "
                            f"got {str(value)[:40]!r}") from None


def _text(obj: dict[str, Any], key: str, default: str, most: int, where: str) -> str:
    value = obj.get(key)
    if value is None or value == "":
        return default
    text = str(value)
    if len(text) > most:
        raise ProtocolError(f"{where}: {key} must be at most {most} characters")
    return text


def _fits(product: GalleryProduct) -> None:
    """Every text its rows store must fit the collection's field (in bytes, as a Milvus
    server counts them): found after the model has loaded and the photos are embedded, it
    would read as the store failing."""
    for path in dict.fromkeys(product.images):
        wrong = too_long(product.record(path, [], "").to_row())
        if wrong is not None:
            name, size, most = wrong
            raise ProtocolError(f"{product.where}: {name} is {size:,} bytes (UTF-8); the "
                                f"collection stores at most {most:,}")


def load_gallery(path: Path) -> list[GalleryProduct]:
    base = path.resolve().parent
    products: list[GalleryProduct] = []
    seen: dict[str, int] = {}
    to_check: list[tuple[str, Path]] = []
    for number, obj in _lines(path):
        where = f"{path}:{number}"
        kind = obj.get("type")
        if kind in _EVENT_TYPES and kind != "product.upserted":  # another event: no listing
            raise ProtocolError(f"{where}: type: {str(kind)[:40]!r}: a gallery lists products "
                                "(product.upserted); other events are not listings")
        pid = read_id(obj.get("product_id"))
        if pid is None:
            raise ProtocolError(f"{where}: product_id must be a non-empty string or an integer")
        try:  # it goes into the store's expressions, which refuse control characters
            check_string(pid, "product_id")
        except ValueError as exc:
            raise ProtocolError(f"{where}: {exc}") from None
        if len(pid.encode()) > MAX_PRODUCT_ID_BYTES:
            raise ProtocolError(f"{where}: product_id must be at most {MAX_PRODUCT_ID_BYTES} bytes")
        if pid in seen:
            raise ProtocolError(f"{where}: product_id {pid!r} repeats line {seen[pid]}")
        seen[pid] = number
        category = _category(obj.get("category"), where)
        images = obj.get("images")
        if not isinstance(images, list) or not images:
            raise ProtocolError(f"{where}: images must be a non-empty list")
        paths = tuple(_image_path(entry, base, where) for entry in images)
        to_check.extend((where, p) for p in paths)
        products.append(GalleryProduct(
            product_id=pid, category=category,
            title=_text(obj, "title", "", MAX_TITLE_CHARS, where),
            price=_price(obj.get("price"), where), currency=_currency(obj.get("currency"), where),
            images=paths, seller_id=_text(obj, "seller_id", "eval", MAX_SELLER_CHARS, where),
            where=where,
        ))
        _fits(products[-1])
    _missing(to_check, "gallery")
    return products


MAX_QUERY_IMAGES = 16


def _query_images(obj: dict[str, Any], base: Path, where: str) -> tuple[Path, ...]:
    """``"image": PATH`` or ``"images": [PATH, ...]`` (several views), exactly one of them."""
    if ("image" in obj) == ("images" in obj):
        raise ProtocolError(f"{where}: a query needs either \"image\" or \"images\", not both")
    if "image" in obj:
        return (_image_path(obj["image"], base, where),)
    entries = obj["images"]
    if not isinstance(entries, list) or not entries or len(entries) > MAX_QUERY_IMAGES:
        raise ProtocolError(
            f"{where}: images must be a list of 1 to {MAX_QUERY_IMAGES} image paths")
    return tuple(_image_path(entry, base, where) for entry in entries)


def _relevant(value: Any, where: str) -> list[str]:
    """The line's relevant ids: a list of ids, or one id alone; none when empty, null or
    missing (a query whose right answer is nothing)."""
    if value is None:
        return []
    entries = value if isinstance(value, list) else [value]
    ids = [read_id(entry) for entry in entries]
    if any(pid is None for pid in ids):
        raise ProtocolError(f"{where}: relevant must be a list of product ids (strings or "
                            "integers), one id, or empty")
    return list(dict.fromkeys(pid for pid in ids if pid is not None))


def load_queries(path: Path, gallery: list[GalleryProduct]) -> list[Query]:
    """The queries, each with its relevant products that are in the gallery (an unknown id is
    dropped with a warning naming the line; a query may be left with none)."""
    base = path.resolve().parent
    category_of = {p.product_id: p.category for p in gallery}
    queries: list[Query] = []
    to_check: list[tuple[str, Path]] = []
    for number, obj in _lines(path):
        where = f"{path}:{number}"
        images = _query_images(obj, base, where)
        relevant = _relevant(obj.get("relevant"), where)
        unknown = [r for r in relevant if r not in category_of]
        if unknown:
            known = [r for r in relevant if r in category_of]
            log.warning("eval: %s: relevant product(s) not in the gallery, dropped: %s%s", where,
                        ", ".join(repr(m) for m in unknown[:MAX_LISTED]),
                        "" if known else " (none left: the query's right answer is nothing)")
            relevant = known
        to_check.extend((where, image) for image in images)
        category = category_of[relevant[0]] if relevant else UNCATEGORIZED
        queries.append(Query(images, frozenset(relevant), category, where))
    _missing(to_check, "query")
    return queries
