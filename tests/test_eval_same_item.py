"""``lookalike eval --task same-item`` end to end on a tiny listing set: Milvus Lite, the real
compare-prices path with verification, the TinyEmbedder fake, and the scores' arithmetic."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import lookalike.evaluate
import search.api
from evaluation.cache import EmbeddingCache
from evaluation.protocol import load_gallery, load_queries
from evaluation.same_item import SameItemCounts, SameItemReport, evaluate_same_item
from lookalike.cli import build_parser, main
from schema.collection import CollectionSpec
from search.api import COMPARE_DEPTH
from store import MilvusStore
from tests.fakes import TinyEmbedder, heavy_edit, recolour, textured_photo


def _write(root: Path) -> tuple[Path, Path]:
    (root / "img").mkdir(parents=True)
    a, b = textured_photo(1), textured_photo(2)
    a.save(root / "img" / "a.png")
    heavy_edit(a, watermark=False).save(root / "img" / "a-shop1.jpg")
    b.save(root / "img" / "b.png")
    recolour(a).save(root / "img" / "a-other-colour.png")
    heavy_edit(b, watermark=False).save(root / "img" / "query-b.jpg")
    heavy_edit(a.rotate(2, fillcolor="white"), watermark=False).save(root / "img" / "query-a.jpg")
    listings = [
        ("a@shop0", "img/a.png", "shop-0"), ("a@shop1", "img/a-shop1.jpg", "shop-1"),
        ("a@shop2", "img/a.png", "shop-2"),  # the very same photo, another seller
        ("b@shop0", "img/b.png", "shop-0"), ("a-other-colour", "img/a-other-colour.png", "s"),
    ]
    gallery = [{"product_id": pid, "category": "Things", "images": [path], "seller_id": seller,
                "currency": "EUR", "price": 10 + i} for i, (pid, path, seller) in
               enumerate(listings)]
    queries = [{"image": "img/query-a.jpg", "relevant": ["a@shop0", "a@shop1", "a@shop2"]},
               {"image": "img/query-b.jpg", "relevant": ["b@shop0"]}]
    (root / "gallery.jsonl").write_text("\n".join(json.dumps(g) for g in gallery) + "\n")
    (root / "queries.jsonl").write_text("\n".join(json.dumps(q) for q in queries) + "\n")
    return root / "gallery.jsonl", root / "queries.jsonl"


def _evaluate(root: Path, **kwargs: Any) -> dict[str, Any]:
    """The tiny listing set through ``evaluate_same_item`` on Milvus Lite, as JSON."""
    return _report(root, **kwargs).to_json()


def _report(root: Path, **kwargs: Any) -> SameItemReport:
    """The tiny listing set through ``evaluate_same_item`` on Milvus Lite."""
    gallery_path, queries_path = _write(root)
    products = load_gallery(gallery_path)
    assert {p.seller_id for p in products} == {"shop-0", "shop-1", "shop-2", "s"}
    queries = load_queries(queries_path, products)
    store = MilvusStore.open(str(root / "eval.db"))
    embedder = TinyEmbedder()
    try:
        report = evaluate_same_item(products, queries, embedder, store,
                                    CollectionSpec(name="same_item", dim=embedder.dim), None,
                                    max_pixels=10_000_000, **kwargs)
    finally:
        store.close()
    return report


def test_same_item_eval_finds_every_listing_and_no_look_alike(tmp_path: Path) -> None:
    out = _evaluate(tmp_path)
    assert (out["precision"], out["recall"]) == (1.0, 1.0)
    assert (out["false_match_rate"], out["all_found_rate"]) == (0.0, 1.0)
    assert (out["n_queries"], out["n_gallery"], out["model"]) == (2, 5,
                                                                  TinyEmbedder().model_version)
    assert out["returned"] == 4 and out["query_ms_p50"] > 0


def test_same_item_eval_details_each_querys_listings_with_their_evidence(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``--details``' lines: per query, in the queries file's order, what price comparison
    listed (each with its evidence), what it missed and what it listed wrongly; with k = 1
    and nothing vouched for from below, query-a misses one of its listings."""
    report = _report(tmp_path / "all")
    first, second = report.details
    assert first["image"].endswith("query-a.jpg") and second["image"].endswith("query-b.jpg")
    assert first["relevant"] == ["a@shop0", "a@shop1", "a@shop2"]
    assert {m["product_id"] for m in first["listed"]} == set(first["relevant"])
    assert (first["missed"], first["wrong"], second["missed"], second["wrong"]) == ([],) * 4
    for match in first["listed"] + second["listed"]:
        assert match["relevant"] and match["reason"] and match["similarity"] > 0
        assert match["currency"] == "EUR" and match["seller_id"].startswith("shop-")
    assert first["ms"] > 0
    monkeypatch.setattr(search.api, "ANCHOR_COMPARED", 0)
    line = _report(tmp_path / "k1", k=1).details[0]
    assert len(line["missed"]) == 1 and line["wrong"] == []
    assert len(line["listed"]) == 2 and line["missed"][0] not in {
        m["product_id"] for m in line["listed"]}


