"""How ``lookalike eval`` embeds its photos: through a cache that may fail to be written
without failing the run."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import evaluation.run
from evaluation.cache import EmbeddingCache
from tests.fakes import TinyEmbedder
from tests.test_eval import _run, write_protocol


def _counts(report: Any) -> tuple[int, int, int]:
    return report.embed.embedded, report.embed.cached, report.embed.repeated


def _read_only(path: Path) -> EmbeddingCache:
    """The cache at ``path`` as a read-only file opens it (chmod 0444 does not stop root)."""
    cache = EmbeddingCache(path)
    cache._db.close()
    cache._db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    return cache


class _FillsUp(sqlite3.Connection):
    """A connection whose disk is full after its first write."""

    writes = 0

    def executemany(self, sql: str, rows: Any, /) -> sqlite3.Cursor:
        _FillsUp.writes += 1
        if _FillsUp.writes > 1:
            raise sqlite3.OperationalError("database or disk is full")
        return super().executemany(sql, rows)


@pytest.mark.parametrize("failure", ["read-only", "disk full"])
def test_a_cache_that_cannot_be_written_is_a_warning_and_the_run_goes_on(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
        failure: str) -> None:
    """A read-only cache missing some photos, or a disk filling up mid-run, was a traceback
    (exit 1) and the work lost. One warning; the run goes on with the vectors it has, and
    its figures are those of a run without a cache."""
    monkeypatch.setattr(evaluation.run, "CHUNK", 2)
    write_protocol(tmp_path)
    path = tmp_path / "c.sqlite"
    if failure == "read-only":
        partial = EmbeddingCache(path)
        partial.put_many(TinyEmbedder.model_version, [("not-a-photo", np.ones(48, np.float32))])
        partial.close()
        cache = _read_only(path)
    else:
        cache = EmbeddingCache(path)
        cache._db.close()
        _FillsUp.writes = 0
        cache._db = sqlite3.connect(path, factory=_FillsUp)
    with caplog.at_level("WARNING"):
        report = _run(tmp_path, TinyEmbedder(), cache, "unwritable")
    warned = [r.getMessage() for r in caplog.records if "cache not written" in r.getMessage()]
    reason = ("attempt to write a readonly database" if failure == "read-only"
              else "database or disk is full")
    assert warned == [f"cache not written: {path}: {reason}; the run goes on without saving"]
    assert cache.unwritable == reason
    baseline = _run(tmp_path, TinyEmbedder(), None, "baseline")
    assert report.summary.overall == baseline.summary.overall
    assert [r.ranked for r in report.results] == [r.ranked for r in baseline.results]
    assert _counts(report) == _counts(baseline)
    cache.close()
    saved = EmbeddingCache(path).get_many(TinyEmbedder.model_version, ["not-a-photo"])
    assert len(saved) == (1 if failure == "read-only" else 0)
