"""Planning: turn a batch of events plus the stored product states into writes and outcomes.

Every event ends as exactly one :class:`Outcome`: applied, stale (its version is not newer
than what is stored or what an earlier event in the batch set) or dead-lettered with a reason.
Events of one product are folded in offset order, so a batch holding ``upserted, price_changed,
delisted`` for a product writes only the net effect.

A product's state row is the commit point of its version (the sink writes image rows, then
states, then deletes). So image rows above the stored state's version are leftovers of a
write that did not finish, and rows an upsert dropped may outlive a crash after its state was
written. A batch that writes no image rows for a product repairs it (:class:`Repair`) when
that can matter: an upsert of it was not applied (its leftovers go), or an upsert or delist
whose version equals the stored one was redelivered (its delete is done again).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from enum import Enum

from schema.errors import ItemFailure, Reason
from schema.events import (
    ProductDelisted,
    ProductEvent,
    ProductPriceChanged,
    ProductUpserted,
)
from schema.records import ImageRecord, ProductState, image_pk


@dataclass(frozen=True)
class Repair:
    """What the sink deletes of a product the plan writes no image rows for (its stored state
    stays at ``version``, or moves by a price change, which keeps rows' versions): rows above
    ``version`` (leftovers of an unfinished write: the state was not reached), and, when
    ``keep`` is set, rows below ``version`` whose pks are not in ``keep`` (the delete of the
    redelivered upsert or delist that wrote the state at ``version``; rows at ``version`` are
    that write's own)."""

    version: int
    """The stored state's version (-1: none stored, so every row is a leftover)."""
    keep: frozenset[str] | None = None
    """Pks the redelivered upsert lists (empty for a delist); None: leftovers only."""


@dataclass
class WritePlan:
    """What one batch changes (the planner's output, the sink's input). Build it by mutating
    the empty default."""

    upserts: list[ImageRecord] = field(default_factory=list)
    prune: dict[str, set[str]] = field(default_factory=dict)
    """product_id -> image pks to KEEP (every image its upsert lists, embedded now or not:
    a failed image's stored row stays); the product's other image rows are deleted."""
    delete_products: list[str] = field(default_factory=list)
    """Products whose image rows are all deleted."""
    price_updates: dict[str, tuple[float, str, int]] = field(default_factory=dict)
    """product_id -> (price, currency, version): rewrites stored rows, keeps their vectors."""
    states: list[ProductState] = field(default_factory=list)
    """Written after the image and price writes, before any delete (the commit point)."""
    repairs: dict[str, Repair] = field(default_factory=dict)
    """product_id -> rows to delete of a product the plan writes no image rows for."""

    def is_empty(self) -> bool:
        return not (
            self.upserts or self.prune or self.delete_products or self.price_updates
            or self.states or self.repairs
        )


class Status(str, Enum):
    APPLIED = "applied"
    STALE = "stale"
    DEAD_LETTERED = "dead_lettered"


@dataclass(frozen=True)
class Outcome:
    """What became of one event; stale and dead-lettered outcomes say why."""

    status: Status
    failure: ItemFailure | None = None

    @classmethod
    def dead(cls, reason: Reason, detail: str) -> Outcome:
        return cls(Status.DEAD_LETTERED, ItemFailure(reason, detail))


@dataclass
class EventItem:
    """One consumed record, parsed (``event``) or not (``error``), and what became of it."""

    index: int
    event: ProductEvent | None
    error: ItemFailure | None
    outcome: Outcome | None = None


@dataclass
class EmbeddedProduct:
    """The one upsert per product whose images were fetched and embedded in this batch."""

    event: ProductUpserted
    vectors: dict[int, list[float]] = field(default_factory=dict)
    failures: dict[int, ItemFailure] = field(default_factory=dict)


def select_upserts(items: list[EventItem]) -> dict[str, ProductUpserted]:
    """Per product, the (first) upsert with the highest version: the only one worth
    embedding, since any other upsert in the batch is either stale or overwritten by it."""
    chosen: dict[str, ProductUpserted] = {}
    for item in items:
        ev = item.event
        if isinstance(ev, ProductUpserted):
            best = chosen.get(ev.product_id)
            if best is None or ev.resolved_version > best.resolved_version:
                chosen[ev.product_id] = ev
    return chosen


@dataclass
class _Fold:
    version: int
    listed: bool
    action: str = ""  # "", "upsert", "superseded", "price", "delete"
    upsert: ProductUpserted | None = None
    price: tuple[float, str] | None = None
    touched: bool = False


def _image_failures(failures: dict[int, ItemFailure]) -> str:
    """An event's image failures in one detail: ``image 0: reason: detail; ...``, images that
    failed alike named together (``images 0, 1, 2: path_not_allowed: ...``), so a detail's
    hint is written once, not once per image until a cap cuts it."""
    alike: dict[ItemFailure, list[int]] = {}
    for index, failure in sorted(failures.items()):
        alike.setdefault(failure, []).append(index)
    return "; ".join(
        f"image{'s' if len(indexes) > 1 else ''} {', '.join(map(str, indexes))}: "
        f"{failure.reason.value}: {failure.detail}" for failure, indexes in alike.items())


def _apply(fold: _Fold, ev: ProductEvent, embedded: EmbeddedProduct | None) -> Outcome:
    version = ev.resolved_version
    if version <= fold.version:
        return Outcome(
            Status.STALE, ItemFailure(Reason.STALE_VERSION, f"version {version} <= {fold.version}")
        )
    if isinstance(ev, ProductUpserted):
        if embedded is None or embedded.event is not ev:
            fold.action, fold.upsert, fold.price = "superseded", None, None
        elif not embedded.vectors:
            return Outcome.dead(Reason.ALL_IMAGES_FAILED, _image_failures(embedded.failures))
        else:
            fold.action, fold.upsert, fold.price = "upsert", ev, None
        fold.listed = True
    elif isinstance(ev, ProductPriceChanged):
        if not fold.listed:
            return Outcome.dead(Reason.PRODUCT_NOT_LISTED, f"{ev.product_id} is not listed")
        fold.price = (float(ev.price), ev.currency)
        if fold.action == "":
            fold.action = "price"
    elif isinstance(ev, ProductDelisted):
        fold.action, fold.upsert, fold.price, fold.listed = "delete", None, None, False
    fold.version = version
    fold.touched = True
    return Outcome(Status.APPLIED)


def plan_writes(
    items: list[EventItem],
    states: dict[str, ProductState],
    embedded: dict[str, EmbeddedProduct],
    model_version: str,
    now_ms: int,
) -> WritePlan:
    """Fold each product's events over its stored state; set every item's outcome."""
    by_product: dict[str, list[EventItem]] = defaultdict(list)
    for item in items:
        if item.event is None:
            assert item.error is not None
            item.outcome = Outcome(Status.DEAD_LETTERED, item.error)
        else:
            by_product[item.event.product_id].append(item)

    plan = WritePlan()
    for product_id, product_items in by_product.items():
        stored = states.get(product_id)
        fold = _Fold(
            version=stored.version if stored else -1, listed=bool(stored and stored.listed)
        )
        try:
            for item in product_items:
                assert item.event is not None
                item.outcome = _apply(fold, item.event, embedded.get(product_id))
            if fold.action == "superseded":
                _dead_letter_superseded(product_items)
            repair = _repair(product_items, stored, fold)
            if fold.touched and fold.action != "superseded":
                _emit(plan, product_id, fold, embedded.get(product_id), model_version, now_ms)
            if repair is not None:
                plan.repairs[product_id] = repair
        except Exception as exc:  # a bug or an unforeseen value: this product's events only
            for item in product_items:
                item.outcome = Outcome.dead(
                    Reason.INVALID_EVENT, f"cannot be planned: {type(exc).__name__}: {exc}"[:300]
                )
            if any(isinstance(i.event, ProductUpserted) for i in product_items):
                plan.repairs[product_id] = Repair(stored.version if stored else -1)
    return plan


def _repair(items: list[EventItem], stored: ProductState | None, fold: _Fold) -> Repair | None:
    """What to delete of a product whose plan writes no image rows (see :class:`Repair`):
    None when it does (its prune or delete covers everything) or nothing calls for it."""
    if fold.action in ("upsert", "delete"):
        return None
    version = stored.version if stored else -1
    not_applied = any(
        isinstance(i.event, ProductUpserted) and i.outcome is not None
        and i.outcome.status is Status.DEAD_LETTERED
        for i in items
    )
    keep: frozenset[str] | None = None
    if stored is not None:
        for item in items:
            ev = item.event
            if ev is None or ev.resolved_version != stored.version:
                continue
            if isinstance(ev, ProductUpserted) and stored.listed:
                keep = frozenset(image_pk(ev.product_id, image.key) for image in ev.images)
            elif isinstance(ev, ProductDelisted) and not stored.listed:
                keep = frozenset()
            break
    if keep is None and not not_applied:
        return None
    return Repair(version, keep)


def _dead_letter_superseded(items: list[EventItem]) -> None:
    """The batch's newest upsert of this product failed, so the older upserts it was to
    replace (and what was applied on top of them) were never written: keep them all."""
    for item in items:
        if item.outcome is not None and item.outcome.status is Status.APPLIED:
            item.outcome = Outcome.dead(
                Reason.SUPERSEDED_UPSERT_FAILED,
                "a newer upsert of this product in the same batch failed; nothing was written",
            )


def _emit(
    plan: WritePlan,
    product_id: str,
    fold: _Fold,
    embedded: EmbeddedProduct | None,
    model_version: str,
    now_ms: int,
) -> None:
    """Add the product's writes to ``plan``; everything that can raise runs before the plan
    is touched, so a product that cannot be planned leaves no partial writes behind."""
    state = ProductState(
        product_id=product_id, version=fold.version, listed=fold.listed, updated_at_ms=now_ms
    )
    if fold.action == "upsert":
        assert fold.upsert is not None and embedded is not None
        event = fold.upsert
        if fold.price is not None or event.resolved_version != fold.version:
            price, currency = fold.price or (float(event.price), event.currency)
            event = event.model_copy(
                update={"price": price, "currency": currency, "version": fold.version}
            )
        records = [
            ImageRecord.from_event(event, index, vector, model_version, now_ms)
            for index, vector in sorted(embedded.vectors.items())
        ]
        keep = {image_pk(product_id, image.key) for image in event.images}
        plan.upserts.extend(records)
        plan.prune[product_id] = keep
    elif fold.action == "price":
        assert fold.price is not None
        plan.price_updates[product_id] = (fold.price[0], fold.price[1], fold.version)
    elif fold.action == "delete":
        plan.delete_products.append(product_id)
    plan.states.append(state)
