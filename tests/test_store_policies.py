"""Which consistency each caller reads with, when the sink flushes, and how often a searcher
re-checks the model registry (docs/scaling.md). Fakes only, except the last test (each engine)."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from evaluation import run as eval_run
from ingest.plan import WritePlan
from ingest.sink import MilvusSink
from lookalike.app import build_search
from lookalike.settings import Settings
from schema.collection import CollectionSpec
from schema.records import ProductState
from search.api import ProductSearch
from search.filters import SearchFilter
from store import MilvusStore, StoreError, ensure_collections, parse_engine
from tests import milvus_support
from tests.milvus_support import FakeEmbedder, Milvus, record, unit

milvus = milvus_support.milvus
spec = milvus_support.spec
SPEC = CollectionSpec(name="fake", dim=8)


class FakeClient:
    """Answers every query with ``rows``; records calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, dict[str, Any]]] = []
        self.rows: list[dict[str, Any]] = []

    def query(self, collection: str, **kw: Any) -> list[dict[str, Any]]:
        self.calls.append(("query", collection, kw))
        return self.rows

    def upsert(self, collection: str, data: list[dict[str, Any]], **kw: Any) -> dict[str, Any]:
        self.calls.append(("upsert", collection, kw))
        return {"upsert_count": len(data)}

    def delete(self, collection: str, **kw: Any) -> dict[str, Any]:
        self.calls.append(("delete", collection, kw))
        return {}

    def flush(self, collection: str, **kw: Any) -> None:
        self.calls.append(("flush", collection, kw))


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _state(pid: str, version: int) -> ProductState:
    return ProductState(product_id=pid, version=version, listed=True, updated_at_ms=1)


def test_sink_reads_states_strong_at_first_then_bounded_and_remembers_its_writes() -> None:
    client, clock = FakeClient(), Clock()
    sink = MilvusSink(MilvusStore(client, engine=parse_engine("v2.3.5")), SPEC,
                      strong_window_s=10.0, clock=clock)
    sink.get_states(["a"])
    assert client.calls[-1][2]["consistency_level"] == "Strong"  # a restart: others' writes
    clock.now += 11
    sink.get_states(["a"])
    assert client.calls[-1][2]["consistency_level"] == "Bounded"

    sink.apply(WritePlan(states=[_state("a", 3)]))
    client.calls.clear()
    assert sink.get_states(["a"]) == {"a": _state("a", 3)}
    assert client.calls == []  # its own write: no read, no wait for the time tick
    sink.get_states(["a", "b"])
    (query,) = client.calls
    assert query[2]["filter"] == 'product_id in ["b"]'

    sink.expect_foreign_writes()  # a partition was assigned
    assert sink.state_read_consistency() == "Strong"
    client.calls.clear()
    sink.get_states(["a"])
    assert client.calls and client.calls[0][2]["consistency_level"] == "Strong"


def test_bounded_state_reads_are_remembered_but_not_across_a_write_or_a_failure() -> None:
    """What the prepare stage read (absent states too) answers the write stage; a read that
    may predate a write of this sink (an apply in progress, or one that failed) is not."""
    client, clock = FakeClient(), Clock()
    sink = MilvusSink(MilvusStore(client, engine=parse_engine("v2.3.5")), SPEC,
                      strong_window_s=10.0, clock=clock)
    client.rows = [{**_state("a", 2).model_dump()}]
    assert sink.get_states(["a", "b"]) == {"a": _state("a", 2)}  # Strong: not remembered
    clock.now += 11
    sink.get_states(["a", "b"])
    client.calls.clear()
    assert sink.get_states(["a", "b"]) == {"a": _state("a", 2)}  # Bounded: remembered
    assert client.calls == []

    class WritesMeanwhile(FakeClient):
        """Answers the read of "c" while an apply of "c" is in progress."""

        def query(self, collection: str, **kw: Any) -> list[dict[str, Any]]:
            if "c" in kw["filter"] and sink_ref:
                sink_ref[0]._applying.add("c")
            return super().query(collection, **kw)

    sink_ref: list[MilvusSink] = []
    other = WritesMeanwhile()
    racing = MilvusSink(MilvusStore(other, engine=parse_engine("v2.3.5")), SPEC,
                        strong_window_s=0.0)
    sink_ref.append(racing)
    racing.get_states(["c"])  # absent, but an apply of "c" began: not remembered
    racing._applying.clear()
    other.calls.clear()
    racing.get_states(["c"])
    assert len(other.calls) == 1

    failing = FakeClient()
    broken = MilvusSink(MilvusStore(failing, engine=parse_engine("v2.3.5"), max_attempts=1),
                        SPEC, strong_window_s=0.0)
    broken.get_states(["d"])
    failing.upsert = _raise  # type: ignore[method-assign]
    with pytest.raises(StoreError):
        broken.apply(WritePlan(states=[_state("d", 1)]))
    failing.calls.clear()
    broken.get_states(["d"])  # the failed apply may have written it: read again
    assert len(failing.calls) == 1


def _raise(*args: Any, **kw: Any) -> Any:
    raise ValueError("rejected")


