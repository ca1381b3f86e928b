"""Same-item scores: does price comparison list exactly the listings of the query's item?

Micro-averaged over listings (every returned and every relevant listing counts once):

* ``precision``: returned listings that show the query's item / all returned listings;
* ``recall``: relevant listings returned / all relevant listings;
* ``false_match_rate``: share of queries with at least one wrong listing (what a shopper
  notices: one other product in a price list is enough to distrust it);
* ``all_found_rate``: share of queries whose every relevant listing was returned.

A query that returns nothing has precision undefined for itself, and adds nothing to the
micro-average's denominator; it loses recall.
"""

from __future__ import annotations

from collections.abc import Set
from dataclasses import dataclass


@dataclass
class SameItemCounts:
    returned: int = 0
    correct: int = 0
    relevant: int = 0
    queries: int = 0
    with_false_match: int = 0
    all_found: int = 0

    def add(self, found: Set[str], relevant: Set[str]) -> None:
        if not relevant:
            raise ValueError("a query needs at least one relevant listing")
        hits = len(found & relevant)
        self.returned += len(found)
        self.correct += hits
        self.relevant += len(relevant)
        self.queries += 1
        self.with_false_match += bool(found - relevant)
        self.all_found += hits == len(relevant)

    def summary(self) -> dict[str, float]:
        if not self.queries:
            raise ValueError("no queries to summarise")
        return {
            "precision": self.correct / self.returned if self.returned else 1.0,
            "recall": self.correct / self.relevant,
            "false_match_rate": self.with_false_match / self.queries,
            "all_found_rate": self.all_found / self.queries,
        }
