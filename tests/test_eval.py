"""``lookalike eval`` end to end on tiny protocols: the real search API and Milvus Lite, the
TinyEmbedder fake (or the real model through the CLI), the cache, and every protocol error."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from embedding.decode import decode_image
from evaluation.cache import EmbeddingCache
from evaluation.protocol import UNCATEGORIZED, ProtocolError, load_gallery, load_queries
from evaluation.run import EmbedStats, embed_scene_queries, evaluate
from evaluation.same_item import gallery_verifier
from lookalike.cli import main
from schema.collection import CollectionSpec
from search.api import ProductSearch
from search.scene import white_patch
from search.verify import SameItemVerifier
from store import MilvusStore, ensure_collections
from tests.fakes import TinyEmbedder, reshot_on_backdrop, textured_photo

COLOURS = {
    "red": (220, 20, 20), "green": (20, 200, 40), "blue": (30, 40, 220),
    "yellow": (230, 220, 30), "black": (10, 10, 10), "purple": (140, 30, 160),
}


def _photo(path: Path, colour: tuple[int, int, int], shift: int = 0) -> None:
    """A coloured square on white; ``shift`` moves it (a different 'view')."""
    image = Image.new("RGB", (64, 64), (255, 255, 255))
    image.paste(colour, (12 + shift, 12, 52 + shift, 52))
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)


def write_protocol(root: Path, *, categories: bool = True) -> tuple[Path, Path]:
    gallery, queries = [], []
    for i, (name, rgb) in enumerate(COLOURS.items()):
        _photo(root / "g" / f"{name}.png", rgb)
        _photo(root / "q" / f"{name}.png", rgb, shift=4)
        gallery.append({
            "product_id": f"p-{name}", "category": "Warm" if i % 2 == 0 else "Cool/Dark",
            "images": [f"g/{name}.png"] if i % 3 else [{"path": f"g/{name}.png"}],
            "title": None, **({"price": 9.5} if i == 0 else {}), "extra": [1, 2],
        })
        queries.append({"image": f"q/{name}.png", "relevant": [f"p-{name}"]})
    (root / "gallery.jsonl").write_text("\n".join(json.dumps(g) for g in gallery) + "\n")
    (root / "queries.jsonl").write_text("\n".join(json.dumps(q) for q in queries) + "\n")
    return root / "gallery.jsonl", root / "queries.jsonl"


def _run(root: Path, embedder: Any, cache: EmbeddingCache | None, name: str,
         cutout_queries: bool = True, window_queries: bool = True,
         verifier: SameItemVerifier | None = None, light_queries: bool = True,
         strict: bool = False) -> Any:
    g, q = root / "gallery.jsonl", root / "queries.jsonl"
    products = load_gallery(g)
    store = MilvusStore.open(str(root / f"{name}.db"))
    try:
        return evaluate(products, load_queries(q, products), embedder, store,
                        CollectionSpec(name=name, dim=embedder.dim), cache,
                        max_pixels=10_000_000, cutout_queries=cutout_queries,
                        window_queries=window_queries, light_queries=light_queries,
                        verifier=verifier, strict=strict)
    finally:
        store.close()


def write_reshot_protocol(root: Path) -> list[Path]:
    """Five catalog photos on white; each query is one of them re-shot on a textured
    backdrop that runs to the frame (what a shopper's snapshot has instead of white)."""
    gallery, queries, paths = [], [], []
    (root / "g").mkdir(parents=True)
    (root / "q").mkdir()
    for i in range(5):
        photo = textured_photo(10 + i)
        photo.save(root / "g" / f"{i}.png")
        reshot_on_backdrop(photo, texture_seed=i).save(root / "q" / f"{i}.jpg")
        paths.append(root / "q" / f"{i}.jpg")
        gallery.append({"product_id": f"p{i}", "category": "A", "images": [f"g/{i}.png"]})
        queries.append({"image": f"q/{i}.jpg", "relevant": [f"p{i}"]})
    (root / "gallery.jsonl").write_text("\n".join(json.dumps(g) for g in gallery) + "\n")
    (root / "queries.jsonl").write_text("\n".join(json.dumps(q) for q in queries) + "\n")
    return paths


def test_eval_scores_and_caches(tmp_path: Path) -> None:
    write_protocol(tmp_path)
    embedder = TinyEmbedder()
    cache = EmbeddingCache(tmp_path / "cache.sqlite")
    report = _run(tmp_path, embedder, cache, "first")
    # each query is its own product's square, moved: the nearest thumbnail is its own
    assert report.summary.overall == pytest.approx(
        {"R@1": 1.0, "R@5": 1.0, "R@10": 1.0, "mAP@R": 1.0})
    assert report.summary.n_queries == 6 and report.n_gallery == 6
    assert set(report.summary.per_category) == {"Warm", "Cool/Dark"}
    assert report.embed.embedded == 12 and embedder.embedded == 12
    out = report.to_json()
    assert {"R@1", "R@5", "R@10", "mAP@R", "n_queries", "n_gallery", "model"} <= set(out)
    assert out["model"] == TinyEmbedder.model_version
    assert (out["task"], out["match"]) == ("retrieval", "exact")  # --json said neither

    again = TinyEmbedder()
    second = _run(tmp_path, again, cache, "second")
    assert again.embedded == 0 and second.embed.cached == 12  # a re-run only searches
    assert second.summary.overall == report.summary.overall
    assert [line["first_relevant_rank"] for line in report.details] == [1] * 6
    assert all(line["ranked"][0]["relevant"] for line in report.details)


def test_eval_scores_a_wrong_ranking_as_zero(tmp_path: Path) -> None:
    """Point every query at another product: nothing is found at rank 1, and the metric says
    so rather than inflating (the product at rank 1 is the query's own colour)."""
    write_protocol(tmp_path)
    names = list(COLOURS)
    lines = [json.dumps({"image": f"q/{n}.png", "relevant": [f"p-{names[(i + 1) % 6]}"]})
             for i, n in enumerate(names)]
    (tmp_path / "queries.jsonl").write_text("\n".join(lines) + "\n")
    report = _run(tmp_path, TinyEmbedder(), None, "wrong")
    assert report.summary.overall["R@1"] == 0.0
    assert report.summary.overall["mAP@R"] == 0.0
    assert report.summary.overall["R@5"] > 0.0  # found further down
    for line in report.details:  # --details: where the right product was, and what was first
        assert line["first_relevant_rank"] is None or line["first_relevant_rank"] > 1
        assert line["ranked"][0]["relevant"] is False and line["R@1"] == 0.0
        assert line["images"][0].endswith(".png") and "score" in line["ranked"][0]


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda root: (root / "g" / "red.png").unlink(), r"1 gallery image\(s\) not found"),
        (lambda root: (root / "q" / "blue.png").unlink(), r"1 query image\(s\) not found"),
        (lambda root: ((root / "g" / "red.png").unlink(), (root / "g" / "red.png").mkdir()),
         r"1 gallery image\(s\) not a regular file: .*red\.png"),  # said "not found"
        *[(lambda root, value=value: _append(root / "queries.jsonl",
                                             {"image": "q/red.png", "relevant": value}),
           r"queries.jsonl:7: relevant must be a list of product ids")
          for value in ([1.5], [True], {"p-red": 1}, [["p-red"]], [""], 2.0)],
        # a category that is no string (a missing or null one is the placeholder)
        *[(lambda root, value=value: _append(root / "gallery.jsonl", {
            "product_id": "z", "category": value, "images": ["g/red.png"]}),
           r"gallery.jsonl:7: category must be a string")
          for value in (["A"], {"a": 1}, True, 1.5)],
        (lambda root: _append(root / "gallery.jsonl", {
            "product_id": "z", "category": "A//B", "images": ["g/red.png"]}),
         r"gallery.jsonl:7: category: category must be a '/'-separated path"),
        # an id that is no string nor integer
        *[(lambda root, value=value: _append(root / "gallery.jsonl", {
            "product_id": value, "category": "A", "images": ["g/red.png"]}),
           r"gallery.jsonl:7: product_id must be a non-empty string or an integer")
          for value in (1.0, True, None, "", ["z"])],
        (lambda root: _append(root / "gallery.jsonl", {
            "product_id": "z", "category": "A", "images": ["file://host/x.png"]}),
         "a file URL must name an absolute local path"),
        (lambda root: _append(root / "gallery.jsonl",
                              {"product_id": "p-red", "category": "A", "images": ["g/red.png"]}),
         "repeats line 1"),
        (lambda root: _append(root / "gallery.jsonl", {"product_id": "z", "category": "A"}),
         "images must be a non-empty list"),
        (lambda root: _append(root / "gallery.jsonl", "not json"), "invalid JSON"),
        # hostile listing fields: refused on their line, before they reach the store
        *[(lambda root, value=value: _append(root / "gallery.jsonl", {
            "product_id": "z", "category": "A", "images": ["g/red.png"], "price": value}),
           "price must be a number from 0 to 1,000,000,000,000 or null")
          for value in ("NaN", "inf", -3, 1e13, True, "cheap", [1])],
        (lambda root: _append(root / "gallery.jsonl", {
            "product_id": "z", "category": "A", "images": ["g/red.png"],
            "currency": "us dollars"}), "currency must be a 3-letter ISO 4217 code"),
        (lambda root: _append(root / "gallery.jsonl", {
            "product_id": "z\n", "category": "A", "images": ["g/red.png"]}),
         "product_id must not contain control characters"),
        (lambda root: _append(root / "gallery.jsonl", {
            "product_id": "z" * 129, "category": "A", "images": ["g/red.png"]}),
         "product_id must be at most 128 bytes"),
        (lambda root: _append(root / "gallery.jsonl", {
            "product_id": "z", "category": "A", "images": ["g/red.png"], "title": "t" * 513}),
         "title must be at most 512 characters"),
        (lambda root: _append(root / "gallery.jsonl", {
            "product_id": "z", "category": "A", "images": ["g/red.png"], "seller_id": "s" * 129}),
         "seller_id must be at most 128 characters"),
        # over what the collection's field holds, counted in bytes as a Milvus server counts
        # them: "Milvus failed: index_gallery" after every photo was embedded (exit 4)
        *[(lambda root, value=value: _append(root / "gallery.jsonl", {
            "product_id": "z", "category": value, "images": ["g/red.png"]}),
           rf"gallery.jsonl:7: category is {size} bytes \(UTF-8\); the collection stores at "
           "most 2,048")
          for value, size in (("C" * 5000, "5,000"), ("\u00e9" * 1100, "2,200"),
                              ("A/" + "\u00e9" * 1100, "2,202"))],
        # a delisting is no listing: refused as publish refuses it, not indexed as one
        *[(lambda root, kind=kind: _append(root / "gallery.jsonl", {
            "type": kind, "product_id": "z", "category": "A",
            "images": ["g/red.png"]}), rf"gallery.jsonl:\d+: type: '{kind}'")
          for kind in ("product.delisted", "product.price_changed")],
    ],
)
def test_protocol_errors_are_clear(tmp_path: Path, edit: Any, message: str) -> None:
    g, q = write_protocol(tmp_path)
    edit(tmp_path)
    with pytest.raises(ProtocolError, match=message):
        products = load_gallery(g)
        load_queries(q, products)