def _run(root: Path, queries: list[dict[str, Any]], name: str,
         cache: EmbeddingCache | None = None, **kwargs: Any) -> SameItemReport:
    """The tiny gallery (written once under ``root``) with these ``queries``, through
    ``evaluate_same_item`` into a collection of its own (``name``)."""
    gallery_path = root / "gallery.jsonl"
    if not gallery_path.exists():
        _write(root)
    queries_path = root / f"{name}.jsonl"
    queries_path.write_text("".join(json.dumps(q) + "\n" for q in queries))
    products = load_gallery(gallery_path)
    store = MilvusStore.open(str(root / f"{name}.db"))
    embedder = TinyEmbedder()
    try:
        return evaluate_same_item(products, load_queries(queries_path, products), embedder,
                                  store, CollectionSpec(name=name, dim=embedder.dim), cache,
                                  max_pixels=10_000_000, **kwargs)
    finally:
        store.close()


def test_same_item_details_say_why_each_missed_listing_is_missing(tmp_path: Path) -> None:
    """``--details`` recorded only the missed ids ("missed": ["MH01-gray"]): with
    ``explain_misses`` each one's ``missed_evidence`` says whether it was among the
    candidates (its rank and cosine), whether it was verified, and the verifier's refusal
    (inliers, reason); what the calls list is the same with and without it."""
    query = [{"image": "img/query-a.jpg", "relevant": ["a-other-colour", "b@shop0"]}]
    plain = _run(tmp_path, query, "plain").details[0]
    assert "missed_evidence" not in plain
    line = _run(tmp_path, query, "refused", explain_misses=True).details[0]
    assert {k: v for k, v in line.items() if k not in ("ms", "missed_evidence")} == {
        k: v for k, v in plain.items() if k != "ms"}
    assert line["missed"] == ["a-other-colour", "b@shop0"]
    why = {m["product_id"]: m for m in line["missed_evidence"]}
    assert list(why) == line["missed"]
    colour = why["a-other-colour"]  # the same print in another colour: refused on colour
    assert colour["verified"] and colour["reason"].startswith("refused: ")
    assert "colour" in colour["reason"] and colour["inliers"] >= 10
    assert isinstance(colour["rank"], int) and 0 < colour["similarity"] <= 1
    assert why["b@shop0"]["verified"] and why["b@shop0"]["reason"].startswith("refused: ")
    assert why["b@shop0"]["rank"] > colour["rank"]  # another product: less similar

    line = _run(tmp_path, query, "threshold", threshold=0.999, explain_misses=True).details[0]
    for missed in line["missed_evidence"]:
        assert not missed["verified"] and missed["similarity"] < 0.999
        assert missed["reason"] == (
            f"similarity {missed['similarity']:.4f} below the threshold 0.999")

    # k = 1 and no deeper look: the vector search's 3 candidates leave b@shop0 out
    line = _run(tmp_path, query, "shallow", k=1, family_depth=0,
                explain_misses=True).details[0]
    far = {m["product_id"]: m for m in line["missed_evidence"]}["b@shop0"]
    assert (far["rank"], far["similarity"], far["verified"]) == (None, None, False)
    assert far["reason"] == f"not among the {COMPARE_DEPTH} products most similar to the query"


