"""The fold from events + stored state to writes and outcomes (no broker, no Milvus)."""

from __future__ import annotations

from typing import Any

from ingest.plan import (
    EmbeddedProduct,
    EventItem,
    Repair,
    Status,
    plan_writes,
    select_upserts,
)
from schema.errors import ItemFailure, Reason
from schema.events import ProductDelisted, ProductEvent, ProductPriceChanged, ProductUpserted
from schema.records import ProductState, image_pk


def up(pid: str, version: int, price: str = "10", images: int = 2) -> ProductUpserted:
    return ProductUpserted(
        product_id=pid, version=version, title=f"t{pid}", category="A/B", price=price,
        currency="USD", images=[f"img/{pid}-{version}-{i}.jpg" for i in range(images)],
        seller_id="s",
    )


def price(pid: str, version: int, value: str) -> ProductPriceChanged:
    return ProductPriceChanged(product_id=pid, version=version, price=value, currency="EUR")


def gone(pid: str, version: int) -> ProductDelisted:
    return ProductDelisted(product_id=pid, version=version)


def items(*events: ProductEvent) -> list[EventItem]:
    return [EventItem(i, e, None) for i, e in enumerate(events)]


def embed_all(
    batch: list[EventItem], fail: frozenset[tuple[str, int]] = frozenset()
) -> dict[str, EmbeddedProduct]:
    out = {}
    for pid, event in select_upserts(batch).items():
        emb = EmbeddedProduct(event)
        for i in range(len(event.images)):
            if (pid, i) in fail:
                emb.failures[i] = ItemFailure(Reason.NOT_FOUND, "gone")
            else:
                emb.vectors[i] = [1.0, float(i)]
        out[pid] = emb
    return out


def state(pid: str, version: int, listed: bool = True) -> dict[str, ProductState]:
    return {pid: ProductState(product_id=pid, version=version, listed=listed, updated_at_ms=0)}


def statuses(batch: list[EventItem]) -> list[str]:
    return [i.outcome.status.value if i.outcome else "?" for i in batch]


def test_new_product_writes_rows_prune_and_state() -> None:
    batch = items(up("p", 1))
    plan = plan_writes(batch, {}, embed_all(batch), "m", 5)
    assert statuses(batch) == ["applied"]
    assert len(plan.upserts) == 2 and plan.prune["p"] == {r.pk for r in plan.upserts}
    assert plan.states[0].version == 1 and plan.states[0].listed


def test_stale_and_replayed_versions_are_ignored() -> None:
    batch = items(up("p", 3), up("p", 2))
    plan = plan_writes(batch, state("p", 3), embed_all(batch), "m", 5)
    assert statuses(batch) == ["stale", "stale"]
    assert not plan.upserts and not plan.states


def test_duplicate_event_in_one_batch_applies_once() -> None:
    batch = items(up("p", 4), up("p", 4))
    plan = plan_writes(batch, {}, embed_all(batch), "m", 5)
    assert statuses(batch) == ["applied", "stale"]
    assert len(plan.upserts) == 2


def test_net_effect_upsert_then_price_keeps_new_price_and_version() -> None:
    batch = items(up("p", 1), price("p", 2, "7.50"))
    plan = plan_writes(batch, {}, embed_all(batch), "m", 5)
    assert statuses(batch) == ["applied", "applied"]
    assert {(r.price, r.currency, r.version) for r in plan.upserts} == {(7.5, "EUR", 2)}
    assert not plan.price_updates


def test_price_change_alone_updates_metadata_only() -> None:
    batch = items(price("p", 9, "3"))
    plan = plan_writes(batch, state("p", 8), {}, "m", 5)
    assert plan.price_updates == {"p": (3.0, "EUR", 9)} and not plan.upserts


def test_price_change_of_unknown_or_delisted_product_is_dead_lettered() -> None:
    batch = items(price("p", 2, "3"), price("q", 2, "3"))
    plan_writes(batch, state("q", 1, listed=False), {}, "m", 5)
    assert statuses(batch) == ["dead_lettered", "dead_lettered"]
    assert batch[0].outcome and batch[0].outcome.failure
    assert batch[0].outcome.failure.reason == "product_not_listed"


def test_delist_then_older_upsert_cannot_resurrect() -> None:
    batch = items(gone("p", 5), up("p", 4))
    plan = plan_writes(batch, state("p", 3), embed_all(batch), "m", 5)
    assert statuses(batch) == ["applied", "stale"]
    assert plan.delete_products == ["p"] and not plan.upserts
    assert plan.states[0].listed is False and plan.states[0].version == 5


def test_older_upsert_superseded_by_newer_in_same_batch() -> None:
    batch = items(up("p", 1), price("p", 2, "1"), up("p", 3, images=1))
    plan = plan_writes(batch, {}, embed_all(batch), "m", 5)
    assert statuses(batch) == ["applied", "applied", "applied"]
    assert len(plan.upserts) == 1 and plan.upserts[0].version == 3
    assert plan.upserts[0].price == 10.0


def test_partial_image_failure_indexes_good_images() -> None:
    batch = items(up("p", 1))
    plan = plan_writes(batch, {}, embed_all(batch, {("p", 0)}), "m", 5)
    assert statuses(batch) == ["applied"]
    assert [r.image_key for r in plan.upserts] == [batch[0].event.images[1].key]  # type: ignore[union-attr]


