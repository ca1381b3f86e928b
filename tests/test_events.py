from __future__ import annotations

import base64
import json
from decimal import Decimal

import pytest

from schema.errors import ItemError
from schema.events import (
    ImageRef,
    ProductDelisted,
    ProductPriceChanged,
    ProductUpserted,
    category_ancestors,
    dump_event,
    parse_event,
)
from schema.records import ImageRecord, category_levels, image_pk


def upsert(**over: object) -> dict[str, object]:
    base: dict[str, object] = {
        "type": "product.upserted", "product_id": "MH01-black", "title": "Chaz Hoodie",
        "category": "Men/Tops/Hoodies & Sweatshirts", "price": "52.00", "currency": "USD",
        "images": ["https://img.example/a.jpg", {"path": "images/b.jpg"}],
        "seller_id": "luma", "version": 3,
    }
    base.update(over)
    return base


def test_upsert_round_trip_and_discriminator() -> None:
    event = parse_event(json.dumps(upsert()))
    assert isinstance(event, ProductUpserted)
    assert event.price == Decimal("52.00")
    assert event.images[0].url == "https://img.example/a.jpg"
    assert event.images[1].path == "images/b.jpg"
    assert parse_event(dump_event(event)) == event


def test_price_changed_and_delisted() -> None:
    price = parse_event(json.dumps({"type": "product.price_changed", "product_id": "p1",
                                    "price": 9.5, "currency": "EUR", "version": 4}))
    assert isinstance(price, ProductPriceChanged) and price.price == Decimal("9.5")
    gone = parse_event(b'{"type": "product.delisted", "product_id": "p1", "version": 5}')
    assert isinstance(gone, ProductDelisted) and gone.resolved_version == 5


def test_updated_at_becomes_version() -> None:
    event = parse_event(json.dumps({"type": "product.delisted", "product_id": "p1",
                                    "updated_at": "2026-01-01T00:00:00Z"}))
    assert event.resolved_version == 1767225600000


@pytest.mark.parametrize(
    ("updated_at", "version"),
    [
        # int(timestamp() * 1000) gave 274087259714: a float product one ulp short
        ("1978-09-08T07:20:59.715Z", 274087259715),
        ("2100-03-01T12:34:56.789Z", 4107587696789),
        ("9999-12-31T23:59:59.999Z", 253402300799999),
        ("1970-01-01T00:00:00.0009Z", 0),  # floored to the millisecond
        ("2026-01-01T02:00:00.001+02:00", 1767225600001),
    ],
)
def test_updated_at_is_converted_exactly(updated_at: str, version: int) -> None:
    event = parse_event(json.dumps({"type": "product.delisted", "product_id": "p1",
                                    "updated_at": updated_at}))
    assert event.resolved_version == version


def test_updated_at_a_fraction_of_a_millisecond_before_1970_is_refused() -> None:
    with pytest.raises(ItemError, match="1970"):
        parse_event(json.dumps({"type": "product.delisted", "product_id": "p1",
                                "updated_at": "1969-12-31T23:59:59.9995Z"}))


@pytest.mark.parametrize(
    ("payload", "reason", "needle"),
    [
        (b"{not json", "malformed_json", "Expecting"),
        (b"[1, 2]", "invalid_event", "JSON object"),
        (json.dumps(upsert(price="-1")).encode(), "invalid_event", "price"),
        (json.dumps(upsert(currency="usd")).encode(), "invalid_event", "currency"),
        (json.dumps(upsert(images=[])).encode(), "invalid_event", "images"),
        (json.dumps(upsert(product_id='x" or 1==1')).encode(), "invalid_event", "product_id"),
        (json.dumps(upsert(category="Men//Tops")).encode(), "invalid_event", "category"),
        (json.dumps(upsert(images=["ftp://x/y.jpg"])).encode(), "invalid_event", "images"),
        (json.dumps(upsert(images=[{"data": "***"}])).encode(), "invalid_event", "base64"),
        (json.dumps(upsert(version=None)).encode(), "invalid_event", "version"),
        (json.dumps(upsert(colour="red")).encode(), "invalid_event", "colour"),
        (json.dumps(upsert(type="product.sold")).encode(), "invalid_event", "type"),
        (json.dumps(upsert(schema_version=2)).encode(), "unsupported_schema_version", "2"),
        (json.dumps(upsert(price="NaN")).encode(), "invalid_event", "price"),
        (b"\xff\xfe", "malformed_json", ""),
        (json.dumps(upsert(attributes={"col\nour": "red"})).encode(), "invalid_event",
         "attribute names must not contain control characters"),
        (json.dumps(upsert(attributes={"x" * 129: "red"})).encode(), "invalid_event",
         "attributes"),
        (json.dumps(upsert(attributes={"": "red"})).encode(), "invalid_event", "attributes"),
        # URLs urlsplit cannot parse were a bare ValueError at fetch time (image_error)
        (json.dumps(upsert(images=["http://[::1/x"])).encode(), "invalid_event", "parsed"),
        (json.dumps(upsert(images=["http://[127.0.0.1]/x"])).encode(), "invalid_event",
         "parsed"),
        (json.dumps(upsert(images=["http://]x/"])).encode(), "invalid_event", "parsed"),
        (json.dumps(upsert(images=["http://a b/x.jpg"])).encode(), "invalid_event", "host"),
        (json.dumps(upsert(images=["http://.../x.jpg"])).encode(), "invalid_event", "host"),
        (json.dumps(upsert(images=["http:///x.jpg"])).encode(), "invalid_event", "host"),
    ],
)
def test_invalid_events_name_field_and_problem(payload: bytes, reason: str, needle: str) -> None:
    with pytest.raises(ItemError) as info:
        parse_event(payload)
    assert info.value.reason == reason
    assert needle in str(info.value)


