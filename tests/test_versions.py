"""Model versions without downtime: aliases, ``lookalike reindex`` and the switch, on each
engine (Milvus Lite always; a real server when LOOKALIKE_TEST_MILVUS_SERVER_URI is set).

Two tiny content-based embedders stand in for an old and a new model (other version string,
other dimension), so re-embedding really fetches and decodes the stored image paths.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from PIL import Image

from embedding.decode import decode_image
from ingest.fetch import ImageFetcher
from ingest.outage import OutageWait
from ingest.plan import EventItem, WritePlan
from ingest.reindex import Reindexer, ReindexError
from ingest.runner import IDLE_CHECK_EVERY_S
from ingest.sink import MilvusSink
from ingest.stages import Batch, Stages
from lookalike.app import create_topics
from schema.collection import CollectionSpec
from schema.events import parse_event
from schema.records import ImageRecord
from schema.versions import (
    ModelRetiredError,
    ModelStatus,
    physical_name,
    state_name,
)
from search.api import ModelMismatchError, ProductNotFound, ProductSearch
from serve.health import Readiness
from store import MilvusStore, ensure_collections
from store.versions import ModelVersions
from tests import milvus_support
from tests.fakes import TinyEmbedder
from tests.milvus_support import Milvus
from tests.pipeline_support import upsert_payload, write_image

milvus = milvus_support.milvus


class TinyEmbedderV2(TinyEmbedder):
    """The "new model": a 2x2 thumbnail (12-d), another version string."""

    model_version = "tiny-thumb-v2"
    dim = 12

    def prepare(self, image: Any) -> np.ndarray:
        assert isinstance(image, Image.Image)
        thumb = image.convert("RGB").resize((2, 2), Image.Resampling.BILINEAR)
        return np.asarray(thumb, dtype=np.float32).reshape(-1) + 1.0


class TinyEmbedderV1b(TinyEmbedder):
    """Another version of the same model with the same dimension (as w0.9 and w1.1 of the
    default one): a search with the old one is not refused by Milvus, it finds no rows."""

    model_version = "tiny-thumb-v1b"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class NoDeadLetters:
    def send(self, *args: Any) -> None:
        raise AssertionError(f"unexpected dead letter {args}")

    def flush(self) -> int:
        return 0


@dataclass
class World:
    m: Milvus
    base: str
    root: Path
    pool: ThreadPoolExecutor

    @property
    def versions(self) -> ModelVersions:
        return ModelVersions(self.m.store, self.base)

    def image(self, name: str, seed: int) -> str:
        write_image(self.root / "images" / name, seed)
        return f"images/{name}"

    def fetcher(self) -> ImageFetcher:
        return ImageFetcher([self.root], timeout_s=2.0)

    def ingester(self, embedder: Any) -> Stages:
        """The write path of ``lookalike ingest`` for ``embedder``'s model (no Kafka)."""
        target, guard = self.versions.open_for_writing(embedder.model_version, embedder.dim)
        sink = MilvusSink(self.m.store, target)
        return Stages(self.fetcher(), embedder, sink, NoDeadLetters(), self.pool,  # type: ignore[arg-type]
                      max_pixels=10_000_000, after_write=guard.check, outage=OutageWait(0.0))

    def searcher(self, embedder: Any) -> ProductSearch:
        spec = CollectionSpec(name=self.base, dim=embedder.dim)
        # checks the registry after every empty answer (the default: at most every 30 s)
        return ProductSearch(self.m.store, spec, embedder, consistency="Strong",
                             max_pixels=milvus_support.MAX_PIXELS,
                             model_check_interval_s=0.0)

    def reindexer(self, embedder: Any, **kw: Any) -> Reindexer:
        return Reindexer(self.versions, embedder, self.fetcher(), self.pool,
                         **{"max_pixels": 10_000_000, "settle_s": 0.0, "max_passes": 10,
                            "lease_confirm_s": 0.0, **kw})

    def rows(self, collection: str, expr: str = 'pk != ""') -> list[dict[str, Any]]:
        return list(self.m.client.query(
            collection, filter=expr, limit=16384, consistency_level="Strong",
            output_fields=["pk", "product_id", "price", "version", "model_version", "vector"]))


def ingest(stages: Stages, payloads: list[dict[str, Any]]) -> Batch:
    items = [EventItem(i, parse_event(json.dumps(p)), None) for i, p in enumerate(payloads)]
    records: list[Any] = [SimpleNamespace(topic="t", partition=0, offset=i, timestamp=0)
                          for i in range(len(items))]
    batch = Batch(seq=0, records=records, items=items, n_images=0, opened_at=0.0)
    stages.prepare(batch)
    stages.embed(batch)
    stages.write(batch)
    return batch


@pytest.fixture
def world(milvus: Milvus, tmp_path: Path) -> Iterator[World]:
    (tmp_path / "images").mkdir()
    with ThreadPoolExecutor(4) as pool:
        w = World(milvus, f"v_{uuid.uuid4().hex[:12]}", tmp_path, pool)
        yield w
        w.versions.drop_all()


