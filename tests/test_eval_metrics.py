"""Recall@k and mAP@R on tiny rankings whose answers are computed by hand."""

from __future__ import annotations

import pytest

from evaluation.metrics import (
    QueryResult,
    average_precision_at_r,
    recall_at_k,
    summarise,
)


def test_recall_at_k_is_any_relevant_in_the_first_k() -> None:
    ranked = ["a", "b", "c", "d", "e", "f"]
    assert recall_at_k(ranked, {"a"}, 1) == 1.0
    assert recall_at_k(ranked, {"c"}, 1) == 0.0
    assert recall_at_k(ranked, {"c"}, 3) == 1.0
    assert recall_at_k(ranked, {"c", "x"}, 5) == 1.0
    assert recall_at_k(ranked, {"x"}, 10) == 0.0  # never retrieved
    with pytest.raises(ValueError):
        recall_at_k(ranked, {"a"}, 0)


def test_average_precision_at_r_by_hand() -> None:
    # R = 1: the relevant product must be first
    assert average_precision_at_r(["a", "b"], {"a"}) == 1.0
    assert average_precision_at_r(["b", "a"], {"a"}) == 0.0
    # R = 2, relevant at ranks 1 and 3: only rank 1 is within R -> (1/1) / 2
    assert average_precision_at_r(["a", "x", "b"], {"a", "b"}) == pytest.approx(0.5)
    # R = 3, relevant at ranks 2 and 3 of the first 3: (1/2 + 2/3) / 3
    assert average_precision_at_r(["x", "a", "b", "c"], {"a", "b", "c"}) == pytest.approx(
        (1 / 2 + 2 / 3) / 3
    )
    # all relevant on top
    assert average_precision_at_r(["a", "b", "c", "x"], {"a", "b", "c"}) == 1.0
    with pytest.raises(ValueError):
        average_precision_at_r(["a"], set())


def test_summary_means_overall_and_per_category() -> None:
    results = [
        QueryResult(["a", "b", "c"], {"a"}, "Tops"),           # R@1 1, AP 1
        QueryResult(["b", "a", "c"], {"a"}, "Tops"),           # R@1 0, R@5 1, AP 0
        QueryResult(["x"] * 5 + ["d"], {"d"}, "Shoes"),        # R@1 0, R@5 0, R@10 1, AP 0
        QueryResult(["e", "q", "f"], {"e", "f"}, "Shoes"),     # R@1 1, AP (1/1)/2 = 0.5
    ]
    summary = summarise(results)
    assert summary.n_queries == 4
    assert summary.overall == pytest.approx(
        {"R@1": 0.5, "R@5": 0.75, "R@10": 1.0, "mAP@R": 0.375}
    )
    assert summary.per_category["Tops"] == pytest.approx(
        {"R@1": 0.5, "R@5": 1.0, "R@10": 1.0, "mAP@R": 0.5}
    )
    assert summary.per_category["Shoes"] == pytest.approx(
        {"R@1": 0.5, "R@5": 0.5, "R@10": 1.0, "mAP@R": 0.25}
    )
    assert summary.category_counts == {"Shoes": 2, "Tops": 2}
    with pytest.raises(ValueError):
        summarise([])
