"""How ``lookalike eval`` embeds its photos: chunk by chunk (a photo's bytes are not kept),
each content once in the run, counted the same whatever the cache holds, and through a cache
that may fail to be written without failing the run."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import evaluation.run
from embedding.decode import decode_image
from evaluation.cache import EmbeddingCache
from evaluation.run import EmbedStats, embed_files
from tests.fakes import TinyEmbedder
from tests.test_eval import _append, _photo, _run, write_protocol


def _counts(report: Any) -> tuple[int, int, int]:
    return report.embed.embedded, report.embed.cached, report.embed.repeated


def test_photos_are_read_once_embedded_as_they_come_and_the_vectors_are_the_same(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every photo's bytes were kept until the last was embedded: peak memory grew with the
    gallery's size in bytes. Now each photo is read once, and the first chunk is embedded
    before the last photo is read; the vectors are each photo's own, in order."""
    monkeypatch.setattr(evaluation.run, "CHUNK", 4)
    monkeypatch.setattr(evaluation.run, "READ_CHUNK", 3)
    paths = []
    for n in range(14):
        paths.append(tmp_path / f"{n}.png")
        _photo(paths[-1], (10 + 15 * n, 200 - 10 * n, 40), shift=n % 5)
    paths += [paths[2], paths[0]]  # listed again: read again, embedded once
    events: list[str] = []
    read = evaluation.run._read

    def reading(path: Path) -> bytes:
        events.append(f"read {path.name}")
        return read(path)

    class Recording(TinyEmbedder):
        def embed(self, images: Any) -> np.ndarray:
            events.append(f"embed {len(images)}")
            return super().embed(images)

    monkeypatch.setattr(evaluation.run, "_read", reading)
    embedder = Recording()
    stats = EmbedStats()
    out = embed_files(paths, embedder, None, max_pixels=10_000_000, stats=stats)
    assert [e for e in events if e.startswith("read")] == [f"read {p.name}" for p in paths]
    assert events.index("embed 4") < events.index("read 13.png")
    assert [e for e in events if e.startswith("embed")] == ["embed 4"] * 3 + ["embed 2"]
    own = np.stack([TinyEmbedder().embed([decode_image(p.read_bytes(), 10_000_000,
                                                       min_size=16)])[0] for p in paths])
    assert np.array_equal(out, own.astype(np.float32))
    assert (stats.embedded, stats.cached, stats.repeated, stats.images) == (14, 0, 2, 16)


def test_image_counts_do_not_depend_on_the_cache(tmp_path: Path) -> None:
    """With photos shared between products and a query photo that is a gallery photo, a fresh
    cache said "embedded 7, repeated 2" and a warm one "cached 10, repeated 0"; the query
    photo counted as a cache hit on a fresh cache. ``repeated`` is content seen earlier in the
    run, ``cached`` and ``embedded`` count distinct photos, whatever the cache holds."""
    g, q = write_protocol(tmp_path)
    lines = [json.loads(line) for line in g.read_text().splitlines()]
    lines[1]["images"] = ["g/red.png"]  # green's listing shows red's photo, as does ...
    lines.append({"product_id": "p-red-again", "images": ["g/red.png"], "category": "Warm"})
    g.write_text("".join(json.dumps(line) + "\n" for line in lines))
    (tmp_path / "q" / "copy-of-red.png").write_bytes((tmp_path / "g" / "red.png").read_bytes())
    _append(q, {"image": "q/copy-of-red.png", "relevant": ["p-red"]})
    # gallery: 7 listings of 5 distinct photos (2 repeated); queries: 7 photos, one the
    # gallery's red (repeated): 11 distinct photos
    fresh = _run(tmp_path, TinyEmbedder(), EmbeddingCache(tmp_path / "c.sqlite"), "fresh",
                 cutout_queries=False, window_queries=False, light_queries=False)
    assert _counts(fresh) == (11, 0, 3)
    warm = _run(tmp_path, TinyEmbedder(), EmbeddingCache(tmp_path / "c.sqlite"), "warm",
                cutout_queries=False, window_queries=False, light_queries=False)
    assert _counts(warm) == (0, 11, 3)
    none = _run(tmp_path, TinyEmbedder(), None, "none", cutout_queries=False,
                window_queries=False, light_queries=False)
    assert _counts(none) == (11, 0, 3)
    assert fresh.summary.overall == warm.summary.overall == none.summary.overall
    assert fresh.to_json()["repeated_images"] == warm.to_json()["repeated_images"] == 3


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