def test_a_field_the_collection_would_refuse_stops_eval_before_the_model(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """One line naming the file and line, exit 2, and no model loaded nor photo embedded."""
    g, q = write_protocol(tmp_path)
    _append(g, {"product_id": "z", "category": "C" * 5000, "images": ["g/red.png"]})

    def no_model(*_args: Any) -> None:
        raise AssertionError("the model was built")

    monkeypatch.setattr("lookalike.evaluate.build_embedder", no_model)
    assert main(["eval", "--gallery", str(g), "--queries", str(q), "--no-cache"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{g}:7: category is 5,000 bytes" in err[0], err


def test_the_gallery_is_held_to_the_limits_the_collection_is_made_with() -> None:
    """Every VARCHAR field of the image collection, with the max_length it is created with."""
    from schema.collection import IMAGE_TEXT_BYTES
    from store.collections import image_schema

    made = {f.name: f.params["max_length"] for f in image_schema(
        CollectionSpec(name="limits", dim=4)).fields if "max_length" in f.params}
    assert made == IMAGE_TEXT_BYTES


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"image": "q/red.png", "images": ["q/red.png"], "relevant": ["p-red"]}, "not both"),
        ({"relevant": ["p-red"]}, "either"),
        ({"images": [], "relevant": ["p-red"]}, "list of 1 to 16"),
        ({"images": ["q/red.png"] * 17, "relevant": ["p-red"]}, "list of 1 to 16"),
        ({"images": ["q/red.png", "q/nope.png"], "relevant": ["p-red"]},
         r"1 query image\(s\) not found"),
    ],
)
def test_multi_view_query_errors_are_clear(tmp_path: Path, query: Any, message: str) -> None:
    g, q = write_protocol(tmp_path)
    _append(q, query)
    with pytest.raises(ProtocolError, match=message):
        load_queries(q, load_gallery(g))


