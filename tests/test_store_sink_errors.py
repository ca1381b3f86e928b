"""Store and sink failure handling with a fake client: bounded retries, error classes,
states written last."""

from __future__ import annotations

from typing import Any

import pytest
from pymilvus.exceptions import MilvusException, MilvusUnavailableException

from ingest.plan import WritePlan
from ingest.sink import MilvusSink, SinkError
from schema.collection import CollectionSpec
from schema.records import ProductState
from store import MilvusStore, StoreError, StoreUnavailableError, is_transient, parse_engine
from tests.milvus_support import record, unit

SPEC = CollectionSpec(name="fake", dim=8)
OLD_SERVER = parse_engine("v2.3.5-lite")
NEW_SERVER = parse_engine("v2.5.4")


class FakeClient:
    """Records calls; ``fail`` maps an operation to the exceptions its next calls raise."""

    def __init__(self, fail: dict[str, list[BaseException]] | None = None) -> None:
        self.fail = fail or {}
        self.calls: list[tuple[str, str, Any]] = []
        self.rows: list[dict[str, Any]] = []

    def _maybe_fail(self, op: str) -> None:
        queue = self.fail.get(op)
        if queue:
            raise queue.pop(0)

    def upsert(self, collection: str, data: list[dict[str, Any]], **kw: Any) -> dict[str, Any]:
        self.calls.append(("upsert", collection, len(data)))
        self._maybe_fail("upsert" if collection == "fake" else "upsert_state")
        return {"upsert_count": len(data)}

    def delete(self, collection: str, **kw: Any) -> dict[str, Any]:
        self.calls.append(("delete", collection, kw))
        self._maybe_fail("delete")
        return {"delete_count": 1}

    def query(self, collection: str, **kw: Any) -> list[dict[str, Any]]:
        self.calls.append(("query", collection, kw))
        self._maybe_fail("query")
        return self.rows


def _sink(client: FakeClient, engine: Any = OLD_SERVER, **kw: Any) -> MilvusSink:
    return MilvusSink(MilvusStore(client, engine=engine, sleep=lambda s: None, **kw), SPEC)


def _plan() -> WritePlan:
    return WritePlan(
        upserts=[record("a", "k1", unit(0))],
        delete_products=["b"],
        states=[ProductState(product_id="a", version=1, listed=True, updated_at_ms=1)],
    )


def test_transient_errors_are_retried() -> None:
    client = FakeClient(
        {"upsert": [MilvusUnavailableException(message="down"), ConnectionError("reset")]}
    )
    client.rows = [{"pk": "b#k1", "product_id": "b"}]
    result = _sink(client).apply(_plan())
    upserts = [c for c in result.calls if c.op == "upsert_images"]
    assert upserts[0].attempts == 3
    assert result.upserted == 1 and result.deleted == 1 and result.states == 1


def test_retries_are_bounded_and_a_failed_delete_fails_the_apply() -> None:
    """The deletes come after the states (the commit point: ingest/sink.py), so the states
    are written, but the apply still fails: the batch is not committed, and its redelivery
    repeats the deletes (stale events repair)."""
    client = FakeClient({"delete": [TimeoutError("slow")] * 10})
    client.rows = [{"pk": "b#k1", "product_id": "b"}]
    with pytest.raises(StoreUnavailableError, match="delete_products failed after 3 attempt"):
        _sink(client, max_attempts=3).apply(_plan())
    writes = [(c[0], c[1]) for c in client.calls if c[0] != "query"]
    assert writes == [("upsert", SPEC.name), ("upsert", SPEC.state_name)] + [
        ("delete", SPEC.name)] * 3
    assert SinkError is StoreError  # the name ingest callers know


def test_permanent_errors_fail_at_once() -> None:
    client = FakeClient({"upsert": [MilvusException(code=1100, message="length exceeds")]})
    with pytest.raises(StoreError, match="upsert_images failed after 1 attempt") as caught:
        _sink(client).apply(_plan())
    assert not isinstance(caught.value, StoreUnavailableError)
    assert not [c for c in client.calls if c[1] == SPEC.state_name]


def test_unexpected_errors_become_sink_errors() -> None:
    client = FakeClient()
    client.rows = [{"wrong": 1}]
    with pytest.raises(SinkError, match="apply failed"):
        _sink(client).apply(_plan())


def test_plan_must_not_upsert_and_delete_one_product() -> None:
    plan = WritePlan(upserts=[record("a", "k1", unit(0))], delete_products=["a"])
    with pytest.raises(ValueError, match="both upsert and delete"):
        _sink(FakeClient()).apply(plan)


