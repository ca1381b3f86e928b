"""Catalog file -> ``product.upserted`` events (the ``lookalike publish`` command).

A catalog is JSON Lines: product_id, title, category, price, currency, images (each a path
string or an object with a ``path``/``url``, paths relative to the file), optional seller_id;
other keys (group_id, color, ...) become string attributes. Every line is validated before
anything is sent, so a bad file publishes nothing and every error is reported with its line.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kafka import KafkaProducer
from pydantic import ValidationError

from embedding.files import check_regular
from schema.errors import ItemError
from schema.events import MAX_EVENT_BYTES, SCHEME, ProductUpserted, dump_event, load_json

_EVENT_KEYS = {"product_id", "title", "category", "price", "currency", "images", "seller_id"}
_DROPPED_KEYS = {"type", "schema_version", "version", "updated_at", "attributes"}


class CatalogError(ValueError):
    """The catalog file has invalid lines; ``errors`` lists ``(line_number, message)``."""

    SHOWN = 3
    """Bad lines the message names, on its one line; ``errors`` holds them all."""

    def __init__(self, path: Path, errors: list[tuple[int, str]]) -> None:
        shown = "; ".join(f"line {n}: {' '.join(msg.split())}" for n, msg in errors[:self.SHOWN])
        more = f"; and {len(errors) - self.SHOWN} more" if len(errors) > self.SHOWN else ""
        super().__init__(f"{path}: {len(errors)} invalid line(s): {shown}{more}")
        self.errors = errors


class EmptyCatalogError(CatalogError):
    """The catalog file has no product line at all (empty, or blank lines only): eval and
    train refuse it too, and publishing it would report success with nothing sent."""

    def __init__(self, path: Path) -> None:
        ValueError.__init__(self, f"{path}: no lines (a catalog lists one product per line)")
        self.errors = []


@dataclass(frozen=True)
class CatalogLine:
    line: int
    raw: dict[str, Any]


def _image(entry: Any, base: Path) -> Any:
    """A catalog image entry -> an event image: relative paths become absolute."""
    if isinstance(entry, dict):
        if "url" in entry:
            return {"url": entry["url"]}
        entry = entry.get("path")
    if isinstance(entry, str) and not SCHEME.match(entry):  # a URL, even ftp://: refused as one
        path = Path(entry)
        return {"path": str(path if path.is_absolute() else (base / path).resolve())}
    return entry


def catalog_lines(path: Path) -> Iterator[CatalogLine]:
    """The file's non-blank lines, each parsed as ingest parses an event
    (:func:`schema.events.load_json`: its size, nesting and number limits; UTF-8), so that a
    line publish accepts is one ingest can read. A longer line is read no further than the
    limit: a catalog of one endless line (``/dev/zero`` copied to a file) costs no memory.
    Raises ``OSError`` for a path that is not a regular file: a FIFO would wait forever for a
    writer, a device (``/dev/zero``) be read forever."""
    check_regular(path, "a catalog is a JSON Lines file")
    with open(path, "rb") as fh:
        number = 0
        while line := fh.readline(MAX_EVENT_BYTES + 1):
            number += 1
            if len(line) > MAX_EVENT_BYTES:
                while line and not line.endswith(b"\n"):  # skip to the next line
                    line = fh.readline(1 << 20)
                yield CatalogLine(number, {"__error__": f"longer than {MAX_EVENT_BYTES} bytes"})
                continue
            if not line.strip():
                continue
            try:
                raw = load_json(line)
            except ItemError as exc:
                raw = {"__error__": f"invalid JSON: {exc.detail}"}
            if not isinstance(raw, dict):
                raw = {"__error__": "not a JSON object"}
            yield CatalogLine(number, raw)


def to_event(
    raw: dict[str, Any], base: Path, version: int, default_seller: str
) -> ProductUpserted:
    if "__error__" in raw:
        raise ValueError(raw["__error__"])
    if raw.get("type", "product.upserted") != "product.upserted":
        raise ValueError(f"type: {str(raw['type'])[:40]!r}: a catalog lists products to publish "
                         "(product.upserted); other events are sent as events")
    images = raw.get("images")
    fields = {k: v for k, v in raw.items() if k in _EVENT_KEYS}
    fields["images"] = [_image(e, base) for e in images] if isinstance(images, list) else images
    fields.setdefault("seller_id", default_seller)
    if isinstance(fields.get("price"), float):
        fields["price"] = str(fields["price"])  # keep the decimal as written, not binary noise
    attributes = {
        k: v if isinstance(v, str) else json.dumps(v)
        for k, v in raw.items()
        if k not in _EVENT_KEYS and k not in _DROPPED_KEYS and v is not None
    }
    return ProductUpserted(**fields, attributes=attributes, version=version)


def load_catalog(
    path: Path, *, version: int | None = None, default_seller: str = "catalog"
) -> list[ProductUpserted]:
    """Validate the whole file; raise :class:`CatalogError` listing every bad line (or
    :class:`EmptyCatalogError` for a file without any)."""
    version = int(time.time() * 1000) if version is None else version
    base = path.resolve().parent
    events: list[ProductUpserted] = []
    errors: list[tuple[int, str]] = []
    seen: dict[str, int] = {}
    for line in catalog_lines(path):
        try:
            event = to_event(line.raw, base, version, default_seller)
        except ValidationError as exc:
            first = exc.errors(include_url=False)[0]
            loc = ".".join(str(p) for p in first["loc"]) or "line"
            errors.append((line.line, f"{loc}: {first['msg']}"))
            continue
        except (ValueError, TypeError) as exc:
            errors.append((line.line, str(exc)))
            continue
        if event.product_id in seen:
            errors.append((line.line, f"product_id {event.product_id!r} repeats line "
                                      f"{seen[event.product_id]}"))
            continue
        seen[event.product_id] = line.line
        events.append(event)
    if errors:
        raise CatalogError(path, errors)
    if not events:
        raise EmptyCatalogError(path)
    return events


def publish_events(
    producer: KafkaProducer,
    topic: str,
    events: list[ProductUpserted],
    *,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Send events keyed by product_id (one product, one partition, in order); flush."""
    futures = []
    for event in events:
        futures.append(
            producer.send(topic, key=event.product_id.encode(), value=dump_event(event))
        )
        if progress is not None:
            progress(1)
    producer.flush()
    for future in futures:
        future.get(timeout=30)
    return len(futures)
