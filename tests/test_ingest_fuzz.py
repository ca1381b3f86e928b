"""Fuzzing ingest on the real broker: thousands of hostile messages between valid ones.

Every valid event must be indexed, every other message dead-lettered with a known reason, and
ingest must never stop. The generator is seeded, so a failure can be replayed; a tiny content
embedder keeps it fast. No message makes ingest send traffic beyond loopback: URLs that point
elsewhere are refused by the egress policy before any connection is made.
"""

from __future__ import annotations

import base64
import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaProducer
from pymilvus import MilvusClient

from schema.errors import Reason
from tests.fakes import TinyEmbedder
from tests.pipeline_support import (
    make_settings,
    read_topic,
    rows,
    run_until_caught_up,
    upsert_payload,
    write_image,
)

pytestmark = pytest.mark.kafka

N_HOSTILE = 2000
N_VALID = 200

Message = tuple[bytes | None, bytes | None]  # key, value

BAD_FIELDS: dict[str, list[Any]] = {
    "product_id": ["", "a" * 129, 'x" or 1==1', "../x", "a b", 5, None, ["a"], "é"],
    "version": ["1000", True, False, -1, 2**63, 1.5, {"a": 1}, [1]],
    "schema_version": [True, 2, "1", 0, None],
    "price": [True, -1, "abc", "1e13", [1], None, "NaN", "Infinity", {"v": 1}],
    "currency": ["usd", "US", 1, "USDD", ""],
    "title": ["", "a" * 513, "bad\x00", 5, "\x07bell", None],
    "category": ["", "a//b", "/".join(["x"] * 9), 7, "/"],
    "images": [[], ["ftp://x/y.jpg"], [{"data": "***"}], [{"url": "http://x/a", "path": "y"}],
               "notalist", [1], ["a.jpg", "a.jpg"], [f"i{i}.jpg" for i in range(33)],
               [{"url": "javascript:alert(1)"}], [None]],
    "seller_id": ["", 5, "s" * 129],
    "attributes": [{"k": 5}, {"k": "x" * 1025}, {str(i): "v" for i in range(65)}, "str",
                   {"k": {"nested": "v"}}],
    "type": ["product.sold", None, 1],
    "colour": ["red"],
}
BAD_UPDATED_AT = ["1969-01-01T00:00:00Z", 12345, "not a date", "2026-01-01T00:00:00", True]
FAILING_IMAGES = [
    "http://169.254.169.254/latest/meta-data/x.jpg", "http://127.0.0.1:1/x.jpg",
    "http://[::1]:1/x.jpg", "http://0.0.0.0/x.jpg", "http://localhost:1/x.jpg",
    "../../etc/passwd", "missing.png", "/etc/hostname",
]


