"""The training images and their labels, read from a catalog, and the validation split.

Labels come from the catalog alone: the product (its photos are positives of each other) and,
with a group key, the group (``group_id``: a style across colours; ``category``). The catalog is
read with the gallery reader of ``lookalike eval`` (:func:`evaluation.protocol.load_gallery`),
which accepts what ``publish`` accepts and checks that every image exists; a group key other
than ``category`` is read from the raw line (:func:`ingest.publish.catalog_lines`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from evaluation.protocol import load_gallery
from ingest.publish import catalog_lines


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
    images: list[TrainImage] = []
    for product in products:
        if group_key is None:
            group = product.product_id
        elif group_key == "category":
            group = product.category
        else:
            group = groups.get(product.product_id, "")
            if not group:
                raise TrainingDataError(f"{catalog}: product {product.product_id!r} has no "
                                        f"{group_key!r}")
        images.extend(TrainImage(product.product_id, group, path) for path in product.images)
    return images


def _groups(catalog: Path, key: str | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in catalog_lines(catalog):
        value = line.raw.get(key or "")
        if value is not None and str(line.raw.get("product_id", "")):
            out[str(line.raw["product_id"])] = str(value)
    return out


def split(images: list[TrainImage], val_fraction: float, seed: int,
          by_group: bool) -> Split:
    """Disjoint by product, or by group when ``by_group``: no validation product (group)
    has a photo in training, so the figures say how training carries to new products."""

    def key(image: TrainImage) -> str:
        return image.group if by_group else image.product_id

    units = sorted({key(im) for im in images})
    if len(units) < 4:
        raise TrainingDataError(f"need at least 4 {'groups' if by_group else 'products'} "
                                f"to train and validate, found {len(units)}")
    order = np.random.default_rng(seed).permutation(len(units))
    n_val = min(len(units) - 2, max(2, round(len(units) * val_fraction)))
    val_units = {units[i] for i in order[:n_val]}
    return Split(train=[im for im in images if key(im) not in val_units],
                 val=[im for im in images if key(im) in val_units])