def catalog(w: World, n: int = 4) -> list[dict[str, Any]]:
    return [upsert_payload(f"p{i}", 1, [w.image(f"p{i}.png", 100 + i)], price=10.0 + i)
            for i in range(n)]


def test_first_install_serves_the_first_model_through_aliases(world: World) -> None:
    v1 = TinyEmbedder()
    ingest(world.ingester(v1), catalog(world))
    versions = world.versions
    serving = versions.serving()
    assert serving is not None and not serving.legacy
    assert serving.physical == physical_name(world.base, v1.model_version)
    assert serving.model_version == v1.model_version
    assert world.m.client.describe_collection(state_name(world.base))["collection_name"] == (
        state_name(serving.physical))
    [entry] = versions.entries()
    assert (entry.physical, entry.status, entry.dim) == (serving.physical, ModelStatus.SERVING, 48)
    # rows are in the physical collection, and found through the alias
    assert len(world.rows(serving.physical)) == 4
    hits = world.searcher(v1).by_image(world.root / "images" / "p2.png", k=1)
    assert [h.product_id for h in hits] == ["p2"]


def test_ingest_of_another_model_writes_its_own_collection(world: World) -> None:
    v1, v2 = TinyEmbedder(), TinyEmbedderV2()
    ingest(world.ingester(v1), catalog(world, 2))
    ingest(world.ingester(v2), [upsert_payload("new", 1, [world.image("n.png", 7)])])
    v2_name = physical_name(world.base, v2.model_version)
    assert [r["product_id"] for r in world.rows(v2_name)] == ["new"]
    assert "new" not in {r["product_id"] for r in world.rows(world.base)}
    statuses = {e.model_version: e.status for e in world.versions.entries()}
    assert statuses == {v1.model_version: ModelStatus.SERVING,
                        v2.model_version: ModelStatus.BUILDING}


def test_reindex_builds_then_switches_without_downtime(world: World) -> None:
    v1, v2 = TinyEmbedder(), TinyEmbedderV2()
    old_ingest = world.ingester(v1)
    ingest(old_ingest, catalog(world))
    old_search = world.searcher(v1)
    query = world.root / "images" / "p2.png"

    def during_build(number: int) -> None:
        # searches keep answering from the old model while the new collection fills up
        assert [h.product_id for h in old_search.by_image(query, k=1)] == ["p2"]
        with pytest.raises(ModelMismatchError, match=f"serves model {v1.model_version}"):
            world.searcher(v2)
        if number == 2:  # the running old ingest changes the catalog during the build
            ingest(old_ingest, [
                upsert_payload("p1", 2, [world.image("p1b.png", 501)], price=99.0),
                upsert_payload("p9", 1, [world.image("p9.png", 509)]),
                {"type": "product.delisted", "product_id": "p3", "version": 2},
            ])

    # switch_changes=0: the passes go on until one changes nothing
    report = world.reindexer(v2, switch_changes=0).run(before_pass=during_build)
    assert report.switched and not report.failures and not report.refused
    assert [p.changed for p in report.passes] == [True, True, False, False]
    assert report.passes[0].copied == 4 and report.passes[1].copied == 3

    new = physical_name(world.base, v2.model_version)
    serving = world.versions.serving()
    assert serving is not None and serving.physical == new
    rows = {r["product_id"]: r for r in world.rows(new)}
    assert sorted(rows) == ["p0", "p1", "p2", "p9"]  # p3 was delisted: a tombstone only
    assert all(r["model_version"] == v2.model_version and len(r["vector"]) == 12
               for r in rows.values())
    assert (rows["p1"]["price"], rows["p1"]["version"]) == (99.0, 2)
    states = {s.product_id: s for s in MilvusSink(world.m.store, CollectionSpec(
        name=new, dim=12)).get_states(["p1", "p3"]).values()}
    assert states["p1"].version == 2 and not states["p3"].listed

    new_search = world.searcher(v2)
    assert [h.product_id for h in new_search.by_image(world.root / "images" / "p1b.png",
                                                      k=1)] == ["p1"]
    # the old searcher gets a clear error, not an empty answer
    with pytest.raises(ModelMismatchError, match=f"serves model {v2.model_version}"):
        old_search.by_image(query, k=1)
    with pytest.raises(ModelMismatchError):
        old_search.by_product("p1")
    statuses = {e.model_version: e.status for e in world.versions.entries()}
    assert statuses == {v1.model_version: ModelStatus.RETIRED,
                        v2.model_version: ModelStatus.SERVING}

    # the old ingest notices at its next write and stops before that batch is committed
    with pytest.raises(ModelRetiredError, match=f"now serves model {v2.model_version}"):
        ingest(old_ingest, [upsert_payload("p0", 5, [world.image("p0.png", 100)])])
    with pytest.raises(ModelRetiredError, match="was retired"):
        world.ingester(v1)
    # the new model's ingest now writes into the serving collection
    ingest(world.ingester(v2), [upsert_payload("p0", 6, [world.image("p0.png", 100)])])
    assert {r["version"] for r in world.rows(new, 'product_id == "p0"')} == {6}
    # a second run has nothing to do
    with pytest.raises(ReindexError, match="already serves"):
        world.reindexer(v2).run()