def test_multi_view_queries_search_with_every_view(tmp_path: Path) -> None:
    """A query of two views finds a product that only the second view matches."""
    write_protocol(tmp_path)
    _photo(tmp_path / "q" / "odd.png", (128, 128, 128), shift=-8)  # like no product
    lines = [json.dumps({"images": ["q/odd.png", f"q/{n}.png"], "relevant": [f"p-{n}"]})
             for n in COLOURS]
    (tmp_path / "queries.jsonl").write_text("\n".join(lines) + "\n")
    products = load_gallery(tmp_path / "gallery.jsonl")
    queries = load_queries(tmp_path / "queries.jsonl", products)
    assert all(len(query.images) == 2 for query in queries)
    report = _run(tmp_path, TinyEmbedder(), None, "multi")
    assert report.summary.overall["R@1"] == 1.0
    assert report.summary.n_queries == 6


def test_listing_fields_may_be_missing_or_lenient(tmp_path: Path) -> None:
    """A gallery line needs an id, a category and images; a missing price is 0, a missing
    currency ``XXX``, a price given as a string of digits is read, and an id with quotes is
    kept as it is (the store quotes it)."""
    g, _ = write_protocol(tmp_path)
    _append(g, {"product_id": 'z" or "1', "category": "A", "images": ["g/red.png"],
                "price": "12.5", "currency": None, "seller_id": 7})
    last = load_gallery(g)[-1]
    assert (last.product_id, last.price, last.currency, last.seller_id) == ('z" or "1', 12.5,
                                                                           "XXX", "7")


