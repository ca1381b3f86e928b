"""Ranking metrics over products (one hit per product, best first).

* Recall@k: 1 when any relevant product is among the first ``k``, else 0 (the usual
  instance-retrieval definition, not the fraction of relevant items found).
* AP@R (Musgrave et al., "A Metric Learning Reality Check", 2020): with ``R`` relevant
  products, ``AP@R = (1/R) * sum_{i<=R} P@i * rel_i``: average precision cut at rank R, so
  it rewards putting *all* relevant products first, and a ranking with every relevant product
  on top scores 1. mAP@R is its mean over queries.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

KS = (1, 5, 10)


def recall_at_k(ranked: Sequence[str], relevant: set[str], k: int) -> float:
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    return 1.0 if any(pid in relevant for pid in ranked[:k]) else 0.0


def average_precision_at_r(ranked: Sequence[str], relevant: set[str]) -> float:
    if not relevant:
        raise ValueError("a query needs at least one relevant product")
    r = len(relevant)
    hits = 0
    total = 0.0
    for i, pid in enumerate(ranked[:r], 1):
        if pid in relevant:
            hits += 1
            total += hits / i
    return total / r


@dataclass
class QueryResult:
    ranked: list[str]
    relevant: set[str]
    category: str
    images: tuple[str, ...] = ()
    """The query's photos (for :meth:`detail`)."""
    similarities: tuple[float, ...] = ()
    """The search's score of each ranked product (for :meth:`detail`)."""
    inliers: tuple[int | None, ...] = ()
    """Each ranked product's geometric inliers, where the search checked them."""

    def scores(self) -> dict[str, float]:
        out = {f"R@{k}": recall_at_k(self.ranked, self.relevant, k) for k in KS}
        out["mAP@R"] = average_precision_at_r(self.ranked, self.relevant)
        return out

    def detail(self) -> dict[str, Any]:
        """The query's outcome as one JSON object (``lookalike eval --details``): its photos,
        relevant products, the rank (from 1) of the first relevant one found (None when
        none was), its scores, and what it ranked, with the search's score and inliers."""
        first = next((n for n, pid in enumerate(self.ranked, 1) if pid in self.relevant), None)
        ranked = [{"product_id": pid, "relevant": pid in self.relevant,
                   **({"score": round(self.similarities[n], 4)}
                      if n < len(self.similarities) else {}),
                   **({"inliers": self.inliers[n]}
                      if n < len(self.inliers) and self.inliers[n] is not None else {})}
                  for n, pid in enumerate(self.ranked)]
        return {"images": list(self.images), "relevant": sorted(self.relevant),
                "category": self.category, "first_relevant_rank": first,
                **{key: round(value, 4) for key, value in self.scores().items()},
                "ranked": ranked}


@dataclass
class Summary:
    """Means over queries, overall and per query category."""

    overall: dict[str, float]
    n_queries: int
    per_category: dict[str, dict[str, float]] = field(default_factory=dict)
    category_counts: dict[str, int] = field(default_factory=dict)


def _mean(rows: list[dict[str, float]]) -> dict[str, float]:
    keys = [f"R@{k}" for k in KS] + ["mAP@R"]
    return {key: sum(r[key] for r in rows) / len(rows) for key in keys}


def summarise(results: Iterable[QueryResult]) -> Summary:
    scored = [(r.category, r.scores()) for r in results]
    if not scored:
        raise ValueError("no queries to summarise")
    by_category: dict[str, list[dict[str, float]]] = {}
    for category, scores in scored:
        by_category.setdefault(category, []).append(scores)
    return Summary(
        overall=_mean([s for _, s in scored]),
        n_queries=len(scored),
        per_category={c: _mean(rows) for c, rows in sorted(by_category.items())},
        category_counts={c: len(rows) for c, rows in sorted(by_category.items())},
    )