def test_a_switch_to_a_model_of_the_same_dimension_refuses_every_later_search(
        world: World) -> None:
    """A searcher (with the serving default interval) whose model stops serving: every later
    search raises, by vector and by product id, over and over, not an empty answer or an
    unknown product once the first call has raised (probe D: 503 once, then 200 []); and
    ``/readyz`` says not ready. When the aliases move back, it serves again."""
    v1, v1b = TinyEmbedder(), TinyEmbedderV1b()
    ingest(world.ingester(v1), catalog(world))
    clock = Clock()
    old = ProductSearch(world.m.store, CollectionSpec(name=world.base, dim=v1.dim), v1,
                        consistency="Strong", max_pixels=milvus_support.MAX_PIXELS,
                        clock=clock)
    readiness = Readiness(world.m.store, world.base, lambda: True,
                          model_version=v1.model_version)
    vector = [float(x) for x in v1.embed([Image.open(world.root / "images" / "p2.png")])[0]]
    assert [h.product_id for h in old.by_vector(vector, k=1)] == ["p2"]
    assert readiness.check()["model"] == "ok"

    assert world.reindexer(v1b).run().switched
    clock.now += 5  # within the old 30 s interval, past the short one
    for _ in range(3):
        with pytest.raises(ModelMismatchError, match=f"serves model {v1b.model_version}"):
            old.by_vector(vector, k=1)
        with pytest.raises(ModelMismatchError, match=f"serves model {v1b.model_version}"):
            old.by_product("p1")
        clock.now += 0.1
    checks = readiness.check()
    assert checks["model"].startswith("mismatch") and v1b.model_version in checks["model"]

    # the aliases move back: the next check (after the interval) clears the mismatch
    assert world.reindexer(v1).run().switched
    assert readiness.check()["model"] == "ok"
    clock.now += 60
    assert [h.product_id for h in old.by_vector(vector, k=1)] == ["p2"]


def test_the_api_of_a_process_whose_model_stopped_serving_answers_503_and_is_not_ready(
        world: World) -> None:
    """Probe D over HTTP (``lookalike serve`` and ``run`` build this app): after the switch,
    searches by vector and by product id answer 503 ``model_mismatch`` every time (not 200
    ``{"hits": []}`` and 404 ``unknown_product``), ``/readyz`` 503 with the model's reason,
    and ``/livez`` stays 200 (a restart with the same settings cannot help)."""
    from fastapi.testclient import TestClient
    from prometheus_client import CollectorRegistry

    from serve.api import ServeConfig, create_app
    from serve.metrics import SearchMetrics, TimedEmbedder

    v1, v1b = TinyEmbedder(), TinyEmbedderV1b()
    ingest(world.ingester(v1), catalog(world))
    clock, timed, registry = Clock(), TimedEmbedder(v1), CollectorRegistry()
    search = ProductSearch(world.m.store, CollectionSpec(name=world.base, dim=v1.dim), timed,
                           consistency="Strong", max_pixels=milvus_support.MAX_PIXELS,
                           clock=clock)
    app = create_app(search, embedder=timed, store=world.m.store,
                     readiness=Readiness(world.m.store, world.base, lambda: True,
                                         model_version=v1.model_version),
                     registry=registry, metrics=SearchMetrics(registry), pool=world.pool,
                     config=ServeConfig(image_roots=[world.root]))
    vector = [float(x) for x in v1.embed([Image.open(world.root / "images" / "p2.png")])[0]]
    with TestClient(app) as http:
        assert http.post("/v1/search", json={"vector": vector, "k": 1}).json()["hits"][0][
            "product_id"] == "p2"
        assert http.get("/readyz").status_code == 200
        assert world.reindexer(v1b).run().switched
        clock.now += 2
        for _ in range(2):
            for answer in (http.post("/v1/search", json={"vector": vector}),
                           http.post("/v1/search", json={"product_id": "p1"}),
                           http.get("/v1/products/p1/similar")):
                assert answer.status_code == 503, answer.text
                assert answer.json()["error"]["code"] == "model_mismatch"
        ready = http.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["checks"]["model"].startswith("mismatch")
        assert http.get("/livez").status_code == 200


def test_write_during_the_switch_is_caught_by_the_last_pass(world: World) -> None:
    v1, v2 = TinyEmbedder(), TinyEmbedderV2()
    old_ingest = world.ingester(v1)
    ingest(old_ingest, catalog(world, 2))

    def old_batch_in_flight(_seconds: float) -> None:
        # an old-model batch written while the aliases moved (its guard then stops it)
        with pytest.raises(ModelRetiredError):
            ingest(old_ingest, [upsert_payload("late", 1, [world.image("late.png", 77)])])

    report = world.reindexer(v2, sleep=old_batch_in_flight).run()
    assert report.switched and report.passes[-1].after_switch
    assert report.passes[-1].copied == 1
    new = physical_name(world.base, v2.model_version)
    assert {r["product_id"] for r in world.rows(new)} == {"p0", "p1", "late"}


