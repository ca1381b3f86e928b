"""Operating model versions: ``lookalike models drop`` and the reindex lease that keeps two
``lookalike reindex`` runs (or a reindex and a drop) apart, on Milvus Lite (and a server when
LOOKALIKE_TEST_MILVUS_SERVER_URI is set). The worlds and fake models are test_versions.py's.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import pytest

from ingest.reindex import Reindexer, ReindexError
from schema.versions import ModelStatus, ModelVersionError, lease_name, physical_name, state_name
from store import MilvusStore
from store.lease import Lease, LeaseHeldError, LeaseHolder
from store.versions import ModelVersions
from tests import test_versions
from tests.fakes import TinyEmbedder
from tests.milvus_support import Milvus
from tests.pipeline_support import upsert_payload
from tests.test_versions import TinyEmbedderV2, TinyEmbedderV3, World, catalog, ingest

T = TypeVar("T")

milvus = test_versions.milvus
world = test_versions.world


def _switched_twice(world: World) -> tuple[str, str, str]:
    """v1 ingested, then reindexed to v2: v1 retired, v2 serving; returns the versions."""
    v1, v2 = TinyEmbedder(), TinyEmbedderV2()
    ingest(world.ingester(v1), catalog(world, 3))
    assert world.reindexer(v2).run().switched
    return v1.model_version, v2.model_version, physical_name(world.base, v1.model_version)


# -- models drop ---------------------------------------------------------------------------


def test_drop_removes_a_retired_pair_and_its_entry_and_searches_go_on(world: World) -> None:
    old, new, old_physical = _switched_twice(world)
    versions = world.versions
    entry = versions.drop_version(old)
    assert entry.status is ModelStatus.RETIRED and entry.physical == old_physical
    assert not world.m.store.has_collection(old_physical)
    assert not world.m.store.has_collection(state_name(old_physical))
    assert [e.model_version for e in versions.entries()] == [new]
    hits = world.searcher(TinyEmbedderV2()).by_image(world.root / "images" / "p1.png", k=1)
    assert [h.product_id for h in hits] == ["p1"]
    with pytest.raises(ModelVersionError, match=f"no model version '{old}'.*known: {new} "
                       r"\(serving\)"):
        versions.drop_version(old)  # dropped already: unknown now


def test_drop_refuses_the_serving_version_and_an_unknown_one(world: World) -> None:
    old, new, _ = _switched_twice(world)
    with pytest.raises(ModelVersionError, match=f"model {new} serves {world.base} now"):
        world.versions.drop_version(new)
    with pytest.raises(ModelVersionError, match=f"no model version 'nope'.*known: {old} "
                       rf"\(retired\), {new} \(serving\)"):
        world.versions.drop_version("nope")
    assert len(world.versions.entries()) == 2


def test_drop_refuses_a_pair_owed_a_catch_up(world: World) -> None:
    v1, v2 = TinyEmbedder(), TinyEmbedderV2()
    ingest(world.ingester(v1), catalog(world, 2))
    versions = world.versions
    versions.ensure_building(v2.model_version, v2.dim)
    versions.switch_to(v2.model_version, v2.dim)  # a switch cut short before its catch-up
    with pytest.raises(ModelVersionError, match=f"model {v1.model_version} .* is owed a "
                       f"catch-up pass.*with model {v2.model_version} first"):
        versions.drop_version(v1.model_version)
    assert world.m.store.has_collection(physical_name(world.base, v1.model_version))


def test_drop_of_a_version_being_built_needs_force(world: World) -> None:
    v1, v2 = TinyEmbedder(), TinyEmbedderV2()
    ingest(world.ingester(v1), catalog(world, 2))
    ingest(world.ingester(v2), [upsert_payload("n", 1, [world.image("n.png", 7)])])  # building
    versions = world.versions
    with pytest.raises(ModelVersionError, match=r"is being built.*--force"):
        versions.drop_version(v2.model_version)
    building = physical_name(world.base, v2.model_version)
    assert versions.drop_version(building, force=True).status is ModelStatus.BUILDING
    assert not world.m.store.has_collection(building)
    assert [e.model_version for e in versions.entries()] == [v1.model_version]


def test_drop_refuses_a_pair_that_an_alias_reaches(world: World) -> None:
    """Defence in depth behind the base-name rule: a pair any alias reaches serves something
    (a version's collection once taken as a base was renamed and dropped: the catalog went)."""
    old, _, old_physical = _switched_twice(world)
    other = f"{world.base}x"
    world.m.store.create_alias(old_physical, other)
    try:
        with pytest.raises(ModelVersionError, match=f"{old_physical} is reached by the alias "
                           f"{other} now"):
            world.versions.drop_version(old)
        assert world.m.store.has_collection(old_physical)
    finally:
        world.m.store.drop_alias(other)
    assert world.versions.drop_version(old).physical == old_physical


def test_a_version_s_collection_is_no_base_name(world: World) -> None:
    _, new, _ = _switched_twice(world)
    for name in (physical_name(world.base, new), state_name(world.base), lease_name(world.base),
                 f"{world.base}_models"):
        with pytest.raises(ValueError, match="a base name may not"):
            ModelVersions(world.m.store, name)


def test_refusals_before_the_lease_create_nothing(world: World) -> None:
    """A typo in --collection (nothing serves) and a model that serves already were refused
    only after the lease was taken: the first created ``<typo>_lease``, both waited for it."""
    v1 = TinyEmbedder()
    ingest(world.ingester(v1), catalog(world, 2))
    assert not world.m.store.has_collection(lease_name(world.base))
    with pytest.raises(ReindexError, match=r"already serves .*nothing to do"):
        world.reindexer(v1, lease_confirm_s=30.0).run()  # refused without waiting 30 s
    assert not world.m.store.has_collection(lease_name(world.base))
    typo = f"{world.base}y"
    versions = ModelVersions(world.m.store, typo)
    reindexer = Reindexer(versions, TinyEmbedderV2(), world.fetcher(), world.pool,
                          max_pixels=10_000_000, max_passes=10, settle_s=0.0)
    with pytest.raises(ReindexError, match=f"nothing to re-index: {typo} does not exist yet"):
        reindexer.run()
    assert not world.m.store.has_collection(lease_name(typo))
    assert Lease(world.m.store, lease_name(typo), "reindex", owner="x", ttl_s=60).holder() is None
    assert not world.m.store.has_collection(lease_name(typo))  # a read creates nothing


# -- the reindex lease ---------------------------------------------------------------------


def _lease(world: World, owner: str, *, ttl_s: float = 60.0, now_ms: int | None = None,
           confirm_s: float = 0.0) -> Lease:
    clock = (lambda: now_ms) if now_ms is not None else (lambda: int(time.time() * 1000))
    return Lease(world.m.store, lease_name(world.base), "reindex", owner=owner, ttl_s=ttl_s,
                 confirm_s=confirm_s, clock_ms=clock)


def test_a_second_reindex_is_refused_while_the_first_holds_the_lease(world: World) -> None:
    v1 = TinyEmbedder()
    ingest(world.ingester(v1), catalog(world, 2))
    refusals: list[str] = []

    def second_run(number: int) -> None:
        if number == 1:
            with pytest.raises(LeaseHeldError) as caught:
                world.reindexer(TinyEmbedderV3()).run()
            refusals.append(str(caught.value))
            drop_lease = world.versions.reindex_lease("models-drop", ttl_s=60, confirm_s=0)
            with pytest.raises(LeaseHeldError):  # nor can a drop, which takes the same lease
                drop_lease.acquire()

    report = world.reindexer(TinyEmbedderV2()).run(before_pass=second_run)
    assert report.switched
    [refusal] = refusals
    assert f"the reindex lease of {lease_name(world.base)} is held by reindex@" in refusal
    assert "expires" in refusal and "unless renewed" in refusal
    assert _lease(world, "probe").holder() is None  # released at the end
    assert not world.m.store.has_collection(physical_name(world.base, "tiny-thumb-v3"))


def test_the_lease_is_released_when_a_run_fails(world: World) -> None:
    ingest(world.ingester(TinyEmbedder()), catalog(world, 2))

    def fail(number: int) -> None:
        raise RuntimeError("the embedder broke")

    with pytest.raises(RuntimeError, match="broke"):
        world.reindexer(TinyEmbedderV2()).run(before_pass=fail)
    assert _lease(world, "probe").holder() is None
    assert world.reindexer(TinyEmbedderV2()).run().switched  # the next run is not blocked


def test_an_expired_lease_of_a_killed_run_is_taken_over(world: World,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    ingest(world.ingester(TinyEmbedder()), catalog(world, 2))
    ten_minutes_ago = int(time.time() * 1000) - 600_000
    _lease(world, "reindex@gone:1:dead", ttl_s=120, now_ms=ten_minutes_ago).acquire()  # killed
    holder = _lease(world, "probe").holder()
    assert holder is not None and holder.owner == "reindex@gone:1:dead"
    report = world.reindexer(TinyEmbedderV2()).run()
    assert report.switched
    assert "taking over the lease of reindex@gone:1:dead, which expired" in caplog.text
    assert _lease(world, "probe").holder() is None


def test_a_run_whose_lease_was_taken_over_does_not_switch(world: World) -> None:
    """A run stalled past its lease's expiry, and another took the lease over: the stalled
    one must not move the aliases (two runs would switch)."""
    v1 = TinyEmbedder()
    ingest(world.ingester(v1), catalog(world, 2))

    def taken_over(number: int) -> None:
        if number == 1:
            _lease(world, "reindex@other:2:beef").acquire()

    report = world.reindexer(TinyEmbedderV2(), lease_s=0.001).run(before_pass=taken_over)
    assert not report.switched
    assert "lease" in report.refused and "reindex@other:2:beef" in report.refused
    serving = world.versions.serving()
    assert serving is not None and serving.model_version == v1.model_version
    holder = _lease(world, "probe").holder()
    assert holder is not None and holder.owner == "reindex@other:2:beef"  # not released


def test_a_run_whose_lease_row_is_gone_does_not_switch(world: World) -> None:
    """Its expired lease was taken over and let go of (a `models drop --force` that ran while
    it stalled), or removed by `models unlock`: a renewal that finds no row wrote the lease
    again and the run went on."""
    v1 = TinyEmbedder()
    ingest(world.ingester(v1), catalog(world, 2))

    def taken_over_and_released(number: int) -> None:
        if number == 1:
            other = _lease(world, "models-drop@other:3:f00d")
            other.acquire()
            other.release()

    report = world.reindexer(TinyEmbedderV2(), lease_s=0.001).run(
        before_pass=taken_over_and_released)
    assert not report.switched
    assert "lease" in report.refused and "expired" in report.refused
    assert "let go of" in report.refused
    serving = world.versions.serving()
    assert serving is not None and serving.model_version == v1.model_version
    assert _lease(world, "probe").holder() is None  # not written again


def test_a_release_deletes_only_its_own_row(world: World) -> None:
    """The row read as its own before the delete may be another process's by the delete."""
    mine = _lease(world, "reindex@a:1:aa", ttl_s=0.001)
    mine.acquire()
    stale = mine.holder()
    time.sleep(0.01)
    theirs = _lease(world, "reindex@b:2:bb")
    theirs.acquire()  # took the expired lease over
    mine.holder = lambda: stale  # type: ignore[method-assign]  # read before theirs was written
    mine.release()
    holder = _lease(world, "probe").holder()
    assert holder is not None and holder.owner == "reindex@b:2:bb"


def test_removing_a_lease_names_its_holder(world: World) -> None:
    assert _lease(world, "probe").remove() == (None, None)
    assert not world.m.store.has_collection(lease_name(world.base))  # creates nothing
    _lease(world, "reindex@dead:9:dd", ttl_s=3600).acquire()
    removed, after = _lease(world, "probe").remove()
    assert removed is not None and removed.owner == "reindex@dead:9:dd" and after is None
    assert _lease(world, "probe").holder() is None


def test_removing_a_lease_taken_over_meanwhile_leaves_the_takeover(world: World) -> None:
    """`models unlock` read a dead run's lease, then another run took it over before the
    delete: the delete names the owner read, so the takeover stays, and remove says so."""
    _lease(world, "reindex@dead:9:dd", ttl_s=1, now_ms=1_000).acquire()  # long expired
    probe = _lease(world, "probe")
    stale = probe.holder()
    _lease(world, "reindex@b:2:bb").acquire()  # the takeover, after the probe's read
    reads = iter([stale])
    read_now = probe.holder
    probe.holder = lambda: next(reads, None) or read_now()  # type: ignore[method-assign]
    removed, after = probe.remove()
    assert removed is not None and removed.owner == "reindex@dead:9:dd"
    assert after is not None and after.owner == "reindex@b:2:bb"
    holder = _lease(world, "probe").holder()
    assert holder is not None and holder.owner == "reindex@b:2:bb"
    with pytest.raises(ValueError, match="at most 21600s"):
        _lease(world, "probe", ttl_s=1e9)


@pytest.mark.parametrize("first_lease", [False, True])
def test_of_two_processes_taking_the_lease_at_once_one_gets_it(world: World,
                                                               first_lease: bool) -> None:
    """Both read "free" and both write: the confirmation read after ``confirm_s`` lets only
    the last writer through. The very first lease of a base name also creates its collection,
    which both create at once (the second create failed: "File exists")."""
    if not first_lease:  # the lease collection exists
        probe = _lease(world, "probe")
        probe.acquire()
        probe.release()
    start = threading.Barrier(2)
    outcomes: dict[str, str] = {}

    def take(owner: str) -> None:
        start.wait()
        try:
            _lease(world, owner, confirm_s=0.5).acquire()
            outcomes[owner] = "held"
        except LeaseHeldError:
            outcomes[owner] = "refused"

    threads = [threading.Thread(target=take, args=(f"reindex@h:{i}:x",)) for i in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes.values()) == ["held", "refused"]
    holder = _lease(world, "probe").holder()
    assert holder is not None and outcomes[holder.owner] == "held"


# -- the commands ----------------------------------------------------------------------------


def _cli_database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, model: TinyEmbedder,
                  prepare: Callable[[World], T]) -> tuple[str, T]:
    """A Lite database at ``tmp_path/cli.db`` with collection ``shop`` as ``prepare`` leaves
    it, closed again for the CLI to open, whose commands then build ``model``; the path and
    what ``prepare`` returned."""
    from lookalike import commands

    monkeypatch.setattr(commands, "build_embedder", lambda settings: model)
    db = str(tmp_path / "cli.db")
    store = MilvusStore.open(db, lite_process=True)
    (tmp_path / "images").mkdir()
    try:
        with ThreadPoolExecutor(2) as pool:
            return db, prepare(World(Milvus("lite", store), "shop", tmp_path, pool))
    finally:
        store.close()


def test_cli_models_drop_and_a_held_lease(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str],
                                         caplog: pytest.LogCaptureFixture) -> None:
    from lookalike.cli import main

    db, (old, new, old_physical) = _cli_database(tmp_path, monkeypatch, TinyEmbedderV3(),
                                                 _switched_twice)
    common = ["--milvus-uri", db, "--collection", "shop"]

    assert main(["models", *common]) == 0  # lists, as before
    out = capsys.readouterr().out
    assert f"serving model {new}" in out and "retired" in out and old in out

    for refused, message in ((new, f"model {new} serves shop now"),
                             ("nope", f"known: {old} (retired), {new} (serving)")):
        assert main(["models", "drop", refused, *common]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1

    store = MilvusStore.open(db, lite_process=True)
    try:  # a reindex on another machine holds the lease
        Lease(store, lease_name("shop"), "reindex", owner="reindex@elsewhere:7:cafe", ttl_s=600,
              confirm_s=0).acquire()
    finally:
        store.close()
    assert main(["models", *common, "drop", old]) == 4
    err = capsys.readouterr().err
    assert "held by reindex@elsewhere:7:cafe" in err and "expires" in err
    assert err.count("\n") == 1
    assert "or run `lookalike models unlock` if that run is known to be dead" in err
    assert main(["reindex", *common, "--image-root", str(tmp_path)]) == 4
    assert "held by reindex@elsewhere:7:cafe" in capsys.readouterr().err
    assert main(["models", *common, "unlock"]) == 0  # that run is known to be dead
    out = capsys.readouterr().out
    assert "removed the reindex lease of reindex@elsewhere:7:cafe" in out and "not expired" in out
    assert main(["models", *common, "unlock"]) == 0
    assert "no reindex lease is held" in capsys.readouterr().out

    taken_over = (LeaseHolder("reindex@dead:1:aa", 0, 1_000),
                  LeaseHolder("reindex@elsewhere:8:beef", 2_000, 9_999_999_999_999))
    remove = Lease.remove
    monkeypatch.setattr(Lease, "remove", lambda self: taken_over)
    assert main(["models", *common, "unlock"]) == 4  # another run took it over meanwhile
    err = capsys.readouterr().err
    assert "reindex@dead:1:aa was taken over meanwhile; left in place" in err
    assert "now held by reindex@elsewhere:8:beef" in err and err.count("\n") == 1
    renewed = (taken_over[0], LeaseHolder("reindex@dead:1:aa", 0, 9_999_999_999_999))
    monkeypatch.setattr(Lease, "remove", lambda self: renewed)
    assert main(["models", *common, "unlock"]) == 4  # its holder renewed it: it is alive
    err = capsys.readouterr().err
    assert "reindex@dead:1:aa was renewed meanwhile, so that run is alive" in err
    assert err.count("\n") == 1
    monkeypatch.setattr(Lease, "remove", remove)

    store = MilvusStore.open(db, lite_process=True)
    try:
        finished = Lease(store, lease_name("shop"), "reindex", owner="reindex@elsewhere:7:cafe",
                         ttl_s=600, confirm_s=0)
        finished.acquire()  # its own lease, which it lets go of as it finishes
        finished.release()
    finally:
        store.close()
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert main(["models", "drop", old, *common]) == 0
    assert f"dropped model {old} (retired): {old_physical}" in capsys.readouterr().out
    # the store's own WARNING said it too, on stderr: the command's line is the one
    assert not [r for r in caplog.records if "dropped model" in r.getMessage()]
    assert main(["models", *common]) == 0
    out = capsys.readouterr().out
    assert f"serving model {new}" in out and old not in out


def test_cli_refusals_create_no_collection(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    """A mistyped --collection: `reindex` created ``<typo>_lease`` before refusing; and no
    refused command may leave a collection behind."""
    from lookalike.cli import main

    def ingested(w: World) -> list[str]:
        ingest(w.ingester(TinyEmbedder()), catalog(w, 2))
        return sorted(w.m.store.client.list_collections())

    db, before = _cli_database(tmp_path, monkeypatch, TinyEmbedder(), ingested)
    uri = ["--milvus-uri", db]
    for argv, message in (
        (["reindex", *uri, "--collection", "nosuch"], "nosuch does not exist yet"),
        (["models", *uri, "--collection", "nosuch", "drop", "v"], "nosuch: does not exist"),
        (["reindex", *uri, "--collection", "shop"], "already serves shop"),
        (["models", *uri, "--collection", "shop", "drop", "nosuch"], "no model version"),
        (["reindex", *uri, "--collection", "shop__c6d514a571"], "may not contain '__'"),
    ):
        assert main(argv) == 2, argv
        assert message in capsys.readouterr().err
    assert main(["models", *uri, "--collection", "nosuch", "unlock"]) == 0
    store = MilvusStore.open(db, lite_process=True)
    try:
        assert sorted(store.client.list_collections()) == before
        assert "shop_lease" not in before
    finally:
        store.close()