def test_expressions_use_templates_on_new_servers() -> None:
    client = FakeClient()
    client.rows = [{"pk": 'b"#k1', "product_id": 'b"'}]
    _sink(client, NEW_SERVER).apply(WritePlan(delete_products=['b"']))
    query = next(c for c in client.calls if c[0] == "query")[2]
    assert query["filter"] == "product_id in {p0}"
    assert query["filter_params"] == {"p0": ['b"']}
    assert query["consistency_level"] == "Strong"
    delete = next(c for c in client.calls if c[0] == "delete")[2]
    assert delete["filter"] == "pk in {p0}" and delete["filter_params"] == {"p0": ['b"#k1']}

    old = FakeClient()
    old.rows = [{"pk": 'b"#k1', "product_id": 'b"'}]
    _sink(old).apply(WritePlan(delete_products=['b"']))
    delete = next(c for c in old.calls if c[0] == "delete")[2]
    assert delete["filter"] == 'pk in ["b\\"#k1"]' and "filter_params" not in delete


def test_engine_detection() -> None:
    assert parse_engine("milvus_lite-3.2.2").is_lite
    assert parse_engine("v2.4.0", uri="./x.db").is_lite
    old = parse_engine("v2.3.5-lite")
    assert not old.is_lite and old.version == (2, 3, 5)
    assert not old.supports_filter_templates and not old.supports_inverted_index
    assert NEW_SERVER.supports_filter_templates and NEW_SERVER.supports_inverted_index
    assert not parse_engine("milvus_lite-3.2.2").supports_filter_templates


def test_is_transient() -> None:
    assert is_transient(MilvusException(code=8, message="rate limit exceeded"))
    assert is_transient(MilvusException(code=65535, message="service unavailable"))
    assert not is_transient(MilvusException(code=1100, message="invalid parameter"))
    assert not is_transient(ValueError("bad"))
    assert is_transient(StoreUnavailableError("down")) and not is_transient(StoreError("bad"))


class _ReleasedAfterRestart(FakeClient):
    """A 2.3 server after a restart: queries fail with code 101 until the collection is
    loaded again."""

    def __init__(self) -> None:
        super().__init__()
        self.loaded = True
        self.loads: list[str] = []

    def load_collection(self, name: str, **kw: Any) -> None:
        self.loads.append(name)
        self.loaded = True

    def query(self, collection: str, **kw: Any) -> list[dict[str, Any]]:
        if not self.loaded:
            raise MilvusException(code=101, message="failed to query: collection not loaded"
                                  "[collection=470816207302033451]")
        return super().query(collection, **kw)


def test_a_collection_released_by_a_server_restart_is_loaded_again_and_the_call_retried() -> None:
    client = _ReleasedAfterRestart()
    store = MilvusStore(client, engine=OLD_SERVER, sleep=lambda s: None)
    store.load(["fake"], wait=False)
    client.loaded = False  # the server restarted
    client.rows = [{"pk": "a#k1"}]
    assert store.query("fake", "pk != ''", ["pk"], consistency="Strong") == [{"pk": "a#k1"}]
    assert client.loads == ["fake", "fake"]


class _RecoveringAfterRestart(FakeClient):
    """A 2.3 server restarting: unreachable, then "collection not found" for a collection it
    is still recovering, then the answer."""

    def __init__(self, answers: list[Exception | None]) -> None:
        super().__init__()
        self.answers = answers

    def query(self, collection: str, **kw: Any) -> list[dict[str, Any]]:
        answer = self.answers.pop(0) if self.answers else None
        if answer is not None:
            raise answer
        return super().query(collection, **kw)


def _not_found() -> MilvusException:
    return MilvusException(code=100, message="collection not found[collection=fake_state]")


def test_collection_not_found_right_after_an_outage_is_waited_out() -> None:
    down = MilvusUnavailableException(code=2, message="Fail connecting to server")
    client = _RecoveringAfterRestart([down, _not_found(), _not_found()])
    store = MilvusStore(client, engine=OLD_SERVER, sleep=lambda s: None)
    client.rows = [{"pk": "a#k1"}]
    assert store.query("fake", "pk != ''", ["pk"], consistency="Strong") == [{"pk": "a#k1"}]


def test_collection_not_found_without_an_outage_is_final() -> None:
    client = _RecoveringAfterRestart([_not_found()])
    store = MilvusStore(client, engine=OLD_SERVER, sleep=lambda s: None)
    with pytest.raises(StoreError) as info:
        store.query("fake", "pk != ''", ["pk"], consistency="Strong")
    assert not isinstance(info.value, StoreUnavailableError)
    assert client.answers == []  # asked once: not retried