def test_image_key_is_deterministic_and_inline_bytes_decode() -> None:
    raw = base64.b64encode(b"\x89PNG fake").decode()
    a, b = ImageRef(data=raw), ImageRef.model_validate({"data": raw})
    assert a.key == b.key and a.reference.startswith("inline:sha256:")
    assert a.inline_bytes() == b"\x89PNG fake"
    with pytest.raises(ValueError, match="exactly one"):
        ImageRef(url="https://x/y.jpg", path="y.jpg")


@pytest.mark.parametrize("url", ["https://xn--xample-9ua.com/a.jpg", "https://\u00e9xample.com/a.jpg",
                                 "http://[::1]:8080/a.jpg", "http://10.0.0.1/a.jpg",
                                 "https://cdn_1.shop.example./a.jpg"])
def test_ordinary_urls_pass(url: str) -> None:
    assert ImageRef(url=url).url == url


def test_a_url_after_whitespace_is_a_url() -> None:
    # " http://..." missed the URL check and, stripped, became the local path "http://..."
    # (refused as path_not_allowed: safe, but the wrong reason and the wrong kind of image).
    event = parse_event(json.dumps(upsert(images=[" https://img.example/a.jpg",
                                                  "\u00a0http://img.example/b.jpg\n"])))
    assert isinstance(event, ProductUpserted)
    assert [i.url for i in event.images] == ["https://img.example/a.jpg",
                                             "http://img.example/b.jpg"]
    assert all(i.path is None for i in event.images)
    with pytest.raises(ItemError, match="http:// or https://"):  # a URL, refused as one
        parse_event(json.dumps(upsert(images=[" ftp://img.example/a.jpg"])))


def test_repeated_image_reference_is_rejected() -> None:
    with pytest.raises(ItemError, match="repeat"):
        parse_event(json.dumps(upsert(images=["a.jpg", "a.jpg"])))


def test_record_from_event_has_deterministic_pk_and_ancestors() -> None:
    event = parse_event(json.dumps(upsert()))
    assert isinstance(event, ProductUpserted)
    rec = ImageRecord.from_event(event, 1, [0.0, 1.0], "m1", 123)
    assert rec.pk == image_pk("MH01-black", event.images[1].key)
    assert (rec.category_l1, rec.category_l2, rec.category_l3) == (
        "Men",
        "Men/Tops",
        "Men/Tops/Hoodies & Sweatshirts",
    )
    assert [getattr(rec, f"category_l{d}") for d in range(4, 9)] == [""] * 5
    assert rec.to_row()["category_l2"] == "Men/Tops"
    # the level columns must agree with the category (a row with stale levels is refused)
    with pytest.raises(ValueError, match="do not match category"):
        ImageRecord.model_validate({**rec.to_row(), "category_l3": "Men/Tops/Tees"})
    with pytest.raises(ValueError, match="do not match category"):
        ImageRecord.model_validate({**rec.to_row(), "category": "Men/Tops"})
    assert category_levels("A/B") == {
        "category_l1": "A",
        "category_l2": "A/B",
        **{f"category_l{d}": "" for d in range(3, 9)},
    }
    assert rec.version == 3 and rec.price == 52.0
    assert category_ancestors("A") == ["A"]


@pytest.mark.parametrize(
    ("over", "needle"),
    [
        ({"version": "1000"}, "version"),
        ({"version": True}, "version"),
        ({"version": 1.0}, "version"),
        ({"version": -1}, "version"),
        ({"schema_version": True}, "schema_version"),
        ({"schema_version": "1"}, "schema_version"),
        ({"price": True}, "price"),
        ({"version": None, "updated_at": "1969-12-31T23:59:59Z"}, "1970"),
        ({"version": None, "updated_at": 1767225600}, "updated_at"),
        ({"title": 5}, "title"),
    ],
)
def test_values_are_never_coerced(over: dict[str, object], needle: str) -> None:
    with pytest.raises(ItemError) as info:
        parse_event(json.dumps(upsert(**over)))
    assert info.value.reason == "invalid_event"
    assert needle in info.value.detail


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"[" * 100_000 + b"]" * 100_000, "malformed_json"),
        (b'{"a":' * 5000 + b"1" + b"}" * 5000, "malformed_json"),
        (json.dumps(upsert(version=0)).replace('"version": 0', '"version": ' + "9" * 5000)
         .encode(), "malformed_json"),
        (b'{"version": 1e99999}', "malformed_json"),
        (b'{"version": NaN}', "malformed_json"),
        (b'{"title": "\\ud800"}', "malformed_json"),
        (b'{"x": "' + b"a" * (2 * 1024 * 1024) + b'"}', "message_too_large"),
    ],
)
def test_hostile_json_is_refused_before_or_while_parsing(payload: bytes, reason: str) -> None:
    with pytest.raises(ItemError) as info:
        parse_event(payload)
    assert info.value.reason == reason


def test_brackets_inside_strings_do_not_count_as_nesting() -> None:
    event = parse_event(json.dumps(upsert(title="[[[[[[[[[[[[[[[[[[[[[[[[{{{{{{{{{{ \\\" [[[")))
    assert isinstance(event, ProductUpserted) and event.title.startswith("[[[")