def test_all_images_failing_dead_letters_and_writes_nothing() -> None:
    batch = items(up("p", 1, images=1))
    plan = plan_writes(batch, {}, embed_all(batch, {("p", 0)}), "m", 5)
    assert statuses(batch) == ["dead_lettered"]
    assert batch[0].outcome and batch[0].outcome.failure
    assert batch[0].outcome.failure.reason == "all_images_failed"
    assert "not_found" in batch[0].outcome.failure.detail
    assert not plan.upserts and not plan.states


def test_failed_newest_upsert_keeps_the_older_ones_in_the_dead_letter_topic() -> None:
    batch = items(up("p", 1), up("p", 2, images=1))
    plan = plan_writes(batch, {}, embed_all(batch, {("p", 0)}), "m", 5)
    assert statuses(batch) == ["dead_lettered", "dead_lettered"]
    assert not plan.upserts and not plan.states


def test_invalid_items_are_dead_lettered_with_their_reason() -> None:

    batch = [EventItem(0, None, ItemFailure(Reason.INVALID_EVENT, "price: bad"))]
    plan_writes(batch, {}, {}, "m", 5)
    assert batch[0].outcome and batch[0].outcome.status is Status.DEAD_LETTERED
    assert batch[0].outcome.failure and batch[0].outcome.failure.reason == "invalid_event"


def test_a_product_that_cannot_be_planned_fails_alone(monkeypatch: Any) -> None:
    import schema.records

    real = schema.records.ImageRecord.from_event

    def from_event(event: ProductUpserted, *args: Any) -> Any:
        if event.product_id == "bad":
            raise ValueError("a value no validator foresaw")
        return real(event, *args)

    monkeypatch.setattr(schema.records.ImageRecord, "from_event", staticmethod(from_event))
    batch = items(up("ok", 1), up("bad", 1), price("bad", 2, "3"))
    plan = plan_writes(batch, {}, embed_all(batch), "m", 5)
    assert statuses(batch) == ["applied", "dead_lettered", "dead_lettered"]
    assert batch[1].outcome and batch[1].outcome.failure
    assert batch[1].outcome.failure.reason == "invalid_event"
    assert {r.product_id for r in plan.upserts} == {"ok"}
    assert [s.product_id for s in plan.states] == ["ok"] and "bad" not in plan.prune


def pks_of(event: ProductUpserted) -> frozenset[str]:
    return frozenset(image_pk(event.product_id, image.key) for image in event.images)


def test_prune_keeps_every_listed_image_also_a_failed_one() -> None:
    batch = items(up("p", 2, images=3))
    plan = plan_writes(batch, state("p", 1), embed_all(batch, {("p", 1)}), "m", 5)
    assert statuses(batch) == ["applied"] and len(plan.upserts) == 2
    assert plan.prune["p"] == pks_of(up("p", 2, images=3))  # image 1's stored row stays
    assert not plan.repairs


def test_an_upsert_not_applied_repairs_rows_above_the_stored_version() -> None:
    batch = items(up("p", 2, images=1), up("q", 1, images=1), up("r", 2), up("r", 3, images=1))
    fail = frozenset({("p", 0), ("q", 0), ("r", 0)})
    plan = plan_writes(batch, state("p", 1) | state("r", 1), embed_all(batch, fail), "m", 5)
    assert statuses(batch) == ["dead_lettered"] * 4
    assert plan.repairs == {"p": Repair(1), "q": Repair(-1), "r": Repair(1)}
    assert not plan.states and not plan.prune


def test_a_price_change_applied_beside_a_failed_upsert_repairs_from_the_stored_version() -> None:
    batch = items(price("p", 2, "3"), up("p", 3, images=1))
    plan = plan_writes(batch, state("p", 1), embed_all(batch, {("p", 0)}), "m", 5)
    assert statuses(batch) == ["applied", "dead_lettered"]
    assert plan.price_updates == {"p": (3.0, "EUR", 2)} and plan.repairs == {"p": Repair(1)}


def test_an_equal_version_upsert_or_delist_repeats_its_delete() -> None:
    batch = items(up("p", 3), up("p", 2), gone("q", 4), up("r", 5), gone("s", 6), up("t", 1))
    states = (state("p", 3) | state("q", 4, listed=False) | state("r", 5, listed=False)
              | state("s", 6) | state("t", 2))
    plan = plan_writes(batch, states, {}, "m", 5)
    assert statuses(batch) == ["stale"] * 6
    assert plan.repairs == {"p": Repair(3, pks_of(up("p", 3))), "q": Repair(4, frozenset())}
    assert not plan.states  # r, s: the stored state is not what the event would write


def test_an_applied_upsert_or_delist_needs_no_repair() -> None:
    batch = items(up("p", 2, images=1), up("p", 3), gone("q", 2), up("q", 3, images=1))
    fail = frozenset({("p", 0), ("q", 0)})
    plan = plan_writes(batch, state("p", 1) | state("q", 1), embed_all(batch, fail), "m", 5)
    assert statuses(batch) == ["applied", "applied", "applied", "dead_lettered"]
    assert "p" in plan.prune and plan.delete_products == ["q"] and not plan.repairs
