"""What a new user's walkthrough of the README ran into: local photos without image roots,
messages cut mid-hint, options missing from search and compare-prices, a search's order
without its reason, and lines printed twice. Fast: fakes, no broker, no model."""

from __future__ import annotations

import json
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from ingest.fetch import ImageFetcher
from ingest.plan import _image_failures
from ingest.reindex import ImageProblem, _failures_refused
from ingest.stages import BatchStats
from lookalike import commands
from lookalike.cli import _overrides, build_parser, main
from lookalike.settings import Settings
from schema.errors import ItemFailure, Reason, clipped
from search.api import RERANK_MIN_INLIERS, Hit
from store.lease import LeaseHeldError
from tests.pipeline_support import upsert_payload, write_image
from tests.runner_fakes import FakeSource, FlakyStore, fake_runner, record

NO_ROOT = ("local image paths are refused: no image root is set (--image-root DIR or "
           "LOOKALIKE_IMAGES__ROOTS)")


def test_a_detail_is_clipped_at_a_part_or_a_word_never_mid_hint() -> None:
    """The dead-letter warnings cut their detail at 300 characters, mid-word:
    ``... e.g. '["/data/images"]'); image 1: ... read fr``."""
    parts = "; ".join(f"image {i}: path_not_allowed: {NO_ROOT}" for i in range(4))
    cut = clipped(parts, 300)
    assert len(cut) <= 300 and cut.endswith(f"LOOKALIKE_IMAGES__ROOTS) … (+"
                                            f"{len(parts) - cut.index(' …')} characters)")
    assert clipped("short", 300) == "short"
    words = clipped("word " * 100, 60)
    assert len(words) <= 60 and words.startswith("word word") and " wo …" not in words
    assert len(clipped("x" * 500, 100)) <= 100  # no space at all: cut where it must


def test_images_that_failed_alike_are_named_once_in_the_dead_letter() -> None:
    refused = ItemFailure(Reason.PATH_NOT_ALLOWED, NO_ROOT)
    gone = ItemFailure(Reason.NOT_FOUND, "/x/b.png not found under the image roots")
    assert _image_failures({0: refused, 1: refused, 2: gone, 3: refused}) == (
        f"images 0, 1, 3: path_not_allowed: {NO_ROOT}; "
        "image 2: not_found: /x/b.png not found under the image roots")


def _local_path_events(tmp_path: Path) -> list[Any]:
    photos = [str(write_image(tmp_path / f"p{i}.png", seed=i)) for i in range(3)]
    payloads = [upsert_payload("one", 1, photos[:1]), upsert_payload("two", 1, photos[1:]),
                upsert_payload("three", 1, photos[:1])]
    return [record(i, json.dumps(p).encode(), str(p["product_id"]).encode())
            for i, p in enumerate(payloads)]