def test_same_item_counts_its_query_photos_as_retrieval_does(tmp_path: Path) -> None:
    """30 new query photos read "embedded 0 images, 30 from cache": the query photos (which
    compare_prices embeds) were not counted. They count by content as retrieval's do: each
    new one embedded, a repeated one (an earlier query's bytes, a gallery photo's) repeated;
    their time is not the embedding rate's."""
    queries = [{"image": "img/query-a.jpg", "relevant": ["a@shop0", "a@shop1", "a@shop2"]},
               {"image": "img/query-b.jpg", "relevant": ["b@shop0"]},
               {"image": "img/query-b.jpg"},  # the same photo again
               {"image": "img/b.png", "relevant": ["b@shop0"]}]  # a gallery photo
    cache = EmbeddingCache(tmp_path / "cache.sqlite")
    try:
        first = _run(tmp_path, queries, "first", cache).to_json()
        # gallery: 4 distinct photos (a.png listed twice); queries: 2 new, 2 repeated
        assert (first["embedded_images"], first["cached_images"],
                first["repeated_images"]) == (6, 0, 3)
        again = _run(tmp_path, queries, "again", cache)
    finally:
        cache.close()
    out = again.to_json()
    assert (out["embedded_images"], out["cached_images"], out["repeated_images"]) == (2, 4, 3)
    assert out["n_queries"] == 4 and again.embed.untimed == 2
    assert again.embed.images_per_s is None  # nothing timed was embedded: the cache had it


def test_cli_eval_writes_the_details_or_fails_before_the_work(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``lookalike eval --details FILE`` writes the report's lines, one JSON object each; a
    path that cannot be written is one clear error, exit 2, before anything is indexed."""
    gallery_path, queries_path = _write(tmp_path)
    lines = [{"image": "q.jpg", "listed": [], "missed": ["a"], "wrong": []},
             {"image": "r.jpg", "listed": [], "missed": [], "wrong": ["b"]}]
    calls: list[int] = []

    def fake(*args: object, **kwargs: object) -> SameItemReport:
        calls.append(1)
        counts = SameItemCounts()
        counts.add(set(), {"a"})
        counts.add({"b"}, {"c"})
        return SameItemReport(counts, "m", 5, 5, details=lines)

    monkeypatch.setattr(lookalike.evaluate, "evaluate_same_item", fake)
    monkeypatch.chdir(tmp_path)
    base = ["eval", "--task", "same-item", "--gallery", str(gallery_path), "--queries",
            str(queries_path), "--no-cache"]
    assert main([*base, "--details", str(tmp_path / "details.jsonl")]) == 0
    written = (tmp_path / "details.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in written] == lines
    capsys.readouterr()
    assert main([*base, "--details", str(tmp_path / "no" / "such" / "d.jsonl")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot write --details" in err[0], err
    assert calls == [1]  # the second run stopped before the evaluation


def test_cli_eval_details_never_overwrites_an_input_nor_a_previous_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A ``--details`` path that is an input (the queries file, the gallery, a photo) is one
    clear error, exit 2, before any work, and the input is unchanged; an existing details
    file survives a run that fails, and is replaced whole by one that succeeds."""
    gallery_path, queries_path = _write(tmp_path)
    calls: list[int] = []

    def failing(*args: object, **kwargs: object) -> SameItemReport:
        calls.append(1)
        raise lookalike.evaluate.UserError("the evaluation failed")

    monkeypatch.setattr(lookalike.evaluate, "evaluate_same_item", failing)
    monkeypatch.chdir(tmp_path)
    base = ["eval", "--task", "same-item", "--gallery", str(gallery_path), "--queries",
            str(queries_path), "--no-cache"]
    for given in (queries_path, gallery_path, tmp_path / "img" / ".." / "img" / "a.png"):
        before = given.read_bytes()
        capsys.readouterr()
        assert main([*base, "--details", str(given)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "cannot write --details" in err[0], err
        assert given.read_bytes() == before
    assert calls == []  # refused before the evaluation
    previous = tmp_path / "details.jsonl"
    previous.write_text('{"image": "old.jpg"}\n')
    assert main([*base, "--details", str(previous)]) == 2
    assert calls == [1]
    assert previous.read_text() == '{"image": "old.jpg"}\n'
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".details")] == []


def test_precision_is_undefined_when_nothing_was_listed(
        capsys: pytest.CaptureFixture[str]) -> None:
    """No listing at all: precision is None (null in --json, n/a printed), not 1.0."""
    counts = SameItemCounts()
    counts.add(set(), {"a"})
    counts.add(set(), {"b", "c"})
    assert counts.summary()["precision"] is None
    report = SameItemReport(counts, "m", 3, 3)
    out = json.loads(json.dumps(report.to_json()))
    assert out["precision"] is None and out["recall"] == 0.0 and out["returned"] == 0
    assert out["task"] == "same-item"
    lookalike.evaluate.print_same_item(report)
    text = capsys.readouterr().out
    assert "precision n/a  recall 0.000" in text and "(0 listed, 3 relevant)" in text


def test_counts_are_micro_averaged_over_listings() -> None:
    counts = SameItemCounts()
    counts.add({"a1", "a2", "x"}, {"a1", "a2", "a3"})  # 2 right, 1 wrong, 1 missed
    counts.add(set(), {"b1"})  # nothing listed: recall lost, no false match
    counts.add({"c1"}, {"c1"})
    assert counts.summary() == {
        "precision": pytest.approx(3 / 4), "recall": pytest.approx(3 / 5),
        "false_match_rate": pytest.approx(1 / 3), "all_found_rate": pytest.approx(1 / 3)}


def test_cli_takes_task_and_match() -> None:
    args = build_parser().parse_args(["eval", "--gallery", "g", "--queries", "q",
                                      "--task", "retrieval", "--match", "similar"])
    assert (args.task, args.match) == ("retrieval", "similar")
    # eval leaves --match unset so that --task same-item can refuse it (retrieval: exact)
    assert build_parser().parse_args(["eval", "--gallery", "g", "--queries", "q"]).match is None
    assert build_parser().parse_args(["search", "x.jpg"]).match == "exact"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["search", "x.jpg", "--match", "colour"])