def test_failed_images_are_reported_and_block_the_switch(world: World) -> None:
    v1, v2 = TinyEmbedder(), TinyEmbedderV2()
    payloads = catalog(world, 2)
    payloads.append(upsert_payload("two", 1, [world.image("t1.png", 31),
                                              world.image("t2.png", 32)]))
    ingest(world.ingester(v1), payloads)
    (world.root / "images" / "p1.png").unlink()
    (world.root / "images" / "t2.png").unlink()
    old = physical_name(world.base, v1.model_version)

    report = world.reindexer(v2).run()
    assert not report.switched and "could not be re-embedded" in report.refused
    assert sorted(report.failures) == ["p1", "two"]
    assert [(p.reason, p.image_ref) for p in report.failures["two"]] == [
        ("not_found", "images/t2.png")]
    serving = world.versions.serving()
    assert serving is not None and serving.physical == old  # still the old model
    new = physical_name(world.base, v2.model_version)
    assert {r["product_id"] for r in world.rows(new)} == {"p0"}

    report = world.reindexer(v2).run(allow_failures=True)
    assert report.switched and sorted(report.failures) == ["p1", "two"]
    rows = world.rows(new)
    assert sorted(r["product_id"] for r in rows) == ["p0", "two"]  # its good image only
    serving = world.versions.serving()
    assert serving is not None and serving.physical == new


def test_allow_failures_never_switches_to_an_empty_catalog(world: World) -> None:
    """When every product fails (its photos gone, or a root no longer allowed),
    ``allow_failures`` would switch searches to a collection without a product."""
    v1, v2 = TinyEmbedder(), TinyEmbedderV2()
    ingest(world.ingester(v1), catalog(world, 2))
    for name in ("p0.png", "p1.png"):
        (world.root / "images" / name).unlink()
    old = physical_name(world.base, v1.model_version)

    report = world.reindexer(v2).run(allow_failures=True)
    assert not report.switched and "empty catalog" in report.refused
    assert sorted(report.failures) == ["p0", "p1"]
    serving = world.versions.serving()
    assert serving is not None and serving.physical == old  # searches still find both


def test_no_switch_builds_only(world: World) -> None:
    v1, v2 = TinyEmbedder(), TinyEmbedderV2()
    ingest(world.ingester(v1), catalog(world, 2))
    report = world.reindexer(v2).run(switch=False)
    assert not report.switched and report.products_copied == 2
    serving = world.versions.serving()
    assert serving is not None and serving.model_version == v1.model_version


def test_allow_failures_keeps_a_product_whose_images_all_failed(world: World) -> None:
    """With --allow-failures, a product whose only image could not be re-embedded vanished
    from the new pair, its state row too: later events for it dead-lettered as
    product_not_listed. Its state is now copied (listed, with no image) and the report names
    it for re-publishing."""
    v1, v2 = TinyEmbedder(), TinyEmbedderV2()
    ingest(world.ingester(v1), catalog(world, 3))
    (world.root / "images" / "p1.png").unlink()

    report = world.reindexer(v2).run(allow_failures=True)
    assert report.switched and sorted(report.failures) == ["p1"]
    assert report.imageless == {"p1"} and "imageless_products=1" in report.summary()
    new = physical_name(world.base, v2.model_version)
    assert {r["product_id"] for r in world.rows(new)} == {"p0", "p2"}
    states = MilvusSink(world.m.store, CollectionSpec(name=new, dim=12)).get_states(["p1"])
    assert states["p1"].listed and states["p1"].version == 1


class TinyEmbedderV3(TinyEmbedderV2):
    model_version = "tiny-thumb-v3"


