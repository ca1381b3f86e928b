"""Recall on the held-out products, with exact cosine in numpy (no Milvus needed).

Two tasks, both scored as ``lookalike eval`` scores (one hit per product, its best image;
:mod:`evaluation.metrics`):

* **item** ("exact"): each held-out photo altered as a query would be (one of its seeded
  views) must find its own product among the clean photos of every held-out product; vectors
  are CNN + colour, as served;
* **group** ("similar", only with a group key): each held-out clean photo must find *another*
  product of its group (its own product is left out of the ranking); vectors are the CNN part
  alone, which is what a "similar" search compares (the colour block of the query is zeroed).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from evaluation.metrics import recall_at_k

F32 = NDArray[np.float32]
KS = (1, 10)


@dataclass(frozen=True)
class ValSet:
    products: list[str]
    """Product of each held-out image."""
    groups: list[str]
    query_products: list[str]
    """Product of each query: an altered view of a held-out image."""
    clean_colour: F32
    query_colour: F32


def _unit(x: F32) -> F32:
    out: F32 = (x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)).astype(np.float32)
    return out


def _mix(cnn: F32, colour: F32, weight: float) -> F32:
    from embedding.embedder import mix_colour

    return mix_colour(cnn, colour, weight) if weight > 0 else _unit(cnn)


def rank_products(sims: NDArray[np.float32], products: Sequence[str]) -> list[str]:
    """Products by their best image's similarity, best first."""
    seen: set[str] = set()
    out: list[str] = []
    for i in np.argsort(-sims, kind="stable"):
        if products[i] not in seen:
            seen.add(products[i])
            out.append(products[i])
    return out


def item_recall(val: ValSet, clean: F32, query: F32, colour_weight: float) -> dict[str, float]:
    g = _mix(clean, val.clean_colour, colour_weight)
    q = _mix(query, val.query_colour, colour_weight)
    sims = q @ g.T
    rows = [rank_products(sims[i], val.products) for i in range(len(q))]
    return {f"R@{k}": float(np.mean([recall_at_k(r, {p}, k) for r, p in
                                     zip(rows, val.query_products, strict=True)])) for k in KS}


@dataclass(frozen=True)
class Gallery:
    """More products to rank for the group task: the training photos, when the split is by
    product, so a held-out product's group is found among the catalog's other products (as a
    "similar" search finds a style's other colours) and not only among the held-out ones."""

    vectors: F32
    products: list[str]
    groups: list[str]


def group_recall(val: ValSet, clean: F32, more: Gallery | None = None
                 ) -> dict[str, float] | None:
    """None when no held-out product has another product of its group to find."""
    products, groups = list(val.products), list(val.groups)
    vectors = clean
    if more is not None:
        products, groups = products + more.products, groups + more.groups
        vectors = np.concatenate([clean, more.vectors])
    members: dict[str, set[str]] = {}
    for product, group in zip(products, groups, strict=True):
        members.setdefault(group, set()).add(product)
    sims = _unit(clean) @ _unit(vectors).T
    scores: dict[int, list[float]] = {k: [] for k in KS}
    for i, (product, group) in enumerate(zip(val.products, val.groups, strict=True)):
        relevant = members[group] - {product}
        if not relevant:
            continue
        keep = [j for j, p in enumerate(products) if p != product]
        ranked = rank_products(sims[i, keep], [products[j] for j in keep])
        for k in KS:
            scores[k].append(recall_at_k(ranked, relevant, k))
    if not scores[1]:
        return None
    return {f"R@{k}": float(np.mean(v)) for k, v in scores.items()} | {"queries": len(scores[1])}