def test_a_run_that_dead_lettered_local_paths_ends_with_one_line_saying_how(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """``publish cat.jsonl && ingest --until-caught-up`` without image roots: every event
    dead-lettered, exit 0, and the only hint was in warnings cut off mid-hint. The run
    still goes on (a hostile event may name any path), but it ends with one line: how
    many, why, and what to do; each warning keeps its hint whole."""
    runner, producer = None, None

    def build_runner(*_args: Any, **_kwargs: Any) -> Any:
        nonlocal runner, producer
        runner, producer = fake_runner(ImageFetcher([]), FlakyStore(),
                                       FakeSource(_local_path_events(tmp_path)), pool)
        return runner

    monkeypatch.setattr(commands, "open_for_writing",
                        lambda *_: (None, SimpleNamespace(check=lambda: None)))
    monkeypatch.setattr(commands, "build_runner", build_runner)
    settings = Settings(images={"roots": []})
    with ThreadPoolExecutor(4) as pool, caplog.at_level(logging.INFO):
        report = commands._ingest(settings, None, SimpleNamespace(store=None),
                                  until_caught_up=True)
    assert report.totals.dead_lettered == 3
    assert report.totals.dead_images == {"path_not_allowed": 3}
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings[-1] == (
        "3 event(s) dead-lettered: their photos are local paths outside "
        "LOOKALIKE_IMAGES__ROOTS (none set): pass --image-root DIR or set it, then publish "
        "them again or replay the dead letters (catalog.products.dlq)")
    assert all(w.endswith("LOOKALIKE_IMAGES__ROOTS)") for w in warnings[:-1]), warnings
    assert producer is not None
    details = [dict(headers)["lookalike.detail"].decode() for _, _, headers in producer.sent]
    assert f"images 0, 1: path_not_allowed: {NO_ROOT}" in details


def test_no_line_when_nothing_was_refused_for_its_path() -> None:
    totals = BatchStats(dead_lettered=2)
    totals.dead_images.update({"not_found": 2})
    assert commands.paths_refused(Settings(), totals) is None


def _catalog(tmp_path: Path, images: list[str]) -> Path:
    catalog = tmp_path / "cat.jsonl"
    catalog.write_text("".join(json.dumps({"product_id": f"p{i}", "title": "T",
                                           "category": "A/B", "price": "1.00",
                                           "currency": "USD", "images": [image]}) + "\n"
                               for i, image in enumerate(images)))
    return catalog


def test_publish_warns_once_that_ingest_will_refuse_local_photos_without_roots(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """Publish reads no photo, so it publishes them; but ingest will refuse them."""
    (tmp_path / "images").mkdir()
    catalog = _catalog(tmp_path, ["images/a.png", "images/b.png", "https://cdn.example/c.jpg"])
    published: list[int] = []
    monkeypatch.setattr(commands, "_publish", lambda _s, events: published.append(len(events))
                        or 0)
    monkeypatch.delenv("LOOKALIKE_IMAGES__ROOTS", raising=False)
    with caplog.at_level(logging.WARNING, logger="lookalike"):
        assert main(["publish", str(catalog)]) == 0
    assert published == [3]
    warned = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warned == [
        f"2 of 3 product(s) in {catalog} name local photo paths and no image root is set: "
        "ingest will refuse them (path_not_allowed) unless it runs with --image-root "
        f"{(tmp_path / 'images').resolve()} (or LOOKALIKE_IMAGES__ROOTS)"]
    caplog.clear()
    monkeypatch.setenv("LOOKALIKE_IMAGES__ROOTS", json.dumps([str(tmp_path)]))
    assert main(["publish", str(catalog)]) == 0
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    monkeypatch.delenv("LOOKALIKE_IMAGES__ROOTS")
    assert main(["publish", str(_catalog(tmp_path, ["https://cdn.example/c.jpg"]))]) == 0
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


@pytest.mark.parametrize("argv", [["search", "q.png"], ["compare-prices", "q.png"],
                                  ["compare-prices", "--product-id", "p"]])
def test_search_and_compare_prices_take_image_roots(argv: list[str]) -> None:
    """They read stored listing photos back (re-ranking, verification) under the roots,
    but had no --image-root while serve, run, ingest, reindex and demo had."""
    args = build_parser().parse_args([*argv, "--image-root", "/a", "--image-root", "/b"])
    assert _overrides(args)["images.roots"] == ("--image-root", [Path("/a"), Path("/b")])


def test_help_names_what_it_takes() -> None:
    """``--threshold COMPARE_THRESHOLD`` showed an internal name; broker's --port, the
    positional image and --product-id had no help."""
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices  # type: ignore[union-attr]
    compare = sub["compare-prices"].format_help()
    assert "--threshold T " in compare and "COMPARE_THRESHOLD" not in compare
    assert "--product-id ID" in compare and "--image-root DIR" in compare
    assert "a photo of the item" in compare
    assert "(default 9092)" in sub["broker"].format_help()
    for name in ("search", "compare-prices"):
        assert "--min-price P" in sub[name].format_help()
    train = sub["train"].format_help()
    assert "seed of the split" in train and "held out" in train


def _hit(name: str, score: float, inliers: int | None) -> Hit:
    return Hit(product_id=name, score=score, title=f"Title {name}", category="A/B", price=1.0,
               currency="USD", image_ref=name, image_key="k", inliers=inliers)


def test_a_search_line_shows_the_geometry_that_ordered_it(
        capsys: pytest.CaptureFixture[str]) -> None:
    """Ordered by the geometric re-ranking, shown by cosine only: 1.000, 0.815, 0.798, 0.863
    looked unsorted. A hit the re-ranking moved up says why."""
    commands._print_hits([_hit("a", 1.0, 120), _hit("b", 0.798, RERANK_MIN_INLIERS),
                          _hit("c", 0.863, RERANK_MIN_INLIERS - 1), _hit("d", 0.5, None)])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].endswith("Title a  (geometry: 120 inliers)")
    assert lines[1].endswith(f"Title b  (geometry: {RERANK_MIN_INLIERS} inliers)")
    assert lines[2].endswith("Title c") and lines[3].endswith("Title d")


def test_the_lease_refusal_names_unlock_for_a_dead_run() -> None:
    error = commands._lease_held(LeaseHeldError("the reindex lease of shop is held by "
                                                "reindex@h:1:x", None))
    assert str(error).endswith("wait for it (the lease of a killed run expires by itself), "
                               "or run `lookalike models unlock` if that run is known to be "
                               "dead")
    assert error.code == 4


def test_reindex_refused_for_photos_outside_the_roots_says_to_set_them() -> None:
    """It said "fix them or pass --allow-failures", which would switch to a catalog without
    those products: the fix is the roots."""
    refused = [ImageProblem("/x/a.png", Reason.PATH_NOT_ALLOWED, NO_ROOT)]
    gone = [ImageProblem("/x/b.png", Reason.NOT_FOUND, "gone")]
    assert _failures_refused({"a": refused, "b": refused}) == (
        "2 product(s) could not be re-embedded (see the failures): their photos are local "
        "paths outside the image roots (path_not_allowed): pass --image-root DIR or set "
        "LOOKALIKE_IMAGES__ROOTS, as for ingest")
    assert _failures_refused({"a": refused, "b": gone}) == (
        "2 product(s) could not be re-embedded (see the failures): 1 of them have photos "
        "outside the image roots (path_not_allowed: pass --image-root DIR or set "
        "LOOKALIKE_IMAGES__ROOTS, as for ingest); fix the others or pass --allow-failures")
    assert _failures_refused({"b": gone}) == (
        "1 product(s) could not be re-embedded (see the failures); fix them or pass "
        "--allow-failures")


def test_the_demo_says_what_it_added_to_and_what_the_resale_listings_are(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """A second demo added its catalog into the same database without a word, reported
    1099 products for 1000 articles without naming the 99 re-listings, and a catalog with
    none printed "(no matches)" as its price comparison."""
    from ingest.publish import load_catalog
    from ingest.runner import RunReport
    from schema.versions import Serving

    (tmp_path / "images").mkdir()
    write_image(tmp_path / "images" / "a.png", seed=1)
    events = load_catalog(_catalog(tmp_path, ["images/a.png"]))
    report = RunReport()
    report.totals.applied = 1
    searcher = SimpleNamespace(by_image=lambda *a, **k: [], compare_prices=lambda **k: [])
    monkeypatch.setattr(commands, "_publish", lambda *_: 0)
    monkeypatch.setattr(commands, "_ingest", lambda *_a, **_k: report)
    monkeypatch.setattr(commands, "build_search", lambda *_a, **_k: searcher)
    monkeypatch.setattr(commands, "_counts", lambda *_: ("1000", "1099", "0"))
    versions = SimpleNamespace(base="shop", store=None, serving_unloaded=lambda: Serving(
        "shop", "shop__m", "m", legacy=False))
    settings = Settings(milvus={"uri": "var/lookalike.db"})
    commands._demo_steps(settings, events, False, versions,  # type: ignore[arg-type]
                         SimpleNamespace(model_version="m"))
    out = capsys.readouterr().out
    assert ("note: var/lookalike.db already holds 1099 products in shop: this catalog is added "
            "to them (--milvus-uri NEW.db starts afresh)") in out
    assert "'-resale'" not in out  # this catalog has none
    assert out.split("price comparison for p0")[1].splitlines()[1] == (
        "  (no other listing of this item in the catalog)")
    resale = load_catalog(_catalog(tmp_path, ["images/a.png", "images/a.png"]))
    resale[1] = resale[1].model_copy(update={"product_id": "p0-resale"})
    versions.serving_unloaded = lambda: None
    commands._demo_steps(settings, resale, True, versions,  # type: ignore[arg-type]
                         SimpleNamespace(model_version="m"))
    out = capsys.readouterr().out
    assert ("note: 1 of the products are '-resale' listings of others at another price, for "
            "the price comparison") in out
    assert "already holds" not in out