def _append(path: Path, obj: Any) -> None:
    with open(path, "a", encoding="utf-8") as fh:
        fh.write((obj if isinstance(obj, str) else json.dumps(obj)) + "\n")


def test_undecodable_image_stops_a_strict_run_naming_its_line(tmp_path: Path) -> None:
    """``--strict``: the first photo that cannot be decoded stops the run, named by the
    catalog line that lists it (gallery red.png is on line 1)."""
    write_protocol(tmp_path)
    (tmp_path / "g" / "red.png").write_bytes(b"not an image at all")
    with pytest.raises(ProtocolError, match=r"gallery\.jsonl:1: image .*red\.png: "
                                            "unsupported_format"):
        _run(tmp_path, TinyEmbedder(), None, "broken", strict=True)
    _photo(tmp_path / "g" / "red.png", COLOURS["red"])  # now a query's photo
    (tmp_path / "q" / "blue.png").write_bytes(b"")
    with pytest.raises(ProtocolError, match=r"queries\.jsonl:3: image .*blue\.png: "
                                            "corrupt_image: empty image data"):
        _run(tmp_path, TinyEmbedder(), None, "broken_query", strict=True)


@pytest.mark.parametrize("cache", ["not-sqlite", "a-folder", "under-a-file"])
def test_a_cache_that_cannot_be_used_is_one_line_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
    cache: str
) -> None:
    """``--cache`` at a file that is not SQLite, at a folder, or under a file: one line, exit
    2, before the model loads or a collection is made (the evaluation is never reached)."""
    g, q = write_protocol(tmp_path)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "not-sqlite").write_text("garbage")
    (tmp_path / "a-folder").mkdir()
    path = {"not-sqlite": tmp_path / "not-sqlite", "a-folder": tmp_path / "a-folder",
            "under-a-file": tmp_path / "not-sqlite" / "c.sqlite"}[cache]
    monkeypatch.setattr("lookalike.evaluate._evaluate", lambda *a: pytest.fail("evaluated"))
    assert main(["eval", "--gallery", str(g), "--queries", str(q), "--cache", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"cannot use --cache {path}: " in err[0], err
    assert (tmp_path / "not-sqlite").read_text() == "garbage"  # left as it was


@pytest.mark.model
def test_cli_eval_json_with_the_real_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    g, q = write_protocol(tmp_path)
    monkeypatch.chdir(tmp_path)
    args = ["eval", "--gallery", str(g), "--queries", str(q), "--json",
            "--cache", str(tmp_path / "c.sqlite")]
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["n_queries"] == 6 and out["n_gallery"] == 6
    assert out["model"].startswith("efficientnet-lite0-")
    assert out["embedded_images"] == 12
    for key in ("R@1", "R@5", "R@10", "mAP@R"):
        assert 0.0 <= out[key] <= 1.0
    assert out["R@10"] == 1.0  # 6 products: everything is in the top 10
    assert not list(tmp_path.glob("lookalike-eval-*"))
    # again: only searches; and the text report
    assert main([*args[:-3], "--cache", str(tmp_path / "c.sqlite")]) == 0
    text = capsys.readouterr().out
    assert "embedded 0 images" in text and "12 from cache" in text and "overall" in text
    # errors exit 2 with the reason
    (tmp_path / "q" / "red.png").unlink()
    assert main(args) == 2
    assert "query image(s) not found" in capsys.readouterr().err


def test_vectors_from_the_cache_are_the_stored_ones(tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path / "c.sqlite")
    v = np.arange(4, dtype=np.float32)
    cache.put_many("m1", [("h1", v)])
    assert np.array_equal(cache.get_many("m1", ["h1", "h2"])["h1"], v)
    assert cache.get_many("m2", ["h1"]) == {}  # another model version never hits


def test_eval_reranks_searches_by_geometry_as_the_search_api_does(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With a verifier reading the gallery's photos (``lookalike eval`` passes one unless
    ``LOOKALIKE_SEARCH__GEOMETRIC_RERANK=false``), each search is re-ranked by the geometry
    of its first products, as ``ProductSearch.by_images`` re-ranks it: each re-shot query's
    own catalog photo shares its print, and comes first, for either intent."""
    write_reshot_protocol(tmp_path)
    products = load_gallery(tmp_path / "gallery.jsonl")
    verifier = gallery_verifier(products, 10_000_000)
    checked: list[int] = []
    matches = verifier.keypoint_matches
    monkeypatch.setattr(verifier, "keypoint_matches",
                        lambda q, refs, copies=False: checked.append(len(refs))
                        or matches(q, refs, copies))
    plain = _run(tmp_path, TinyEmbedder(), None, "plain", cutout_queries=False,
                 window_queries=False)
    reranked = _run(tmp_path, TinyEmbedder(), None, "reranked", cutout_queries=False,
                    window_queries=False, verifier=verifier)
    assert checked == [5] * 5  # each query's first products (all five here) checked once
    assert reranked.summary.overall["R@1"] == 1.0
    assert plain.summary.overall["R@1"] < 1.0
    checked.clear()
    q = tmp_path / "queries.jsonl"
    store = MilvusStore.open(str(tmp_path / "similar.db"))
    try:
        similar = evaluate(products, load_queries(q, products), TinyEmbedder(), store,
                           CollectionSpec(name="similar", dim=TinyEmbedder().dim), None,
                           max_pixels=10_000_000, match="similar", verifier=verifier)
    finally:
        store.close()
    assert checked == [5] * 5 and similar.summary.overall["R@1"] == 1.0


def test_eval_searches_scene_photos_under_catalog_light(tmp_path: Path) -> None:
    """Re-shot queries taken under a dim, tinted light are also searched as
    ``search.scene.white_patch`` brings them back to catalog light (the shot, and the
    cut-out cut from it), as the search API searches them; ``light_queries=False`` only
    as taken."""
    paths = write_reshot_protocol(tmp_path)
    for path in paths:
        with Image.open(path) as shot:
            pixels = np.asarray(shot.convert("RGB"), dtype=np.float32)
        Image.fromarray((pixels * [0.7, 0.8, 0.62]).astype(np.uint8)).save(path)
    lit = _run(tmp_path, TinyEmbedder(), None, "lit", window_queries=False)
    taken = _run(tmp_path, TinyEmbedder(), None, "taken", window_queries=False,
                 light_queries=False)
    assert lit.embed.lit == lit.to_json()["lit_queries"] == 5 and taken.embed.lit == 0
    embedder = TinyEmbedder()
    catalog = embedder.embed([Image.open(tmp_path / "g" / f"{i}.png") for i in range(5)])
    rows = {light: embed_scene_queries(paths, embedder, None, max_pixels=10_000_000,
                                       stats=EmbedStats(), windows=False, light=light)
            for light in (True, False)}
    for i, path in enumerate(paths):  # the shot as taken, under catalog light, its cut-out
        shot = decode_image(path.read_bytes(), 10_000_000, min_size=embedder.decode_size)
        as_lit = embedder.embed([white_patch(shot)])[0]
        assert len(rows[True][i]) == len(rows[False][i]) + 1
        assert rows[True][i][0] == pytest.approx(rows[False][i][0], abs=1e-6)
        assert rows[True][i][1] == pytest.approx(as_lit, abs=1e-6)
        assert not np.allclose(rows[True][i][2], rows[False][i][1], atol=1e-3)
    # under catalog light the photos come nearer their catalog shots (on average: 4x4
    # thumbnails are mostly backdrop)
    nearest = {light: np.mean([np.max(rows[light][i] @ catalog[i]) for i in range(5)])
               for light in rows}
    assert nearest[True] > nearest[False]
    store = MilvusStore.open(str(tmp_path / "api.db"))
    try:
        spec = CollectionSpec(name="api", dim=embedder.dim)
        ensure_collections(store, spec)
        for light in (True, False):
            search = ProductSearch(store, spec, embedder, consistency="Strong",
                                   max_pixels=10_000_000, window_queries=False,
                                   light_queries=light)
            assert np.asarray(search.query_vectors([paths[0]])) == pytest.approx(
                rows[light][0], abs=1e-6)
    finally:
        store.close()


def test_eval_searches_snapshots_with_their_cut_outs_and_windows_as_the_search_api_does(
        tmp_path: Path) -> None:
    """A re-shot query is searched with its product cut out on white and with its windows
    too, as ``ProductSearch.by_image`` searches it (the same vectors, in the same order),
    and that finds the catalog photos on white more often than the shots alone (4x4
    thumbnails: the backdrop dominates a shot's)."""
    paths = write_reshot_protocol(tmp_path)
    cache = EmbeddingCache(tmp_path / "cache.sqlite")
    scene = _run(tmp_path, TinyEmbedder(), cache, "cut")
    cut_only = _run(tmp_path, TinyEmbedder(), None, "cutonly", window_queries=False)
    shots_only = _run(tmp_path, TinyEmbedder(), None, "shots", cutout_queries=False,
                      window_queries=False)
    assert scene.embed.cutouts == 5 and scene.embed.windows == 5
    assert cut_only.embed.cutouts == 5 and cut_only.embed.windows == 0
    assert shots_only.embed.cutouts == 0 and shots_only.embed.windows == 0
    assert scene.to_json()["cutout_queries"] == 5 and scene.to_json()["window_queries"] == 5
    assert cut_only.summary.overall["R@1"] > shots_only.summary.overall["R@1"]
    again = TinyEmbedder()  # the cut-outs' and windows' vectors come from the cache too
    assert _run(tmp_path, again, cache, "again").summary.overall == scene.summary.overall
    assert again.embedded == 0

    embedder = TinyEmbedder()
    store = MilvusStore.open(str(tmp_path / "api.db"))
    try:
        spec = CollectionSpec(name="api", dim=embedder.dim)
        ensure_collections(store, spec)
        search = ProductSearch(store, spec, embedder, consistency="Strong",
                               max_pixels=10_000_000)
        extra = embed_scene_queries(paths, embedder, None, max_pixels=10_000_000,
                                    stats=EmbedStats())
        for i, path in enumerate(paths):
            # the shot, under catalog light, its cut-out (and the front square-on, for a flat
            # face at an angle), ten windows: what the search API searches with
            vectors = search.query_vectors([path])
            assert len(vectors) == len(extra[i]) in (13, 14)
            assert np.asarray(vectors) == pytest.approx(extra[i], abs=1e-6)
        gallery_photo = tmp_path / "g" / "0.png"  # on white: searched with itself only
        assert len(search.query_vectors([gallery_photo])) == 1
        assert embed_scene_queries([gallery_photo], embedder, None, max_pixels=10_000_000,
                                   stats=EmbedStats()) == {}
    finally:
        store.close()


def test_figures_that_test_nothing_are_warned_of(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A query photo that is a gallery photo finds its own listing (R@1 1.0 by leak), and with
    10 products or fewer R@10 is 1.0 whatever the ranking: both were printed without a word.
    A warning each; the run goes on."""
    g, q = write_protocol(tmp_path)
    # the gallery's own photo, under another name: the same bytes find the same listing
    (tmp_path / "q" / "copy-of-red.png").write_bytes((tmp_path / "g" / "red.png").read_bytes())
    _append(q, {"image": "q/copy-of-red.png", "relevant": ["p-red"]})
    class Evaluated(BaseException):
        """The warnings are said before the evaluation, which this test does not need."""

    def evaluate(*_args: Any) -> None:
        raise Evaluated

    monkeypatch.setattr("lookalike.evaluate._evaluate", evaluate)
    with caplog.at_level("WARNING"), pytest.raises(Evaluated):
        main(["eval", "--gallery", str(g), "--queries", str(q), "--no-cache"])
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("1 of 7 queries search with a photo of the gallery itself" in w for w in warned)
    assert any("the gallery has 6 products: R@10 counts every one of them and is 1.0" in w
               for w in warned)
    # five products: R@5 is as empty as R@10
    g.write_text("".join(g.read_text().splitlines(keepends=True)[:5]))
    q.write_text("".join(q.read_text().splitlines(keepends=True)[:5]))
    caplog.clear()
    with caplog.at_level("WARNING"), pytest.raises(Evaluated):
        main(["eval", "--gallery", str(g), "--queries", str(q), "--no-cache"])
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("the gallery has 5 products: R@5 and R@10 count every one of them and are 1.0"
               in w for w in warned), warned
    assert not any("photo of the gallery itself" in w for w in warned)


def _warnings_before_the_evaluation(monkeypatch: pytest.MonkeyPatch,
                                    caplog: pytest.LogCaptureFixture, *args: str) -> list[str]:
    """The warnings ``lookalike eval ARGS`` says before it evaluates (which is not run)."""
    class Evaluated(BaseException):
        pass

    def evaluate(*_args: Any) -> None:
        raise Evaluated

    monkeypatch.setattr("lookalike.evaluate._evaluate", evaluate)
    caplog.clear()
    with caplog.at_level("WARNING"), pytest.raises(Evaluated):
        main(["eval", *args, "--no-cache"])
    return [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]


def test_figures_that_are_one_by_construction_are_all_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A query for which every gallery product is relevant scored 1.0 on every figure without
    a word; a one-product gallery was warned of for R@5 and R@10 only, though R@1 and mAP@R
    are 1.0 too; and same-item's self-photo warning spoke of R@1, which it has not."""
    g, q = write_protocol(tmp_path)
    everything = [f"p-{name}" for name in COLOURS]
    _append(q, {"image": "q/red.png", "relevant": everything})
    _append(q, {"image": "q/blue.png", "relevant": [*everything, "p-unknown"]})
    args = ("--gallery", str(g), "--queries", str(q))
    warned = _warnings_before_the_evaluation(monkeypatch, caplog, *args)
    assert ("eval: 2 of 8 queries count every gallery product relevant: every figure is 1.0 "
            "by construction for them") in warned, warned
    # one product: every figure, and no second warning saying the same of each query
    g.write_text(g.read_text().splitlines(keepends=True)[0])
    q.write_text(q.read_text().splitlines(keepends=True)[0])
    warned = _warnings_before_the_evaluation(monkeypatch, caplog, *args)
    assert warned == ["eval: the gallery has 1 product: every search returns it first, so "
                      "R@1, R@5, R@10 and mAP@R are 1.0 by construction"], warned
    # same-item has no R@1: its self-photo is an easy match (and no recall@k warnings)
    (tmp_path / "q" / "red.png").write_bytes((tmp_path / "g" / "red.png").read_bytes())
    warned = _warnings_before_the_evaluation(monkeypatch, caplog, *args, "--task", "same-item")
    assert warned == ["eval: 1 of 1 queries search with a photo of the gallery itself: they "
                      "find it (an easy match), not another photo of the item"], warned
    warned = _warnings_before_the_evaluation(monkeypatch, caplog, *args)
    assert any("(an easy R@1)" in w for w in warned), warned


def test_ids_may_be_integers_and_category_type_and_file_urls_lenient(tmp_path: Path) -> None:
    """What catalogs write that eval refused (exit 2): integer ids (in the gallery and in
    ``relevant``, also one id alone), no category (or null, or empty: the placeholder), a
    ``type`` that is a product attribute, and ``file://`` photo references. A float or a
    boolean id is still refused, and so is a URL of another scheme."""
    g, q = write_protocol(tmp_path)
    red = (tmp_path / "g" / "red.png").resolve()
    _append(g, {"product_id": 17, "images": [f"file://{red}"], "type": "hoodie"})
    _append(g, {"product_id": 18, "category": None, "images": ["g/red.png"]})
    _append(g, {"product_id": "19", "category": " ", "images": ["g/red.png"],
                "type": "product.upserted"})
    _append(q, {"image": f"file://localhost{red}", "relevant": [17, "p-red"]})
    _append(q, {"image": "q/red.png", "relevant": 18})
    _append(q, {"image": "q/red.png", "relevant": "p-red"})
    products = load_gallery(g)
    last = {p.product_id: p for p in products[-3:]}
    assert set(last) == {"17", "18", "19"}
    assert {p.category for p in last.values()} == {UNCATEGORIZED} == {"uncategorized"}
    assert last["17"].images == (red,) and last["17"].where == f"{g}:7"
    queries = load_queries(q, products)
    assert [(query.relevant, query.category) for query in queries[-3:]] == [
        (frozenset({"17", "p-red"}), UNCATEGORIZED), (frozenset({"18"}), UNCATEGORIZED),
        (frozenset({"p-red"}), "Warm")]
    assert queries[-3].images == (red,) and queries[-1].where == f"{q}:9"
    _append(g, {"product_id": 20, "category": "A", "images": ["https://x.test/a.jpg"]})
    with pytest.raises(ProtocolError, match=r"gallery.jsonl:10: image 'https://x\.test/a\.jpg' "
                                            "is a URL; this command reads local files only"):
        load_gallery(g)


def test_relevant_ids_not_in_the_gallery_are_dropped_with_a_warning(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """An unknown relevant id was exit 2; it is a warning naming the line and the id, and
    the query keeps the others (or none: a negative query)."""
    g, q = write_protocol(tmp_path)
    _append(q, {"image": "q/red.png", "relevant": ["p-red", "p-nope", 404]})
    _append(q, {"image": "q/blue.png", "relevant": ["p-gone"]})
    _append(q, {"image": "q/blue.png"})
    with caplog.at_level("WARNING"):
        queries = load_queries(q, load_gallery(g))
    assert [query.relevant for query in queries[-3:]] == [
        frozenset({"p-red"}), frozenset(), frozenset()]
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warned) == 2
    assert f"{q}:7: relevant product(s) not in the gallery, dropped: 'p-nope', '404'" in warned[0]
    assert f"{q}:8:" in warned[1] and "none left" in warned[1]


def test_unreadable_photos_are_skipped_one_warning_each(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A photo that cannot be decoded stopped the whole run, naming no line. Now: a gallery
    photo is left out of the index (its product with it, when it has no other, and its
    query then cannot find it), a query is not scored; a warning each naming the catalog
    line and the reason, and the report counts the skipped queries and says why, as does a
    retrieval query with no relevant product."""
    g, q = write_protocol(tmp_path)
    (tmp_path / "g" / "red.png").write_bytes(b"not an image at all")  # gallery line 1
    (tmp_path / "q" / "blue.png").write_bytes(b"")  # queries line 3
    (tmp_path / "q" / "green.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)  # line 2
    _append(q, {"image": "q/yellow.png", "relevant": []})  # line 7: a negative query
    with caplog.at_level("WARNING"):
        report = _run(tmp_path, TinyEmbedder(), None, "skips")
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert sum(f"{g}:1: image {tmp_path / 'g' / 'red.png'}: unsupported_format" in w and
               "product 'p-red' has no readable image and is not indexed: queries naming it "
               "cannot find it" in w for w in warned) == 1
    assert sum(f"{q}:3: image {tmp_path / 'q' / 'blue.png'}: corrupt_image: empty image data: "
               "the query is not scored" in w for w in warned) == 1
    assert sum(f"{q}:2: image" in w and "the query is not scored" in w for w in warned) == 1
    assert sum(f"{q}:7: no relevant product in the gallery: not scored" in w
               for w in warned) == 1
    assert [(s.where, s.reason) for s in report.skipped] == [
        (f"{q}:2", "unsupported_format"), (f"{q}:3", "corrupt_image"),
        (f"{q}:7", "no_relevant_product")]
    assert report.summary.n_queries == 4  # red, yellow, black, purple
    # red's query is scored, and cannot find its product (left out): 3 of 4 at rank 1
    assert report.summary.overall["R@1"] == pytest.approx(0.75)
    assert report.n_gallery == 6 and report.n_gallery_images == 5
    assert (report.embed.unreadable, report.embed.left_out) == (3, 1)
    out = report.to_json()
    assert out["n_queries_skipped"] == 3 and out["n_queries"] == 4
    assert out["skipped"][1] == {"query": f"{q}:3", "reason": "corrupt_image",
                                 "detail": f"image {tmp_path / 'q' / 'blue.png'}: "
                                           "corrupt_image: empty image data"}
    assert (out["unreadable_images"], out["products_left_out"]) == (3, 1)


def test_cli_eval_skips_unreadable_photos_unless_strict(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Through the command: the text and ``--json`` reports count the skipped queries and
    why, exit 0; ``--strict`` stops at the first bad photo, exit 2, naming its line."""
    g, q = write_protocol(tmp_path)
    blue = tmp_path / "q" / "blue.png"
    blue.write_bytes(blue.read_bytes()[:80])  # a truncated photo
    monkeypatch.setattr("lookalike.evaluate.build_embedder", lambda settings: TinyEmbedder())
    monkeypatch.chdir(tmp_path)
    base = ["eval", "--gallery", str(g), "--queries", str(q), "--no-cache"]
    assert main(base) == 0
    text = capsys.readouterr().out
    assert "1 queries skipped, not scored (1 corrupt_image; the warnings name their lines)" in (
        text), text
    assert "queries 5;" in text and "1 unreadable" in text
    assert main([*base, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["n_queries"], out["n_queries_skipped"]) == (5, 1)
    assert out["skipped"][0]["query"] == f"{q}:3"
    assert main([*base, "--strict"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{q}:3: image " in err[0] and "corrupt_image" in err[0], err


def test_repeated_photos_are_not_cache_hits_and_count_once(tmp_path: Path) -> None:
    """A photo listed twice was counted "from cache" even with no cache, and twice among the
    gallery's images: it is "repeated", and one row."""
    g, _ = write_protocol(tmp_path)
    lines = g.read_text().splitlines()
    first = json.loads(lines[0])
    first["images"] = ["g/red.png", "g/red.png"]
    g.write_text("\n".join([json.dumps(first), *lines[1:]]) + "\n")
    report = _run(tmp_path, TinyEmbedder(), None, "repeats")
    assert (report.embed.cached, report.embed.repeated, report.embed.embedded) == (0, 1, 12)
    assert report.n_gallery_images == 6
    assert report.to_json()["repeated_images"] == 1
    assert report.summary.overall["R@1"] == 1.0
    cache = EmbeddingCache(tmp_path / "c.sqlite")
    _run(tmp_path, TinyEmbedder(), cache, "fill")
    again = _run(tmp_path, TinyEmbedder(), cache, "hits")  # repeated whatever the cache holds
    assert (again.embed.cached, again.embed.repeated, again.embed.embedded) == (12, 1, 0)


def test_a_query_with_more_relevant_products_than_searched_is_warned_of(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """mAP@R was silently computed over the first MAX_K products when R is larger."""
    monkeypatch.setattr("evaluation.run.MAX_K", 3)
    _, q = write_protocol(tmp_path)
    _append(q, {"image": "q/red.png", "relevant": [f"p-{n}" for n in COLOURS]})
    with caplog.at_level("WARNING"):
        _run(tmp_path, TinyEmbedder(), None, "capped", cutout_queries=False,
             window_queries=False, light_queries=False)
    warned = [r.getMessage() for r in caplog.records if "more than 3 relevant" in r.getMessage()]
    assert warned == ["eval: 1 of 7 queries have more than 3 relevant products: their mAP@R is "
                      "computed over the first 3 products the search returns (at most 3)"]


def test_long_category_names_stay_distinguishable(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Names were cut at 36 characters, so two long categories printed alike."""
    from lookalike.evaluate import print_report

    g, _ = write_protocol(tmp_path)
    long = "Women/Accessories/Very long category name number "
    lines = [json.loads(line) for line in g.read_text().splitlines()]
    for i, line in enumerate(lines):
        line["category"] = f"{long}{i % 2 + 1}"
    g.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    print_report(_run(tmp_path, TinyEmbedder(), None, "long"))
    rows = capsys.readouterr().out.splitlines()
    assert any(row.startswith(f"{long}1 ") for row in rows)
    assert any(row.startswith(f"{long}2 ") for row in rows)
    header = next(row for row in rows if "R@1" in row)
    assert len({row.index("1.000") for row in rows if "1.000" in row}) == 1
    assert header.index("R@1") + 3 == rows[-1].index("1.000") + 5