def test_lite_sink_flushes_on_a_schedule_and_a_server_sink_never() -> None:
    for engine, expected in (("milvus_lite-3.2.2", 2), ("v2.3.5", 0)):
        client, clock = FakeClient(), Clock()
        sink = MilvusSink(MilvusStore(client, engine=parse_engine(engine)), SPEC, clock=clock)
        for step in range(10):
            clock.now += 0.5
            sink.apply(WritePlan(states=[_state(f"p{step}", 1)]))
        flushes = [c for c in client.calls if c[0] == "flush"]
        assert len(flushes) == expected * 2  # image and state collections, every 2 s on lite



def test_the_sink_seals_once_writes_pause_but_not_for_every_event_of_a_trickle() -> None:
    client, clock = FakeClient(), Clock()
    sink = MilvusSink(MilvusStore(client, engine=parse_engine("v2.3.5")), SPEC, clock=clock)

    def flushes() -> int:
        return sum(c[0] == "flush" for c in client.calls) // 2  # images and states each

    assert not sink.seal_if_idle(final=True)  # nothing written yet
    clock.now += 100
    sink.apply(WritePlan(states=[_state("a", 1)]))
    clock.now += 4
    assert not sink.seal_if_idle() and flushes() == 0  # writes paused 4 s only
    clock.now += 1
    assert sink.seal_if_idle() and flushes() == 1
    assert not sink.seal_if_idle()  # nothing new
    for step in range(6):  # an event every 10 s: sealed at most once a minute
        clock.now += 10
        sink.apply(WritePlan(states=[_state(f"t{step}", 1)]))
        clock.now += 6
        sink.seal_if_idle()
    assert flushes() == 2
    clock.now += 1
    sink.apply(WritePlan(states=[_state("z", 1)]))
    assert sink.seal_if_idle(final=True) and flushes() == 3  # the runner's last call


def test_the_sink_prunes_the_images_it_wrote_without_reading_them() -> None:
    """Its own products' image pks are remembered; others' are read like states."""
    client, clock = FakeClient(), Clock()
    sink = MilvusSink(MilvusStore(client, engine=parse_engine("v2.3.5")), SPEC,
                      strong_window_s=10.0, clock=clock)
    clock.now += 11
    client.rows = [{"pk": "b#old", "product_id": "b"}]  # b was written by another process
    sink.apply(WritePlan(upserts=[record("a", "k1", unit(0)), record("a", "k2", unit(1)),
                                  record("b", "k1", unit(2))],
                         prune={"a": {"a#k1", "a#k2"}, "b": {"b#k1"}},
                         states=[_state("a", 1), _state("b", 1)]))
    reads = [c for c in client.calls if c[0] == "query"]
    assert len(reads) == 1 and reads[0][2]["filter"] == 'product_id in ["a", "b"]'
    assert reads[0][2]["consistency_level"] == "Bounded"
    deletes = [c[2]["filter"] for c in client.calls if c[0] == "delete"]
    assert deletes == ['pk in ["b#old"]']

    client.calls.clear()
    client.rows = []
    sink.apply(WritePlan(upserts=[record("a", "k2", unit(1))], prune={"a": {"a#k2"}},
                         delete_products=["b"], states=[_state("a", 2), _state("b", 2)]))
    assert [c for c in client.calls if c[0] == "query"] == []  # both remembered
    deletes = [c[2]["filter"] for c in client.calls if c[0] == "delete"]
    assert deletes == ['pk in ["a#k1"]', 'pk in ["b#k1"]']

    sink.expect_foreign_writes()  # forgotten: read again
    client.calls.clear()
    sink.apply(WritePlan(delete_products=["a"], states=[_state("a", 3)]))
    reads = [c for c in client.calls if c[0] == "query"]
    assert len(reads) == 1 and reads[0][2]["consistency_level"] == "Strong"


def test_the_sink_reads_others_image_pks_while_it_writes_the_new_rows() -> None:
    """The read of the stored pks of products it did not write runs on a helper thread
    during the image upsert (no second round trip in line), and is still used to prune."""
    read_started = threading.Event()

    class Overlapping(FakeClient):
        def query(self, collection: str, **kw: Any) -> list[dict[str, Any]]:
            read_started.set()
            return super().query(collection, **kw)

        def upsert(self, collection: str, data: list[dict[str, Any]],
                   **kw: Any) -> dict[str, Any]:
            if collection == SPEC.name:  # the image rows: the read runs meanwhile
                assert read_started.wait(5), "the pk read waited for the upsert"
            return super().upsert(collection, data, **kw)

    client = Overlapping()
    client.rows = [{"pk": "b#old", "product_id": "b"}, {"pk": "c#1", "product_id": "c"}]
    sink = MilvusSink(MilvusStore(client, engine=parse_engine("v2.3.5")), SPEC)
    result = sink.apply(WritePlan(upserts=[record("b", "k1", unit(2))], prune={"b": {"b#k1"}},
                                  delete_products=["c"], states=[_state("b", 1), _state("c", 1)]))
    deletes = [c[2]["filter"] for c in client.calls if c[0] == "delete"]
    assert deletes == ['pk in ["b#old"]', 'pk in ["c#1"]']
    assert "read_image_pks" in result.seconds_by_op()  # timed in the batch log all the same


