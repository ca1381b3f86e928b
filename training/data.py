"""The training images and their labels, read from a catalog, and the validation split.

Labels come from the catalog alone: the product (its photos are positives of each other) and,
with a group key, the group (``group_id``: a style across colours; ``category``). The catalog is
read with the gallery reader of ``lookalike eval`` (:func:`evaluation.protocol.load_gallery`),
which checks that every image exists and reads integer product ids and a missing category as
eval does; a group key other than ``category`` is read from the raw line
(:func:`ingest.publish.catalog_lines`): a string, or a number counted by its value (1 and 1.0
are one group). A product without it is a group of its own (with a warning); a key that no
product has is refused as a mistyped name.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from evaluation.protocol import load_gallery, read_id
from ingest.publish import catalog_lines

log = logging.getLogger(__name__)

UNGROUPED_PREFIX = "\x1fproduct:"
"""The group of a product without the group key: its own id, under a prefix no catalog value
carries (a control character), so it never joins a real group of the same name."""


class TrainingDataError(ValueError):
    """The catalog cannot be trained on (unreadable, too small, missing group key)."""


@dataclass(frozen=True)
class TrainImage:
    product_id: str
    group: str
    """The group key's value, or the product id itself without a group key."""
    path: Path


@dataclass(frozen=True)
class Split:
    train: list[TrainImage]
    val: list[TrainImage]


def load_training_images(catalog: Path, group_key: str | None) -> list[TrainImage]:
    """Every image of the catalog with its product and group; raises TrainingDataError."""
    try:
        products = load_gallery(catalog)
    except ValueError as exc:
        raise TrainingDataError(str(exc)) from None
    groups = _groups(catalog, group_key) if group_key not in (None, "category") else {}
    if group_key not in (None, "category") and not groups:
        raise TrainingDataError(f"{catalog}: no product has {group_key!r} to group by")
    images: list[TrainImage] = []
    ungrouped = 0
    for product in products:
        if group_key is None:
            group = product.product_id
        elif group_key == "category":
            group = product.category
        else:
            group = groups.get(product.product_id, "")
            if not group:
                ungrouped += 1
                group = UNGROUPED_PREFIX + product.product_id
        images.extend(TrainImage(product.product_id, group, path) for path in product.images)
    if ungrouped:
        log.warning("%s: %d of %d products have no %r: each of them is a group of its own",
                    catalog, ungrouped, len(products), group_key)
    return images


def _groups(catalog: Path, key: str | None) -> dict[str, str]:
    """Product id -> its group: the key's value where it is a string or a number; a list, an
    object, true/false or NaN is no label (``str()`` of a list would make up a group)."""
    out: dict[str, str] = {}
    for line in catalog_lines(catalog):
        value, product_id = line.raw.get(key or ""), read_id(line.raw.get("product_id"))
        if value is None or product_id is None:
            continue  # load_gallery has checked every product id
        group = _group_label(value)
        if group is None:
            raise TrainingDataError(
                f"{catalog}:{line.line}: product {product_id!r}: {key} must be a string or a "
                f"number to group by, got {json.dumps(value)[:40]}")
        out[product_id] = group
    return out


def _group_label(value: Any) -> str | None:
    """A group key's value as a label: a string as written, a finite number by its value
    (``1`` and ``1.0`` are the group ``"1"``, as ``"1"`` is); None for anything else."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, int):
        return str(value)
    if not math.isfinite(value):
        return None
    return str(int(value)) if value.is_integer() else repr(value)


MIN_UNITS = 4
"""Products (groups with ``by_group``) a split needs: two to validate on, two to train."""


def split(images: list[TrainImage], val_fraction: float, seed: int, by_group: bool,
          unreadable: Sequence[tuple[TrainImage, str]] = ()) -> Split:
    """Disjoint by product, or by group when ``by_group``: no validation product (group)
    has a photo in training, so the figures say how training carries to new products.
    ``images`` are the readable ones, ``unreadable`` the rest with their reasons: a product
    whose every photo failed to decode is no product to train or validate on."""

    def key(image: TrainImage) -> str:
        return image.group if by_group else image.product_id

    units = sorted({key(im) for im in images})
    if len(units) < MIN_UNITS:
        what = "groups" if by_group else "products"
        found = f"need at least {MIN_UNITS} {what} to train and validate, found {len(units)}"
        lost = {key(im) for im, _ in unreadable} - set(units)
        if lost:
            shown = "; ".join(f"{im.path}: {reason}" for im, reason in unreadable[:3])
            more = " ..." if len(unreadable) > 3 else ""
            found += (f" with a readable photo: {len(lost)} other {what} had only photos that "
                      f"could not be read ({shown}{more})")
        raise TrainingDataError(found)
    order = np.random.default_rng(seed).permutation(len(units))
    n_val = min(len(units) - 2, max(2, round(len(units) * val_fraction)))
    val_units = {units[i] for i in order[:n_val]}
    return Split(train=[im for im in images if key(im) not in val_units],
                 val=[im for im in images if key(im) in val_units])