class Corpus:
    def __init__(self, seed: int, valid_image: str, inline: str) -> None:
        self.rng = random.Random(seed)
        self.valid_image = valid_image
        self.inline = inline
        self.count = 0

    def pid(self, kind: str) -> str:
        self.count += 1
        return f"{kind}-{self.count}"

    def valid(self) -> tuple[str, Message]:
        rng = self.rng
        pid = self.pid("ok")
        payload = upsert_payload(pid, rng.randint(0, 2**40), [self.valid_image])
        variant = rng.randrange(7)
        if variant == 1:
            payload["title"] = "🧥 Худи \u202e" + "x" * 400
        elif variant == 2:
            payload["category"] = "/".join(f"L{i}" for i in range(8))
        elif variant == 3:
            payload["attributes"] = {f"k{i}": "v" * 1024 for i in range(64)}
        elif variant == 4:
            del payload["version"]
            payload["updated_at"] = "2026-01-01T00:00:00+02:00"
        elif variant == 5:
            payload["price"] = rng.choice(["0", "0.0001", 0, 999999999999])
        elif variant == 6:
            payload["images"] = [{"data": self.inline}, "missing.png"]  # one good is enough
        return pid, (pid.encode(), json.dumps(payload).encode())

    def hostile(self) -> Message:
        rng = self.rng
        kind = rng.randrange(11) if rng.random() > 0.005 else 11  # a few oversized ones
        pid = self.pid("bad")
        base = upsert_payload(pid, 1, [self.valid_image])
        key = pid.encode()
        if kind == 0:  # random bytes
            return key, rng.randbytes(rng.randrange(0, 3000))
        if kind == 1:  # deep nesting, bare or inside an event
            depth = rng.choice([17, 100, 5000, 200_000])
            if rng.random() < 0.5:
                return key, b"[" * depth + b"]" * depth
            base["attributes"] = "__NEST__"
            text = json.dumps(base).replace('"__NEST__"', '{"a":' * depth + "1" + "}" * depth)
            return key, text.encode()
        if kind == 2:  # huge numbers
            number = rng.choice(["9" * rng.randrange(41, 6000), "1e99999", "-1e400",
                                 "0." + "1" * 5000])
            field = rng.choice(["version", "price"])
            return key, json.dumps(base).replace(
                f'"{field}": {json.dumps(base[field])}', f'"{field}": {number}').encode()
        if kind in (3, 4, 5):  # one field of the wrong type or out of range
            field = rng.choice(sorted(BAD_FIELDS))
            value = rng.choice(BAD_FIELDS[field])
            if value is None and field in ("schema_version", "colour"):
                value = "x"
            base[field] = value
            if field == "product_id":
                key = json.dumps(value).encode()
            return key, json.dumps(base).encode()
        if kind == 6:  # updated_at instead of a version, but wrong
            del base["version"]
            base["updated_at"] = rng.choice(BAD_UPDATED_AT)
            return key, json.dumps(base).encode()
        if kind == 7:  # every image fails (and none may be fetched off loopback)
            base["images"] = rng.sample(FAILING_IMAGES, rng.randrange(1, 4))
            return key, json.dumps(base).encode()
        if kind == 8:  # keys: missing or not the product id
            return (None if rng.random() < 0.5 else b"other"), json.dumps(base).encode()
        if kind == 9:  # a price change for a product never listed
            return key, json.dumps({"type": "product.price_changed", "product_id": pid,
                                    "version": 2, "price": "1", "currency": "USD"}).encode()
        if kind == 10:  # not text, not an object, lone surrogates, tombstones
            return key, rng.choice([None, b"", b"null", b"[]", b'"str"', b"1", b"\xff\xfe",
                                    b'{"title": "\\ud800"}', b"NaN", b"{" * 3])
        # kind 11: oversized
        return key, json.dumps({**base, "title": "x" * 1_500_000}).encode()


@pytest.fixture
def images(tmp_path: Path) -> Iterator[Path]:
    root = tmp_path / "images"
    root.mkdir()
    write_image(root / "ok.png", seed=1)
    yield root


def test_hostile_messages_are_dead_lettered_and_valid_ones_indexed(
    bootstrap: str, unique: str, tmp_path: Path, images: Path
) -> None:
    settings = make_settings(bootstrap, unique, tmp_path / "m.db", [images], batch_events=64)
    inline = base64.b64encode((images / "ok.png").read_bytes()).decode()
    corpus = Corpus(seed=7, valid_image="ok.png", inline=inline)
    messages: list[Message] = []
    valid: set[str] = set()
    for _ in range(N_HOSTILE):
        messages.append(corpus.hostile())
        if corpus.rng.random() < N_VALID / N_HOSTILE:
            pid, message = corpus.valid()
            valid.add(pid)
            messages.append(message)
    n_invalid = len(messages) - len(valid)

    producer = KafkaProducer(bootstrap_servers=bootstrap, max_request_size=4 * 1024 * 1024)
    for key, value in messages:
        producer.send(settings.kafka.topic, key=key, value=value)
    producer.flush()
    producer.close()

    client = MilvusClient(str(tmp_path / "m.db"))
    report = run_until_caught_up(settings, TinyEmbedder(), client)

    t = report.totals
    assert (t.events, t.applied, t.dead_lettered, t.stale) == (
        len(messages), len(valid), n_invalid, 0
    ), t.summary()
    assert {r["product_id"] for r in rows(client, settings, fields=["product_id"])} == valid
    dead = read_topic(bootstrap, settings.kafka.dlq_topic, expected=n_invalid, timeout_s=60)
    assert len(dead) == n_invalid
    known = {r.value for r in Reason}
    reasons = [dict(d.headers)["lookalike.reason"].decode() for d in dead]
    assert set(reasons) <= known
    assert len({dict(d.headers)["lookalike.source"] for d in dead}) == n_invalid
    assert all(len(d.value or b"") < 1024 * 1024 for d in dead)

