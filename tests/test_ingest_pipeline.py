"""Ingest end to end on the real broker (Tansu) and Milvus Lite, with a tiny content embedder.

The real model is exercised in tests/test_luma_e2e.py; here the point is the event handling:
outcomes, dead letters, idempotence, commits.
"""

from __future__ import annotations

import base64
import io
import os
from pathlib import Path

import pytest
from pymilvus import MilvusClient

from tests.fakes import TinyEmbedder
from tests.milvus_support import ENGINES, SERVER_ENV
from tests.pipeline_support import (
    committed_and_end,
    make_settings,
    read_topic,
    rows,
    run_until_caught_up,
    send,
    upsert_payload,
    write_image,
)

pytestmark = pytest.mark.kafka


@pytest.fixture
def catalog(tmp_path: Path) -> Path:
    root = tmp_path / "images"
    root.mkdir()
    for i in range(12):
        write_image(root / f"p{i}.png", seed=i)
    (root / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    return root


def test_events_end_applied_stale_or_dead_lettered(
    bootstrap: str, unique: str, tmp_path: Path, catalog: Path
) -> None:
    settings = make_settings(bootstrap, unique, tmp_path / "m.db", [catalog])
    png = io.BytesIO()
    write_image(tmp_path / "inline.png", seed=99)
    png.write((tmp_path / "inline.png").read_bytes())
    payloads: list[object] = [
        upsert_payload(f"p{i}", 1, [f"p{i}.png"], price=10 + i) for i in range(6)
    ]
    payloads += [
        upsert_payload("two", 1, ["p6.png", "p7.png"]),
        upsert_payload("partial", 1, ["p8.png", "missing.png", "corrupt.jpg"]),
        upsert_payload("allbad", 1, ["missing.png", "corrupt.jpg"]),
        upsert_payload("inline", 1, [{"data": base64.b64encode(png.getvalue()).decode()}]),
        upsert_payload("escape", 1, ["../../etc/passwd"]),
        b"{ not json",
        {"type": "product.upserted", "product_id": "bad", "version": 1},
        {"type": "product.price_changed", "product_id": "ghost", "version": 2,
         "price": 1, "currency": "USD"},
        upsert_payload("p0", 1, ["p0.png"], price=99),  # duplicate of an applied version
    ]
    send(bootstrap, settings.kafka.topic, payloads)
    client = MilvusClient(str(tmp_path / "m.db"))
    embedder = TinyEmbedder()
    report = run_until_caught_up(settings, embedder, client)

    t = report.totals
    assert (t.events, t.applied, t.stale, t.dead_lettered) == (15, 9, 1, 5)
    assert t.images_failed == {"not_found": 2, "corrupt_image": 2, "path_not_allowed": 1}
    stored = rows(client, settings)
    by_product: dict[str, int] = {}
    for row in stored:
        by_product[row["product_id"]] = by_product.get(row["product_id"], 0) + 1
    assert by_product == {**{f"p{i}": 1 for i in range(6)}, "two": 2, "partial": 1, "inline": 1}
    assert [r["price"] for r in stored if r["product_id"] == "p0"] == [10.0]

    dead = read_topic(bootstrap, settings.kafka.dlq_topic, expected=5)
    reasons = sorted(dict(m.headers)["lookalike.reason"].decode() for m in dead)
    assert reasons == ["all_images_failed", "all_images_failed", "invalid_event",
                       "malformed_json", "product_not_listed"]
    original = {m.value for m in dead}
    assert b"{ not json" in original  # the payload travels unchanged
    bad = next(m for m in dead if dict(m.headers)["lookalike.reason"] == b"invalid_event")
    assert b"title" in dict(bad.headers)["lookalike.detail"]
    assert all(c == e for c, e in committed_and_end(bootstrap, settings).values())


@pytest.mark.parametrize("engine", ENGINES)
def test_price_change_delist_replay_and_dropped_images(
    bootstrap: str, unique: str, tmp_path: Path, catalog: Path, engine: str
) -> None:
    """Runs on Milvus Lite and, where LOOKALIKE_TEST_MILVUS_SERVER_URI is set, on a server."""
    uri = os.environ[SERVER_ENV] if engine == "server" else str(tmp_path / "m.db")
    settings = make_settings(bootstrap, unique, Path(uri), [catalog])
    settings = settings.model_copy(update={"milvus": settings.milvus.model_copy(
        update={"uri": uri})})
    client = MilvusClient(uri)
    embedder = TinyEmbedder()
    first = [upsert_payload(f"p{i}", 1, [f"p{i}.png", f"p{i + 6}.png"]) for i in range(4)]
    send(bootstrap, settings.kafka.topic, first)
    run_until_caught_up(settings, embedder, client)
    before = {r["pk"]: r for r in rows(client, settings, fields=["pk", "vector", "price"])}
    assert len(before) == 8 and embedder.embedded == 8

    send(bootstrap, settings.kafka.topic, [
        {"type": "product.price_changed", "product_id": "p0", "version": 2, "price": "7.25",
         "currency": "EUR"},
        {"type": "product.delisted", "product_id": "p1", "version": 2},
        upsert_payload("p1", 1, ["p1.png"]),  # older than the delisting: must not resurrect
        upsert_payload("p2", 3, ["p2.png"]),  # drops its second image
    ])
    run_until_caught_up(settings, embedder, client)
    assert embedder.embedded == 9  # only p2's new state was embedded; price changes never are
    after = {r["pk"]: r for r in rows(client, settings, fields=["pk", "vector", "price",
                                                                "currency", "product_id"])}
    p0 = [r for r in after.values() if r["product_id"] == "p0"]
    assert {(r["price"], r["currency"]) for r in p0} == {(7.25, "EUR")}
    for row in p0:
        assert row["vector"] == pytest.approx(before[row["pk"]]["vector"])
    assert not [r for r in after.values() if r["product_id"] == "p1"]
    assert len([r for r in after.values() if r["product_id"] == "p2"]) == 1
    assert len(after) == 2 + 1 + 2  # p0 (2), p2 (1), p3 (2)

    # A new consumer group replays the whole topic: nothing changes, nothing duplicates.
    replay = settings.model_copy(update={"kafka": settings.kafka.model_copy(
        update={"group_id": f"replay-{unique}"})})
    report = run_until_caught_up(replay, embedder, client)
    assert report.totals.applied == 0 and report.totals.stale == 8
    assert sorted(rows(client, settings, fields=["pk", "price"]), key=lambda r: r["pk"]) == \
        sorted(({"pk": k, "price": v["price"]} for k, v in after.items()), key=lambda r: r["pk"])