def test_a_crash_just_after_the_aliases_move_is_caught_up_by_the_next_run(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """kill -9 (or an error) right after the aliases moved lost the old ingest's last writes:
    a delist committed after the last pass stayed in the retired pair only, and a second
    `lookalike reindex` said "already serves". The switch now records the owed catch-up
    (``retiring``) before the aliases move, and the next run with the serving model runs it."""
    v1, v2 = TinyEmbedder(), TinyEmbedderV2()
    old_ingest = world.ingester(v1)
    ingest(old_ingest, catalog(world, 3))
    alter_alias = MilvusStore.alter_alias
    moved: list[str] = []

    def late_delist_then_crash(self: MilvusStore, collection: str, alias: str) -> None:
        if not moved:  # committed by the old ingest after the last pass read the states
            ingest(old_ingest, [{"type": "product.delisted", "product_id": "p1", "version": 2}])
        alter_alias(self, collection, alias)
        moved.append(alias)
        if len(moved) == 2:
            raise RuntimeError("killed just after the aliases moved")

    monkeypatch.setattr(MilvusStore, "alter_alias", late_delist_then_crash)
    with pytest.raises(RuntimeError, match="killed"):
        world.reindexer(v2).run()
    monkeypatch.undo()

    old = physical_name(world.base, v1.model_version)
    new = physical_name(world.base, v2.model_version)
    versions = world.versions
    serving = versions.serving()
    assert serving is not None and serving.physical == new
    assert [e.physical for e in versions.catch_ups_owed()] == [old]
    sink = MilvusSink(world.m.store, CollectionSpec(name=new, dim=12))
    assert sink.get_states(["p1"])["p1"].listed  # the delist is missing from the new pair
    with pytest.raises(ModelRetiredError, match="was retired"):
        world.ingester(v1)  # the old ingest cannot restart meanwhile
    with pytest.raises(ReindexError, match="cut short"):
        world.reindexer(TinyEmbedderV3()).run()  # nor can another switch skip the catch-up

    report = world.reindexer(v2).run()
    assert report.caught_up == [old] and not report.switched and not report.refused
    assert [p.after_switch for p in report.passes] == [True] and report.passes[0].copied == 1
    state = MilvusSink(world.m.store, CollectionSpec(name=new, dim=12)).get_states(["p1"])["p1"]
    assert not state.listed and state.version == 2
    assert {r["product_id"] for r in world.rows(new)} == {"p0", "p2"}
    statuses = {e.model_version: e.status for e in versions.entries()}
    assert statuses == {v1.model_version: ModelStatus.RETIRED,
                        v2.model_version: ModelStatus.SERVING}
    assert versions.catch_ups_owed() == []
    with pytest.raises(ReindexError, match="already serves"):
        world.reindexer(v2).run()


def test_steady_ingest_traffic_does_not_keep_the_switch_away(world: World) -> None:
    """A switch needed a pass that changed nothing: under steady traffic reindex gave up
    ("source still changed"). It now switches after a small pass (at most switch_changes
    products, or no fewer than the pass before); the catch-up copies the rest."""
    v1, v2 = TinyEmbedder(), TinyEmbedderV2()
    old_ingest = world.ingester(v1)
    ingest(old_ingest, catalog(world, 4))
    new = physical_name(world.base, v2.model_version)

    version = iter(range(2, 100))

    def two_changes_a_pass(_number: int) -> None:
        v = next(version)
        ingest(old_ingest, [upsert_payload(f"p{i}", v, [world.image(f"p{i}.png", 100)],
                                           price=float(v)) for i in (0, 1)])

    def late_write(_seconds: float) -> None:  # after the last pass, before the catch-up
        with pytest.raises(ModelRetiredError):
            ingest(old_ingest, [upsert_payload("p3", 50, [world.image("p3.png", 103)])])

    report = world.reindexer(v2, switch_changes=0, max_passes=4).run(
        before_pass=two_changes_a_pass)
    assert not report.switched and "still changed" in report.refused

    report = world.reindexer(v2, switch_changes=1, sleep=late_write).run(
        before_pass=two_changes_a_pass)
    # 2 changes (versions 6), then 2 again (7): no smaller, so the switch; then the catch-up
    assert report.switched and [p.copied for p in report.passes] == [2, 2, 1]
    versions = {r["product_id"]: r["version"] for r in world.rows(new)}
    assert versions == {"p0": 7, "p1": 7, "p2": 1, "p3": 50}


def test_a_pass_stops_once_its_source_no_longer_serves(world: World) -> None:
    """Two reindexes to the same model: the second switched, and the first one's next pass,
    from the now retired pair, deleted the products only in the target, which the new-model
    ingest had just created. A pass now checks that its source still serves, and stops. (The
    reindex lease keeps a second run out now; this one stalled past its lease's expiry, and
    the other took the lease over: ``lease_s`` of 1 ms.)"""
    v1, v2 = TinyEmbedder(), TinyEmbedderV2()
    old_ingest = world.ingester(v1)
    ingest(old_ingest, catalog(world, 2))
    new = physical_name(world.base, v2.model_version)

    def other_run_switches(number: int) -> None:
        if number == 2:
            assert world.reindexer(v2).run().switched
            ingest(world.ingester(v2), [upsert_payload("fresh", 1, [world.image("f.png", 9)])])

    report = world.reindexer(v2, switch_changes=0, lease_s=0.001).run(
        before_pass=other_run_switches)
    assert not report.switched and "another switch" in report.refused
    assert {r["product_id"] for r in world.rows(new)} == {"p0", "p1", "fresh"}


def test_a_switch_to_another_model_meanwhile_stops_this_run(world: World) -> None:
    """Two reindexes to different models both switched, and the registry said `serving`
    twice. The second to finish now sees that its source no longer serves and refuses. (The
    reindex lease keeps the other run out now, unless this one stalled past its lease's expiry:
    ``lease_s`` of 1 ms.)"""
    v1, v2, v3 = TinyEmbedder(), TinyEmbedderV2(), TinyEmbedderV3()
    ingest(world.ingester(v1), catalog(world, 2))

    def other_run_switches(number: int) -> None:
        if number == 2:
            assert world.reindexer(v3).run().switched

    report = world.reindexer(v2, switch_changes=0, lease_s=0.001).run(
        before_pass=other_run_switches)
    assert not report.switched and "another switch" in report.refused
    serving = world.versions.serving()
    assert serving is not None and serving.model_version == v3.model_version
    statuses = {e.model_version: e.status for e in world.versions.entries()}
    assert statuses == {v1.model_version: ModelStatus.RETIRED,
                        v2.model_version: ModelStatus.BUILDING,
                        v3.model_version: ModelStatus.SERVING}


class PreparingOnlyV2(TinyEmbedderV2):
    """:class:`TinyEmbedderV2` that refuses photos in ``embed``: reindex must hand it the
    model's inputs (``prepare``), made as each photo is decoded."""

    def embed(self, images: Any) -> np.ndarray:
        raise AssertionError("reindex kept the decoded photos until embed")


def test_reindex_keeps_the_models_inputs_not_the_decoded_photos(world: World) -> None:
    """A chunk of 16 products used to hold every photo's full decode until one embed call
    (a 40-megapixel photo is 160 MB); it now holds ``prepare``'s arrays, with the vectors
    ``embed`` of the photos gives."""
    v1 = TinyEmbedder()
    ingest(world.ingester(v1), catalog(world))
    report = world.reindexer(PreparingOnlyV2(), chunk_products=2).run()
    assert report.switched and not report.failures
    rows = {r["product_id"]: r for r in world.rows(physical_name(world.base,
                                                                 TinyEmbedderV2.model_version))}
    v2 = TinyEmbedderV2()
    for r in world.rows(physical_name(world.base, v1.model_version)):
        photo = Image.open(world.root / "images" / f"{r['product_id']}.png")
        expected = v2.embed([photo])[0]
        assert np.allclose(rows[r["product_id"]]["vector"], expected, atol=1e-6)


class ThreadRecordingV2(TinyEmbedderV2):
    """:class:`TinyEmbedderV2` that records the thread each ``prepare`` ran on."""

    def __init__(self) -> None:
        super().__init__()
        self.threads: list[str] = []

    def prepare(self, image: Any) -> np.ndarray:
        self.threads.append(threading.current_thread().name)
        return super().prepare(image)


def test_reindex_decodes_on_the_decode_pool_as_ingest_does(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """Reindex decoded each photo on the fetch thread that fetched it, outside ingest's
    ``decode_workers`` pool: 8 fetch threads that each decoded a 40-megapixel photo kept
    hundreds of megabytes apiece in their malloc arenas. It now decodes (and prepares) on the
    decode pool, with ingest's strip-wise RGBA conversion and ``malloc_trim`` after a large
    photo: an 8-megapixel transparent PNG is copied with the vector of its flattened decode."""
    from ingest import load as image_loading

    v1 = TinyEmbedder()
    big = world.root / "images" / "big.png"
    rgba = np.zeros((2000, 4000, 4), np.uint8)
    rgba[:, :2000] = (200, 30, 30, 255)
    rgba[:1000, 2000:] = (0, 0, 255, 128)  # half transparent: flattened on white
    Image.fromarray(rgba, "RGBA").save(big)
    ingest(world.ingester(v1), [*catalog(world, 2),
                                upsert_payload("big", 1, ["images/big.png"])])
    trims: list[int] = []
    monkeypatch.setattr(image_loading, "release_freed_memory", lambda: trims.append(1))
    v2 = ThreadRecordingV2()
    report = world.reindexer(v2, decode_workers=1).run()
    assert report.switched and not report.failures and report.images_embedded == 3
    assert len(v2.threads) == 3 and all(t.startswith("decode") for t in v2.threads)
    assert trims == [1]  # after the one photo of 8 megapixels
    rows = {r["product_id"]: r for r in world.rows(physical_name(world.base, v2.model_version))}
    photo = decode_image(big.read_bytes(), 10_000_000)
    assert photo.mode == "RGB" and photo.getpixel((3000, 0)) == (127, 127, 255)
    assert np.allclose(rows["big"]["vector"], TinyEmbedderV2().embed([photo])[0], atol=1e-6)


def test_reindex_migrates_a_pre_alias_collection(world: World) -> None:
    v1, v2 = TinyEmbedder(), TinyEmbedderV2()
    legacy = CollectionSpec(name=world.base, dim=v1.dim)
    ensure_collections(world.m.store, legacy)
    stages = world.ingester(v1)  # a legacy collection of its own model: keeps writing there
    ingest(stages, catalog(world, 3))
    serving = world.versions.serving()
    assert serving is not None and serving.legacy and serving.model_version == v1.model_version
    assert len(world.rows(world.base)) == 3
    with pytest.raises(ModelMismatchError, match="holds no vectors of model tiny-thumb-v2"):
        world.searcher(v2)  # before the re-index, the new model finds nothing: said, not []

    report = world.reindexer(v2).run()
    assert report.switched and report.products_copied == 3
    serving = world.versions.serving()
    assert serving is not None and not serving.legacy
    assert serving.physical == physical_name(world.base, v2.model_version)
    renamed = physical_name(world.base, v1.model_version)
    assert world.m.client.has_collection(renamed) and len(world.rows(renamed)) == 3
    statuses = {e.physical: e.status for e in world.versions.entries()}
    assert statuses == {renamed: ModelStatus.RETIRED, serving.physical: ModelStatus.SERVING}
    assert [h.product_id for h in world.searcher(v2).by_image(
        world.root / "images" / "p2.png", k=1)] == ["p2"]


def test_plain_collections_may_mix_models_but_must_hold_the_searchers(milvus: Milvus) -> None:
    """A collection that is not an alias may hold several models: no error while it holds rows
    of the searcher's model; a clear error (not an empty result) when it holds none."""
    spec = milvus.new_spec(dim=48)
    ensure_collections(milvus.store, spec)
    sink = MilvusSink(milvus.store, spec)

    def row(pid: str, model: str) -> ImageRecord:
        return ImageRecord.model_validate(milvus_support.record(
            pid, "k", [1.0] * 48, model_version=model).to_row())

    try:
        sink.apply(WritePlan(upserts=[row("x", "other")]))
        with pytest.raises(ModelMismatchError, match="holds no vectors of model tiny-thumb-v1"):
            ProductSearch(milvus.store, spec, TinyEmbedder(), consistency="Strong",
                          max_pixels=milvus_support.MAX_PIXELS)
        sink.apply(WritePlan(upserts=[row("y", TinyEmbedder.model_version)]))
        search = ProductSearch(milvus.store, spec, TinyEmbedder(), consistency="Strong",
                               max_pixels=milvus_support.MAX_PIXELS)
        assert [h.product_id for h in search.by_vector([1.0] * 48)] == ["y"]  # never "x"
        with pytest.raises(ProductNotFound):
            search.by_product("x")
    finally:
        milvus.drop(spec)


def test_cli_reindex_and_models_show_the_serving_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture
) -> None:
    from lookalike import commands
    from lookalike.cli import main

    db = str(tmp_path / "cli.db")
    store = MilvusStore.open(db, lite_process=True)
    (tmp_path / "images").mkdir()
    v1, v2 = TinyEmbedder(), TinyEmbedderV2()
    with ThreadPoolExecutor(2) as pool:
        w = World(Milvus("lite", store), "shop", tmp_path, pool)
        ingest(w.ingester(v1), catalog(w, 4))
        ingest(w.ingester(v1), [{"type": "product.delisted", "product_id": "p3",
                                 "version": 2}])  # its state row stays: a tombstone
    common = ["--milvus-uri", db, "--collection", "shop"]
    store.close()  # the commands below open it as a new process would

    assert main(["models", *common]) == 0
    out = capsys.readouterr().out
    assert f"shop (alias) -> {physical_name('shop', v1.model_version)}" in out
    assert f"serving model {v1.model_version}" in out
    serving_line = next(ln for ln in out.splitlines() if ln.startswith(" * "))
    # the delisted product's tombstone was counted as a product (products=4)
    assert " images=3 " in serving_line and " products=3 " in serving_line
    assert " delisted=1 " in serving_line

    monkeypatch.setattr(commands, "build_embedder", lambda settings: v2)
    assert main(["reindex", *common, "--image-root", str(tmp_path), "--settle-s", "0"]) == 0
    out = capsys.readouterr().out
    assert f"shop now serves model {v2.model_version}" in out
    assert "products_copied=4 products_deleted=0 images_embedded=3" in out  # p3: its tombstone

    assert main(["models", *common]) == 0
    out = capsys.readouterr().out
    assert f"serving model {v2.model_version}" in out
    assert "retired" in out and v1.model_version in out

    monkeypatch.setattr(commands, "build_embedder", lambda settings: v1)
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert main(["search", str(tmp_path / "images" / "p0.png"), *common]) == 2
    err = capsys.readouterr().err
    assert f"serves model {v2.model_version}" in err and err.count("\n") == 1, err
    # the searcher's own log said it too ("search refused from now on: ..."): one line now
    assert not [r for r in caplog.records if f"serves model {v2.model_version}" in
                r.getMessage()]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_at_the_switch_waits_for_its_catch_up_pass(
    sig: signal.Signals, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """Ctrl-C or SIGTERM just after "model switch" was logged ended reindex with "stopped by
    SIGINT before it finished", exit 130: the aliases had moved (the new model served) but the
    catch-up pass had not run, so what the old ingest committed after the last pass was
    missing from the new collections, and a second run said "already serves". The signal
    now waits for the switch and its pass, and the command reports the switch."""
    from lookalike import commands
    from lookalike.cli import main

    db = str(tmp_path / "cli.db")
    store = MilvusStore.open(db, lite_process=True)
    (tmp_path / "images").mkdir()
    v1, v2 = TinyEmbedder(), TinyEmbedderV2()
    with ThreadPoolExecutor(2) as pool:
        ingest(World(Milvus("lite", store), "shop", tmp_path, pool).ingester(v1),
               catalog(World(Milvus("lite", store), "shop", tmp_path, pool), 2))
    store.close()
    switch_to = ModelVersions.switch_to

    def late_write_then_signal(self: ModelVersions, model_version: str, dim: int) -> str | None:
        with ThreadPoolExecutor(2) as pool:  # committed by the old ingest after the last pass
            old = World(Milvus("lite", self.store), self.base, tmp_path, pool)
            ingest(old.ingester(v1), [upsert_payload("late", 1, [old.image("late.png", 77)])])
        previous = switch_to(self, model_version, dim)
        os.kill(os.getpid(), sig)  # just after "model switch: ..." is logged
        return previous

    monkeypatch.setattr(ModelVersions, "switch_to", late_write_then_signal)
    monkeypatch.setattr(commands, "build_embedder", lambda settings: v2)
    common = ["--milvus-uri", db, "--collection", "shop"]
    assert main(["reindex", *common, "--image-root", str(tmp_path), "--settle-s", "0"]) == 0
    captured = capsys.readouterr()
    assert f"shop now serves model {v2.model_version}" in captured.out
    assert "switched=True" in captured.out and "passes=2" in captured.out
    assert "stopped by" not in captured.err
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert f"{sig.name} came during the switch, which is done" in caplog.text
    store = MilvusStore.open(db, lite_process=True)
    try:
        with ThreadPoolExecutor(1) as pool:
            w = World(Milvus("lite", store), "shop", tmp_path, pool)
            new = physical_name("shop", v2.model_version)
            w.versions.load(new)
            assert {r["product_id"] for r in w.rows(new)} == {"p0", "p1", "late"}
    finally:
        store.close()


@pytest.mark.kafka
def test_an_idle_old_model_ingest_stops_at_a_switch_without_a_new_event(
    world: World, bootstrap: str, unique: str, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture
) -> None:
    """The old-model ingest noticed a switch only at its next batch: with a quiet catalog it
    kept its partitions and `lookalike run` a process answering 503 only, for as long as no
    event came. It now checks while idle, every IDLE_CHECK_EVERY_S, and stops as at a batch
    (exit 3, nothing committed); a Milvus error meanwhile is logged once and tried again,
    backing off."""
    from lookalike.commands import _ingest
    from lookalike.errors import ExitCode, UserError
    from store import StoreUnavailableError
    from tests.pipeline_support import committed_and_end, make_settings, send

    caplog.set_level(logging.INFO, logger="ingest.runner")
    v1, v2 = TinyEmbedder(), TinyEmbedderV2()
    ingest(world.ingester(v1), catalog(world, 2))
    settings = make_settings(bootstrap, unique, world.root / "unused.db", [world.root])
    create_topics(settings)
    send(bootstrap, settings.kafka.topic, [upsert_payload("p9", 1, [world.image("p9.png", 9)])])

    failing = threading.Event()
    failed: list[float] = []
    reaches = ModelVersions.reaches

    def flaky(self: ModelVersions) -> str | None:
        if failing.is_set():
            failed.append(time.monotonic())
            raise StoreUnavailableError("describe failed after 4 attempt(s): unavailable")
        return reaches(self)

    monkeypatch.setattr(ModelVersions, "reaches", flaky)
    outcome: list[BaseException] = []

    def run_ingest() -> None:
        try:
            _ingest(settings, v1, world.versions, until_caught_up=False)
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run_ingest, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    ends = committed_and_end(bootstrap, settings)
    while sum(c for c, _ in ends.values()) < 1 and time.monotonic() < deadline:
        time.sleep(0.5)
        ends = committed_and_end(bootstrap, settings)
    assert sum(c for c, _ in ends.values()) == 1, ends  # p9 written and committed: now idle

    failing.set()  # Milvus away for two idle checks: ingest goes on
    while len(failed) < 2 and time.monotonic() < deadline + 10:
        time.sleep(0.1)
    failing.clear()
    assert len(failed) >= 2 and thread.is_alive() and not outcome
    assert caplog.text.count("idle check failed") == 1
    # It backs off while failing (2 s, then 4 s, ... up to IDLE_CHECK_MAX_S), not every 2 s.
    assert failed[1] - failed[0] > IDLE_CHECK_EVERY_S * 1.5
    while "idle check works again" not in caplog.text and time.monotonic() < deadline + 30:
        time.sleep(0.1)
    assert "idle check works again" in caplog.text  # and back to every IDLE_CHECK_EVERY_S

    report = world.reindexer(v2).run()
    assert report.switched
    switched = time.monotonic()
    thread.join(timeout=IDLE_CHECK_EVERY_S + 10)
    assert not thread.is_alive(), "the idle old-model ingest did not notice the switch"
    assert time.monotonic() - switched < IDLE_CHECK_EVERY_S + 5
    assert len(outcome) == 1 and isinstance(outcome[0], UserError)
    assert outcome[0].code == ExitCode.MODEL_SWITCHED
    assert str(outcome[0]).startswith("ingest stopped: the model switched. ")
    assert f"now serves model {v2.model_version}" in str(outcome[0])
    assert committed_and_end(bootstrap, settings) == ends  # nothing more committed