def test_callers_choose_their_consistency(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings()
    assert settings.milvus.consistency == "Bounded"  # serving searches

    made: list[str] = []

    class Spy:
        def __init__(self, *args: Any, consistency: str, **kw: Any) -> None:
            made.append(consistency)

        def query_embedder(self, match: str) -> Any:  # eval embeds its queries with it
            return FakeEmbedder()

    class Versions:  # a collection that serves
        store, base = None, "fake"

        def serving_unloaded(self) -> object:
            return object()

        def load_serving(self) -> None:
            pass

    monkeypatch.setattr("search.api.ProductSearch", Spy)
    build_search(settings, FakeEmbedder(), Versions())  # type: ignore[arg-type]
    build_search(settings, FakeEmbedder(), Versions(),  # type: ignore[arg-type]
                 read_your_writes=True)
    assert made == ["Bounded", "Strong"]
    monkeypatch.setattr(eval_run, "ProductSearch", Spy)
    monkeypatch.setattr(eval_run, "ensure_collections", lambda *a: None)
    monkeypatch.setattr(eval_run, "index_gallery", lambda *a: 0)
    monkeypatch.setattr(eval_run, "run_queries", lambda *a, **k: [])
    monkeypatch.setattr(eval_run, "summarise", lambda r: None)
    eval_run.evaluate([], [], FakeEmbedder(), None, SPEC, None,  # type: ignore[arg-type]
                      max_pixels=1)
    assert made[-1] == "Strong"  # eval searches the gallery it has just indexed


def test_an_empty_answer_checks_the_model_at_most_once_per_interval(
    milvus: Milvus, spec: CollectionSpec
) -> None:
    ensure_collections(milvus.store, spec)
    MilvusSink(milvus.store, spec).apply(WritePlan(upserts=[record("p1", "k", unit(0))]))
    clock = Clock()
    search = ProductSearch(milvus.store, spec, FakeEmbedder(), consistency="Strong",
                           max_pixels=milvus_support.MAX_PIXELS,
                           model_check_interval_s=30.0, clock=clock)
    nothing = SearchFilter(categories=["Nowhere"])

    def registry_reads() -> int:
        with milvus.store.recording() as calls:
            assert search.by_vector(unit(0), 5, nothing) == []
        return sum(c.op in ("has_collection", "describe") for c in calls)

    assert registry_reads() == 0  # checked when it was built
    clock.now += 31
    assert registry_reads() > 0
    assert registry_reads() == 0


def test_servers_probe_every_ivf_list_under_a_filter_and_a_few_without() -> None:
    from store.engine import IVF_NLIST, IVF_NPROBE, search_params

    server, lite = parse_engine("v2.3.5"), parse_engine("milvus_lite-3.2.2")
    assert search_params(SPEC, server, 40, filtered=False)["params"] == {
        "nprobe": IVF_NPROBE, "ef": 256}
    assert search_params(SPEC, server, 40, filtered=True)["params"]["nprobe"] == IVF_NLIST
    assert IVF_NPROBE < IVF_NLIST
    # ef rides along for an HNSW index of an older collection: at least the limit
    assert search_params(SPEC, server, 1000, filtered=False)["params"]["ef"] == 1000
    assert search_params(SPEC, server, 99999, filtered=False)["params"]["ef"] == 16384
    assert search_params(SPEC, lite, 40, filtered=True)["params"] == {}


class _Params:
    """A server that answers nothing and remembers each search's ``search_params``."""

    def __init__(self) -> None:
        self.params: list[dict[str, Any]] = []

    def has_collection(self, name: str, **kw: Any) -> bool:
        return False

    def search(self, collection: str, **kw: Any) -> list[list[dict[str, Any]]]:
        self.params.append(kw["search_params"]["params"])
        return [[]]

    def query(self, collection: str, **kw: Any) -> list[dict[str, Any]]:
        return [{"count(*)": 0}]


@pytest.mark.parametrize(("search_filter", "exhaustive"), [
    (None, False),
    (SearchFilter(exclude_product_ids=["p1"]), False),  # leaves out a few: not a narrowing
    (SearchFilter(categories=["Men"]), True),
    (SearchFilter(min_price=5.0), True),
    (SearchFilter(max_price=5.0), True),
    (SearchFilter(currency="EUR"), True),
])
def test_a_search_probes_every_list_exactly_when_its_filter_narrows(
    search_filter: SearchFilter | None, exhaustive: bool
) -> None:
    from store.engine import IVF_NLIST, IVF_NPROBE

    client = _Params()
    search = ProductSearch(MilvusStore(client, engine=parse_engine("v2.3.5")), SPEC,
                           FakeEmbedder(), consistency="Bounded",
                           max_pixels=milvus_support.MAX_PIXELS)
    search.by_vector(unit(0), k=5, filter=search_filter)
    assert client.params  # the first page and the short-page rounds
    assert {p["nprobe"] for p in client.params} == {IVF_NLIST if exhaustive else IVF_NPROBE}