def test_same_item_eval_runs_compare_prices_with_the_given_k(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """k = 1: each query verifies its single most similar listing. query-a's matches its
    geometry, so it also looks one deeper (the best of the next ``COMPARE_DEPTH - 1``
    products by inliers): two of its three listings, not all three; query-b lists its one.
    Its third listing is then found only through the one that matched (the listings below
    the candidates vouched for by it, off with ``ANCHOR_COMPARED`` = 0)."""
    monkeypatch.setattr(search.api, "ANCHOR_COMPARED", 0)
    out = _evaluate(tmp_path / "verified", k=1)
    assert COMPARE_DEPTH == 3
    assert (out["returned"], out["precision"], out["recall"]) == (3, 1.0, 0.75)
    assert out["turned_queries"] == 0  # its photos are upright
    monkeypatch.undo()
    out = _evaluate(tmp_path / "vouched", k=1)
    assert (out["returned"], out["precision"], out["recall"]) == (4, 1.0, 1.0)


def test_cli_eval_same_item_uses_the_configured_comparison(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``lookalike eval --task same-item`` measures what the configured ``compare_prices``
    does: ``search.compare_k``, ``search.compare_threshold``, ``search.turned_queries``,
    ``search.family_depth`` and ``search.silhouette_route`` reach it."""
    gallery_path, queries_path = _write(tmp_path)
    seen: dict[str, object] = {}

    class Seen(Exception):
        pass

    def capture(*args: object, **kwargs: object) -> None:
        seen.update(kwargs)
        raise Seen

    monkeypatch.setattr(lookalike.evaluate, "evaluate_same_item", capture)
    monkeypatch.setenv("LOOKALIKE_SEARCH__COMPARE_K", "7")
    monkeypatch.setenv("LOOKALIKE_SEARCH__COMPARE_THRESHOLD", "0.6")
    monkeypatch.setenv("LOOKALIKE_SEARCH__TURNED_QUERIES", "false")
    monkeypatch.setenv("LOOKALIKE_SEARCH__FAMILY_DEPTH", "120")
    monkeypatch.setenv("LOOKALIKE_SEARCH__SILHOUETTE_ROUTE", "false")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(Seen):
        main(["eval", "--task", "same-item", "--gallery", str(gallery_path), "--queries",
              str(queries_path), "--no-cache"])
    assert (seen["k"], seen["threshold"], seen["turned_queries"], seen["family_depth"],
            seen["silhouette_route"]) == (7, 0.6, False, 120, False)
    assert seen["explain_misses"] is False  # why a listing is missed: with --details only
    with pytest.raises(Seen):
        main(["eval", "--task", "same-item", "--gallery", str(gallery_path), "--queries",
              str(queries_path), "--no-cache", "--details", str(tmp_path / "d.jsonl")])
    assert seen["explain_misses"] is True


def test_same_item_eval_verifies_with_the_silhouette_route_as_asked(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``evaluate_same_item``'s ``silhouette_route`` reaches the verifier's rule."""
    rules: list[bool] = []
    compare = search.api.ProductSearch.compare_prices

    def spy(self: search.api.ProductSearch, *args: Any, **kwargs: Any) -> Any:
        assert self._verifier is not None
        rules.append(self._verifier.rule.silhouette_route)
        return compare(self, *args, **kwargs)

    monkeypatch.setattr(search.api.ProductSearch, "compare_prices", spy)
    assert _evaluate(tmp_path / "on")["recall"] == 1.0
    assert _evaluate(tmp_path / "off", silhouette_route=False)["recall"] == 1.0
    assert rules == [True, True, False, False]


def test_cli_same_item_eval_refuses_match_and_says_which_photo_a_query_runs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        caplog: pytest.LogCaptureFixture) -> None:
    """``--match`` is the retrieval task's intent: with ``--task same-item`` it was accepted
    and silently ignored, and so was every photo of a query but its first. The first is one
    line, exit 2, before any work; the second a warning counting such queries."""
    gallery_path, queries_path = _write(tmp_path)
    calls: list[list[Any]] = []

    def fake(products: object, queries: list[Any], *args: object,
             **kwargs: object) -> SameItemReport:
        calls.append(queries)
        counts = SameItemCounts()
        counts.add({"a@shop0"}, {"a@shop0"})
        return SameItemReport(counts, "m", 5, 5)

    monkeypatch.setattr(lookalike.evaluate, "evaluate_same_item", fake)
    monkeypatch.chdir(tmp_path)
    base = ["eval", "--task", "same-item", "--gallery", str(gallery_path), "--queries",
            str(queries_path), "--no-cache"]
    for match in ("exact", "similar"):
        capsys.readouterr()
        assert main([*base, "--match", match]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"--match {match} applies to --task retrieval" in err[0], err
    assert calls == []
    lines = [json.loads(line) for line in queries_path.read_text().splitlines()]
    lines[0] = {"images": ["img/query-a.jpg", "img/a-shop1.jpg"],
                "relevant": ["a@shop0", "a@shop1", "a@shop2"]}
    queries_path.write_text("\n".join(json.dumps(q) for q in lines) + "\n")
    with caplog.at_level("WARNING", logger="lookalike"):
        assert main(base) == 0
    assert len(calls) == 1
    assert any("1 of 2 queries have several photos" in r.getMessage() for r in caplog.records)


def test_cli_eval_details_is_not_the_cache_and_respects_the_umask(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--cache dc.sqlite --details dc.sqlite`` replaced the embedding cache with JSON lines;
    a details file was always mode 0600 (its temporary file's), whatever the umask, even
    where it replaced a file of another mode."""
    import os
    import sqlite3

    gallery_path, queries_path = _write(tmp_path)

    def fake(*args: object, **kwargs: object) -> SameItemReport:
        counts = SameItemCounts()
        counts.add(set(), {"a"})
        return SameItemReport(counts, "m", 5, 5, details=[{"image": "q.jpg"}])

    monkeypatch.setattr(lookalike.evaluate, "evaluate_same_item", fake)
    base = ["eval", "--task", "same-item", "--gallery", str(gallery_path), "--queries",
            str(queries_path)]
    cache = tmp_path / "dc.sqlite"
    sqlite3.connect(cache).close()
    before = cache.read_bytes()
    capsys.readouterr()
    assert main([*base, "--cache", str(cache), "--details", str(cache)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is one of the evaluation's inputs" in err[0], err
    assert cache.read_bytes() == before
    old = os.umask(0o022)
    try:
        details = tmp_path / "d.jsonl"
        assert main([*base, "--no-cache", "--details", str(details)]) == 0
        assert details.stat().st_mode & 0o777 == 0o644
        details.chmod(0o640)
        assert main([*base, "--no-cache", "--details", str(details)]) == 0
        assert details.stat().st_mode & 0o777 == 0o640
    finally:
        os.umask(old)


def test_negative_queries_count_as_the_right_answer_being_nothing(
        capsys: pytest.CaptureFixture[str]) -> None:
    """``"relevant": []`` was refused; for same-item it is a query whose right answer lists
    nothing: any listing is a false match (and lowers precision), nothing listed is all
    found, and recall's denominator is untouched (undefined, n/a, with only such queries)."""
    counts = SameItemCounts()
    counts.add({"a1"}, {"a1"})
    counts.add(set(), set())  # right: nothing listed
    counts.add({"x", "y"}, set())  # two wrong listings
    assert counts.summary() == {
        "precision": pytest.approx(1 / 3), "recall": pytest.approx(1.0),
        "false_match_rate": pytest.approx(1 / 3), "all_found_rate": pytest.approx(2 / 3)}
    assert (counts.queries, counts.relevant, counts.returned) == (3, 1, 3)
    only = SameItemCounts()
    only.add(set(), set())
    assert only.summary() == {"precision": None, "recall": None, "false_match_rate": 0.0,
                              "all_found_rate": 1.0}
    lookalike.evaluate.print_same_item(SameItemReport(only, "m", 3, 3))
    assert "precision n/a  recall n/a  false_match_rate 0.000  all_found_rate 1.000" in (
        capsys.readouterr().out)


def test_same_item_eval_scores_negative_queries_and_skips_unreadable_photos(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """End to end: a negative query (no relevant listing in the file: here ``relevant``
    missing) is scored; a query whose photo is unreadable is skipped with a warning naming
    its line and counted in the report."""
    gallery_path, queries_path = _write(tmp_path)
    (tmp_path / "img" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    with open(queries_path, "a", encoding="utf-8") as out:
        out.write(json.dumps({"image": "img/query-b.jpg"}) + "\n")  # line 3: b@shop0 is wrong
        out.write(json.dumps({"image": "img/broken.jpg", "relevant": ["b@shop0"]}) + "\n")
    products = load_gallery(gallery_path)
    queries = load_queries(queries_path, products)
    assert queries[2].relevant == frozenset()
    store = MilvusStore.open(str(tmp_path / "eval.db"))
    embedder = TinyEmbedder()
    try:
        with caplog.at_level("WARNING"):
            report = evaluate_same_item(products, queries, embedder, store,
                                        CollectionSpec(name="negative", dim=embedder.dim), None,
                                        max_pixels=10_000_000)
    finally:
        store.close()
    out = report.to_json()
    assert (out["n_queries"], out["n_queries_skipped"]) == (3, 1)
    assert out["skipped"][0]["query"] == f"{queries_path}:4"
    assert out["false_match_rate"] == pytest.approx(1 / 3, abs=1e-4)  # the negative one listed b
    assert out["recall"] == 1.0 and out["relevant"] == 4
    assert any(f"{queries_path}:4: image " in r.getMessage() and "not scored" in r.getMessage()
               for r in caplog.records)
