"""bench/protocols.py writes evaluation protocols whose paths, ids and splits hold together."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageOps

from tests.fakes import load_bench_module

protocols = load_bench_module("protocols")


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_fmnist_holds_queries_out_and_relates_them_to_their_class(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, size=(60, 28, 28), dtype=np.uint8)
    labels = np.arange(60, dtype=np.uint8) % 3
    gallery_path, queries_path = protocols.write_fmnist(
        tmp_path / "fmnist", seed=1, n_queries=6, images=images, labels=labels)
    gallery, queries = read_jsonl(gallery_path), read_jsonl(queries_path)
    assert len(gallery) == 54 and len(queries) == 6

    index_of = {p["product_id"]: int(p["product_id"].split("-")[1]) for p in gallery}
    category_of = {p["product_id"]: p["category"] for p in gallery}
    gallery_images = {img for p in gallery for img in p["images"]}
    assert all(p["title"] is None and p["price"] is None and p["currency"] is None
               for p in gallery)
    for query in queries:
        assert query["image"] not in gallery_images
        query_index = int(Path(query["image"]).stem.split("-")[1])
        same_class = {pid for pid, i in index_of.items() if labels[i] == labels[query_index]}
        assert set(query["relevant"]) == same_class
        assert {category_of[pid] for pid in query["relevant"]} == {query["category"]}

    base = queries_path.parent
    for rel in [q["image"] for q in queries] + sorted(gallery_images):
        index = int(Path(rel).stem.split("-")[1])
        with Image.open(base / rel) as png:
            np.testing.assert_array_equal(np.asarray(png), 255 - images[index])


def test_fmnist_split_is_fixed_by_the_seed(tmp_path: Path) -> None:
    images = np.zeros((40, 28, 28), dtype=np.uint8)
    labels = np.arange(40, dtype=np.uint8) % 2

    def query_images(folder: str, seed: int) -> list[str]:
        _, queries_path = protocols.write_fmnist(tmp_path / folder, seed=seed, n_queries=5,
                                                 images=images, labels=labels)
        return [q["image"] for q in read_jsonl(queries_path)]

    assert query_images("a", 0) == query_images("b", 0) != query_images("c", 1)


def test_luma_default_is_beside_the_checkout_not_the_current_directory() -> None:
    repo = Path(__file__).resolve().parents[1]  # shared/ may be a link (it is in CI dry runs)
    assert repo.parent / "shared" / "data" / "luma" == protocols.LUMA


@pytest.mark.parametrize(("script", "argv", "names"), [
    ("protocols", [], "luma-views, luma-multiview"),
    ("protocols", ["--only", "luma-snapshots"], "luma-snapshots needs"),
    ("protocols_same_item", [], "same-item-dev"),
    ("protocols_same_item", ["--only", "same-item-tags"], "same-item-tags needs"),
    ("protocols_reshoot", ["--only", "same-item-relit"], "same-item-relit needs"),
])
def test_a_protocol_asked_for_without_its_luma_data_is_exit_2_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], script: str, argv: list[str],
    names: str,
) -> None:
    """From a clone with no ``shared/`` beside it, the default ``--luma`` holds nothing: the
    protocols asked for are not silently skipped (the eval after them would read no file)."""
    out, luma = tmp_path / "out", tmp_path / "no-luma"
    assert load_bench_module(script).main(["--out", str(out), "--luma", str(luma), *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and names in err[0]
    assert str(luma / "catalog.jsonl") in err[0] and "--luma DIR" in err[0]
    assert not out.exists()


def test_a_protocol_that_needs_no_luma_data_is_written_without_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    reshoot = load_bench_module("protocols_reshoot")
    written: list[Path] = []

    def write_plain(out: Path) -> tuple[Path, Path]:  # the real one takes a minute
        written.append(out)
        return out / "gallery.jsonl", out / "queries.jsonl"

    monkeypatch.setattr(reshoot, "write_plain", write_plain)
    assert reshoot.main(["--out", str(tmp_path), "--luma", str(tmp_path / "no-luma"),
                         "--only", "same-item-plain"]) == 0
    assert written == [tmp_path / "same-item-plain"]
    assert "Luma" not in capsys.readouterr().err


@pytest.mark.luma
def test_luma_views_matches_the_catalog_and_resolves_every_path(
    luma_dir: Path, tmp_path: Path
) -> None:
    variants = read_jsonl(luma_dir / "catalog.jsonl")
    with_main = [v for v in variants if any(i["view"] == "main" for i in v["images"])]
    n_queries = sum(1 for v in with_main for i in v["images"] if i["view"] != "main")

    out = tmp_path / "deeper" / "luma-views"
    gallery_path, queries_path = protocols.write_luma_views(luma_dir, out)
    gallery, queries = read_jsonl(gallery_path), read_jsonl(queries_path)
    assert len(gallery) == len(with_main) and len(queries) == n_queries

    category_of = {p["product_id"]: p["category"] for p in gallery}
    for query in queries:
        assert query["relevant"] and all(pid in category_of for pid in query["relevant"])
        assert query["category"] == category_of[query["relevant"][0]]
    paths = [img for p in gallery for img in p["images"]] + [q["image"] for q in queries]
    assert all(not Path(rel).is_absolute() and (out / rel).is_file() for rel in paths)


def test_snapshot_puts_the_product_on_clutter_and_is_seeded() -> None:
    photo = Image.new("RGB", (300, 400), (255, 255, 255))
    photo.paste((200, 20, 20), (80, 80, 220, 320))  # a red product on studio white
    a = protocols.snapshot(photo, np.random.default_rng(3), size=240)
    b = protocols.snapshot(photo, np.random.default_rng(3), size=240)
    assert a.size == (240, 240) and np.array_equal(np.asarray(a), np.asarray(b))
    pixels = np.asarray(a).reshape(-1, 3).astype(int)
    near_white = (pixels.min(axis=1) > 235).mean()
    reddish = ((pixels[:, 0] > 120) & (pixels[:, 1] < 80) & (pixels[:, 2] < 80)).mean()
    assert near_white < 0.05  # the white studio background was cut away
    assert reddish > 0.05  # the product is still there


def test_luma_snapshots_keep_the_gallery_and_write_one_image_per_query(
    luma_dir: Path, tmp_path: Path
) -> None:
    views_out, snaps_out = tmp_path / "luma-views", tmp_path / "luma-snapshots"
    views_gallery, views_queries = protocols.write_luma_views(luma_dir, views_out)
    gallery_path, queries_path = protocols.write_luma_snapshots(luma_dir, snaps_out, seed=0)
    gallery, queries = read_jsonl(gallery_path), read_jsonl(queries_path)
    expected = [g["product_id"] for g in read_jsonl(views_gallery)]
    assert [g["product_id"] for g in gallery] == expected
    originals = read_jsonl(views_queries)
    assert [q["relevant"] for q in queries] == [q["relevant"] for q in originals]
    for query in queries:
        path = snaps_out / query["image"]
        assert path.is_file() and path.parent == snaps_out / "images"
        with Image.open(path) as image:
            assert image.size == (protocols.SNAPSHOT_SIZE, protocols.SNAPSHOT_SIZE)


def test_luma_multiview_groups_the_views_of_each_variant(luma_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "luma-multiview"
    gallery_path, queries_path = protocols.write_luma_multiview(luma_dir, out)
    multi, single = read_jsonl(queries_path), read_jsonl(out / "queries-single.jsonl")
    assert multi and all(len(q["images"]) >= 2 and len(q["relevant"]) == 1 for q in multi)
    assert len({q["relevant"][0] for q in multi}) == len(multi)  # one query per variant
    assert sorted(p for q in multi for p in q["images"]) == sorted(q["image"] for q in single)
    gallery_ids = {g["product_id"] for g in read_jsonl(gallery_path)}
    assert all(q["relevant"][0] in gallery_ids for q in multi)
    assert all((out / p).is_file() for q in multi for p in q["images"])


def test_luma_colours_holds_each_query_variant_out_and_relates_its_other_colours(
    luma_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "luma-colours"
    gallery_path, queries_path = protocols.write_luma_colours(luma_dir, out, seed=0)
    gallery, queries = read_jsonl(gallery_path), read_jsonl(queries_path)
    catalog = read_jsonl(luma_dir / "catalog.jsonl")
    style_of = {v["product_id"]: v["group_id"] for v in catalog}
    in_gallery = {g["product_id"] for g in gallery}
    assert queries
    for query in queries:
        # the query's own colour is held out (a photo file may serve two variants)...
        own, = (v["product_id"] for v in catalog if v["product_id"] not in in_gallery
                and Path(query["image"]).name in {Path(i["path"]).name for i in v["images"]})
        assert set(query["relevant"]) == {  # ...and every other colour of its style is relevant
            pid for pid, style in style_of.items()
            if style == style_of[own] and pid != own and pid in in_gallery}


def test_luma_colours_snapshots_are_the_luma_colours_queries_as_snapshots(
    luma_dir: Path, tmp_path: Path
) -> None:
    """The cross-colour scene protocol: luma-colours' gallery and relevant colours, each query
    photo a seeded snapshot (as luma-snapshots makes them)."""
    colours_gallery, colours_queries = protocols.write_luma_colours(
        luma_dir, tmp_path / "luma-colours", seed=0)
    out = tmp_path / "luma-colours-snapshots"
    gallery_path, queries_path = protocols.write_luma_colours_snapshots(luma_dir, out, seed=0)
    assert read_jsonl(gallery_path) == read_jsonl(colours_gallery)  # same folder depth
    originals, queries = read_jsonl(colours_queries), read_jsonl(queries_path)
    assert [(q["relevant"], q["category"]) for q in queries] == [
        (q["relevant"], q["category"]) for q in originals]
    for query, original in zip(queries, originals, strict=True):
        path = out / query["image"]
        assert path.parent == out / "images"
        assert path.name == f"{Path(original['image']).stem}_snapshot.jpg"
        with Image.open(path) as image:
            assert image.size == (protocols.SNAPSHOT_SIZE, protocols.SNAPSHOT_SIZE)


def test_same_item_fmnist_relates_each_query_to_every_listing_of_its_article(
    tmp_path: Path
) -> None:
    same_item = load_bench_module("protocols_same_item")
    rng = np.random.default_rng(4)
    images = rng.integers(0, 256, size=(80, 28, 28), dtype=np.uint8)
    labels = np.arange(80, dtype=np.uint8) % 10
    gallery_path, queries_path = same_item.write_fmnist_listings(
        tmp_path, n_items=60, n_queries=20, images=images, labels=labels)
    gallery, queries = read_jsonl(gallery_path), read_jsonl(queries_path)
    listings_of: dict[str, set[str]] = {}
    for listing in gallery:
        listings_of.setdefault(listing["item"], set()).add(listing["product_id"])
        assert (tmp_path / listing["images"][0]).is_file() and listing["seller_id"]
    assert len(queries) == 20
    for query in queries:
        item = "fmnist-" + Path(query["image"]).stem.split("-")[1]
        assert set(query["relevant"]) == listings_of[item]


def test_edit_recipes_change_the_photo_and_no_two_sets_share_one() -> None:
    """Dev, held-out, blind, fresh, covers and tags recipes: each changes a photo, none is in
    two sets; a covers edit lays at least one cover over the product; a tags edit always
    ends with the re-listing's crop or pad and re-encode, most with a sale graphic."""
    same_item = load_bench_module("protocols_same_item")
    photo = Image.new("RGB", (200, 240), "white")
    photo.paste((30, 60, 200), (40, 40, 160, 200))
    photo.paste((200, 60, 30), (40, 40, 80, 100))  # not mirror-symmetric
    ramp = np.linspace(0, 255, 120, dtype=np.uint8)  # many colours: a palette must show
    photo.paste(Image.fromarray(np.stack([ramp, ramp[::-1], ramp], axis=1)[None].repeat(
        30, axis=0), "RGB"), (40, 160))
    sets = (same_item.DEV_SINGLE, same_item.HELDOUT_SINGLE, same_item.BLIND_SINGLE,
            same_item.FRESH_SINGLE, same_item.COVERS_SINGLE, same_item.TAGS_SINGLE)
    names = [{e.__name__ for e in recipes} for recipes in sets]
    assert sum(map(len, names)) == len(set().union(*names))  # no recipe in two sets
    for edit in (edit for recipes in sets for edit in recipes):
        out = edit(photo, np.random.default_rng(0)).convert("RGB")
        same_size = out.size == photo.size
        assert not same_size or not np.array_equal(np.asarray(out), np.asarray(photo)), edit
    covers = {e.__name__ for e in same_item.COVERS_SINGLE[:4]}
    for seed in range(10):
        out, names = same_item.random_edit(same_item.COVERS_SINGLE, photo,
                                           np.random.default_rng(seed))
        assert covers & set(names.split("+")), names
        assert not np.array_equal(np.asarray(out.resize(photo.size)), np.asarray(photo))
    graphics = {e.__name__ for e in same_item.TAGS_SINGLE[:4]}
    chains = [same_item.random_edit(same_item.TAGS_SINGLE, photo, np.random.default_rng(seed))[1]
              for seed in range(20)]
    assert all(chain.split("+")[-1] == "relist" for chain in chains), chains
    assert sum(bool(graphics & set(chain.split("+"))) for chain in chains) >= 14, chains


def test_same_item_luma_relates_each_query_to_every_listing_of_its_item(tmp_path: Path) -> None:
    """Three variants shown by one identical photo (a strap in three lengths) are one item:
    a query for any of them must list every listing of all three (it once missed the third)."""
    same_item = load_bench_module("protocols_same_item")
    luma = tmp_path / "luma"
    (luma / "images").mkdir(parents=True)
    strap = Image.new("RGB", (120, 160), "white")
    strap.paste((30, 60, 200), (30, 20, 90, 140))
    strap.save(luma / "images/strap.jpg")
    other = Image.new("RGB", (120, 160), "white")
    other.paste((200, 60, 30), (10, 60, 70, 100))  # not mirror-symmetric
    other.save(luma / "images/mat.jpg")
    rows = [{"product_id": f"strap-{n}", "group_id": "strap", "category": "Gear",
             "color": "blue", "images": [{"view": "main", "path": "images/strap.jpg"}]}
            for n in (6, 8, 10)]
    rows.append({"product_id": "mat", "group_id": "mat", "category": "Gear", "color": "red",
                 "images": [{"view": "main", "path": "images/mat.jpg"}]})
    (luma / "catalog.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    gallery_path, queries_path, _ = same_item.write_luma_listings(
        luma, tmp_path / "out", same_item.DEV_SINGLE, seed=3, n_queries=4)
    gallery, queries = read_jsonl(gallery_path), read_jsonl(queries_path)
    listings_of: dict[str, set[str]] = {}
    for listing in gallery:
        listings_of.setdefault(listing["item"], set()).add(listing["product_id"])
    assert len(listings_of) == 2 and len(queries) == 4
    for query in queries:
        item = next(g["item"] for g in gallery if g["product_id"] == query["relevant"][0])
        assert set(query["relevant"]) == listings_of[item]
    # same-item-mirrored: the same draws, every edited copy flipped (the mat is not symmetric)
    _, mirrored_path, _ = same_item.write_luma_listings(
        luma, tmp_path / "mirrored", same_item.DEV_SINGLE, seed=3, n_queries=4, mirrored=True)
    flipped_mats = 0
    for plain, flipped in zip(queries, read_jsonl(mirrored_path), strict=True):
        assert flipped["edit"] == "mirror+" + plain["edit"]
        assert flipped["relevant"] == plain["relevant"]
        with Image.open(tmp_path / "out" / plain["image"]) as a, \
                Image.open(tmp_path / "mirrored" / flipped["image"]) as b:
            as_is = np.asarray(a.convert("RGB"), np.float32)
            mirrored = np.asarray(ImageOps.mirror(b.convert("RGB")), np.float32)
        assert as_is.shape == mirrored.shape
        assert np.abs(as_is - mirrored).mean() < 4.0  # the same edit; JPEG aside
        if np.abs(as_is - as_is[:, ::-1]).mean() > 4.0:  # the mat's photo, not symmetric
            assert np.abs(as_is - mirrored[:, ::-1]).mean() > 4.0  # flipped, not as it is
            flipped_mats += 1
    assert flipped_mats


def test_reshoot_keeps_the_product_and_changes_everything_around_it() -> None:
    """A simulated re-shoot: a new background (no white frame left), another size, seeded."""
    reshoot = load_bench_module("protocols_reshoot")
    photo = Image.new("RGB", (200, 240), "white")
    photo.paste((30, 60, 200), (40, 40, 160, 200))
    photo.paste((240, 240, 240), (70, 80, 130, 120))  # a pale label inside stays product
    out = reshoot.reshoot(photo, np.random.default_rng(0), 300, 320)
    again = reshoot.reshoot(photo, np.random.default_rng(0), 300, 320)
    assert np.array_equal(np.asarray(out), np.asarray(again))
    pixels = np.asarray(out, dtype=np.float32)
    assert 250 <= max(out.size) <= 400
    corners = pixels[[0, 0, -1, -1], [0, -1, 0, -1]]
    assert np.abs(corners - 255).max(axis=1).min() > 12  # the white backdrop is gone
    cy, cx = out.height // 2, out.width // 2
    centre = pixels[cy - 10:cy + 10, cx - 10:cx + 10].mean(axis=(0, 1))
    assert centre[2] > centre[0] + 40  # still the blue item


def test_specular_highlights_whiten_part_of_the_frame_towards_white() -> None:
    """same-item-glare's highlights: seeded; some pixels blended most of the way to white,
    most of the frame untouched, and nothing darkened."""
    reshoot = load_bench_module("protocols_reshoot")
    rgb = np.full((300, 400, 3), (40.0, 80.0, 160.0))
    out = reshoot._specular(rgb, np.random.default_rng(2))
    assert np.array_equal(out, reshoot._specular(rgb, np.random.default_rng(2)))
    alpha = ((out - rgb) / (255 - rgb)).min(axis=2)
    assert alpha.min() >= 0 and alpha.max() >= 0.6
    assert 0.002 < (alpha > 0.05).mean() < 0.2
    photo = Image.fromarray(rgb.astype(np.uint8))
    glared = reshoot.glare_edit(photo, np.random.default_rng(0))
    assert glared.size != photo.size  # a whole re-shoot, highlights and all


def test_packs_relate_each_query_to_every_listing_of_its_pack(tmp_path: Path) -> None:
    reshoot = load_bench_module("protocols_reshoot")
    gallery_path, queries_path = reshoot.write_packs(tmp_path, n_brands=2, n_queries=5)
    gallery, queries = read_jsonl(gallery_path), read_jsonl(queries_path)
    listings_of: dict[str, set[str]] = {}
    for listing in gallery:
        listings_of.setdefault(listing["item"], set()).add(listing["product_id"])
        assert (tmp_path / listing["images"][0]).is_file()
    assert len(listings_of) == 2 * 3 * 3 and len(queries) == 5
    for query in queries:
        assert (tmp_path / query["image"]).is_file()
        assert set(query["relevant"]) == listings_of[Path(query["image"]).stem]


def test_packs_vivid_queries_are_the_makers_photos_made_vivid(tmp_path: Path) -> None:
    reshoot = load_bench_module("protocols_reshoot")
    reshoot.write_packs(tmp_path / "packs", n_brands=2, n_queries=6)
    gallery_path, queries_path = reshoot.write_pack_vivid(tmp_path / "packs", tmp_path / "vivid")
    gallery, queries = read_jsonl(gallery_path), read_jsonl(queries_path)
    assert len(gallery) == len(read_jsonl(tmp_path / "packs" / "gallery.jsonl"))
    assert len(queries) == 3  # every other query of the packs protocol
    for query in queries:
        item = query["relevant"][0]
        assert query["edit"].startswith("vivid saturation")
        photo = Image.open(tmp_path / "vivid" / query["image"]).convert("RGB")
        maker = Image.open(tmp_path / "packs" / "images" / f"{item}.jpg").convert("RGB")
        assert photo.width == int(maker.width * 0.8)
        saturation = np.asarray(photo.convert("HSV"))[..., 1].mean()
        assert saturation > np.asarray(maker.convert("HSV"))[..., 1].mean()


def test_packs_instore_is_one_catalog_photo_per_item_against_its_in_store_photos(
        tmp_path: Path) -> None:
    reshoot = load_bench_module("protocols_reshoot")
    reshoot.write_packs(tmp_path / "packs", n_brands=2, n_queries=6)
    gallery_path, queries_path = reshoot.write_packs_instore(tmp_path / "packs",
                                                             tmp_path / "instore")
    gallery, queries = read_jsonl(gallery_path), read_jsonl(queries_path)
    makers = [row for row in read_jsonl(tmp_path / "packs" / "gallery.jsonl")
              if row["seller_id"] == "maker"]
    assert [row["product_id"] for row in gallery] == [row["item"] for row in makers]
    assert len(gallery) == 2 * 3 * 3  # one catalog photo per item, no other shops
    lines = {row["category"] for row in gallery}
    assert len(lines) >= 2 and all(c.startswith("Grocery/Packs/") for c in lines)
    for row in gallery:
        assert row["category"].removeprefix("Grocery/Packs/") in row["title"]
        assert (tmp_path / "instore" / row["images"][0]).is_file()
    originals = read_jsonl(tmp_path / "packs" / "queries.jsonl")
    assert len(queries) == len(originals) == 6
    for query, original in zip(queries, originals, strict=True):
        assert query["relevant"] == [original["relevant"][0]]  # the item itself
        assert (tmp_path / "instore" / query["image"]).resolve() == (
            tmp_path / "packs" / original["image"]).resolve()


def test_packs_turned_queries_are_the_in_store_photos_saved_sideways(tmp_path: Path) -> None:
    reshoot = load_bench_module("protocols_reshoot")
    reshoot.write_packs(tmp_path / "packs", n_brands=2, n_queries=6)
    gallery_path, queries_path = reshoot.write_pack_turned(tmp_path / "packs",
                                                           tmp_path / "turned")
    gallery, queries = read_jsonl(gallery_path), read_jsonl(queries_path)
    assert len(gallery) == len(read_jsonl(tmp_path / "packs" / "gallery.jsonl"))
    originals = read_jsonl(tmp_path / "packs" / "queries.jsonl")[1::2]  # the other half
    assert [q["relevant"] for q in queries] == [q["relevant"] for q in originals]
    for query, original in zip(queries, originals, strict=True):
        turn = query["edit"].removeprefix("reshoot turned ").removesuffix(" deg")
        assert turn in ("90", "270")
        photo = Image.open(tmp_path / "turned" / query["image"]).convert("RGB")
        shot = Image.open(tmp_path / "packs" / original["image"]).convert("RGB")
        assert photo.size == (shot.height, shot.width)  # sideways
        back = photo.transpose(Image.Transpose.ROTATE_90 if turn == "270"
                               else Image.Transpose.ROTATE_270)
        assert np.abs(np.asarray(back, np.float32) - np.asarray(shot, np.float32)).mean() < 4


def test_a_reshoot_under_a_lamp_lights_the_product_another_way(tmp_path: Path) -> None:
    """same-item-relit's light: seeded, the backdrop swapped as in any re-shoot, and the
    light uneven in another way than the ramp's (a fall-off and a glare: the product's
    brightness varies across it); same-item-packs-relit re-shoots every other query's maker
    photo so, against the packs gallery."""
    reshoot = load_bench_module("protocols_reshoot")
    photo = Image.new("RGB", (200, 240), "white")
    photo.paste((150, 150, 150), (40, 40, 160, 200))
    out = reshoot.reshoot(photo, np.random.default_rng(1), 300, 320, light="lamp")
    again = reshoot.reshoot(photo, np.random.default_rng(1), 300, 320, light="lamp")
    ramp = reshoot.reshoot(photo, np.random.default_rng(1), 300, 320)
    assert np.array_equal(np.asarray(out), np.asarray(again))
    assert not np.array_equal(np.asarray(out), np.asarray(ramp))
    pixels = np.asarray(out.convert("L"), dtype=np.float32)
    corners = pixels[[0, 0, -1, -1], [0, -1, 0, -1]]
    assert np.abs(corners - 255).min() > 12  # the white backdrop is gone
    cy, cx = out.height // 2, out.width // 2
    middle = pixels[cy - 40:cy + 40, cx - 25:cx + 25]  # the flat grey product, lit unevenly
    assert np.ptp(middle) > 15
    reshoot.write_packs(tmp_path / "packs", n_brands=2, n_queries=6)
    gallery_path, queries_path = reshoot.write_pack_relit(tmp_path / "packs",
                                                          tmp_path / "relit")
    gallery, queries = read_jsonl(gallery_path), read_jsonl(queries_path)
    assert len(gallery) == len(read_jsonl(tmp_path / "packs" / "gallery.jsonl"))
    originals = read_jsonl(tmp_path / "packs" / "queries.jsonl")[::2]
    assert [q["relevant"] for q in queries] == [q["relevant"] for q in originals]
    assert all(q["edit"] == "reshoot under a lamp" for q in queries)
    assert all((tmp_path / "relit" / q["image"]).is_file() for q in queries)


def test_shelves_and_piles_show_one_product_many_times_against_its_catalog_photo(
        tmp_path: Path) -> None:
    """packs-shelf and packs-pile: packs-instore's gallery, each query a scene of many copies
    of one item's pack (relevant: that item), seeded; plain-pile: same-item-plain's products
    (the same drawings), one pile of each, each in its outline's category."""
    reshoot = load_bench_module("protocols_reshoot")
    shelves = load_bench_module("protocols_shelf")
    reshoot.write_packs(tmp_path / "packs", n_brands=2, n_queries=6)
    makers = {row["item"] for row in read_jsonl(tmp_path / "packs" / "gallery.jsonl")}
    for name, write in (("shelf", shelves.write_packs_shelf), ("pile", shelves.write_packs_pile)):
        gallery_path, queries_path = write(tmp_path / "packs", tmp_path / name, n_queries=4)
        gallery, queries = read_jsonl(gallery_path), read_jsonl(queries_path)
        assert {row["product_id"] for row in gallery} == makers
        assert len(queries) == 4 and all(q["edit"] == name for q in queries)
        for query in queries:
            assert query["relevant"] == [Path(query["image"]).stem]
            photo = Image.open(tmp_path / name / query["image"])
            assert 0.5 < photo.width / photo.height < 2.2  # framed as a photo, not a strip
    rng = np.random.default_rng(3)
    pack = Image.open(tmp_path / "shelf" / gallery[0]["images"][0]).convert("RGB")
    one = shelves.shelf(pack, [pack], rng)
    assert np.array_equal(np.asarray(one), np.asarray(
        shelves.shelf(pack, [pack], np.random.default_rng(3))))
    gallery_path, queries_path = shelves.write_plain_pile(tmp_path / "plain", n_shapes=2)
    gallery, queries = read_jsonl(gallery_path), read_jsonl(queries_path)
    plain = reshoot.plain_products(np.random.default_rng(17), 2)
    assert [row["product_id"] for row in gallery] == [pid for pid, _, _ in plain]
    assert [row["category"] for row in gallery[::4]] == ["Gear/Plain/Ball", "Gear/Plain/Bottle"]
    assert [q["relevant"] for q in queries] == [[row["product_id"]] for row in gallery]
    first = np.asarray(Image.open(tmp_path / "plain" / gallery[0]["images"][0]), np.float32)
    assert np.abs(first - np.asarray(plain[0][1], np.float32)).mean() < 3  # the same drawing


def _check_colourways(out: Path, gallery: list[dict[str, Any]], queries: list[dict[str, Any]],
                      n_designs: int, n_ways: int) -> None:
    """One colourway of each design held out and querying the design's others, in the
    gallery; every photo written; the query's colourway absent from the gallery."""
    members: dict[str, set[str]] = {}
    for product in gallery:
        members.setdefault(product["group_id"], set()).add(product["product_id"])
        assert (out / product["images"][0]).is_file()
    assert len(members) == n_designs and len(queries) == n_designs
    assert all(len(ids) == n_ways - 1 for ids in members.values())
    for query in queries:
        assert (out / query["image"]).is_file()
        own = Path(query["image"]).stem
        assert own not in {p["product_id"] for p in gallery}
        assert set(query["relevant"]) == members[own.rsplit("-", 1)[0]]


def test_pack_and_plain_colourways_hold_the_query_colour_out(tmp_path: Path) -> None:
    reshoot = load_bench_module("protocols_reshoot")
    out = tmp_path / "packs-colours"
    gallery_path, queries_path = reshoot.write_packs_colours(out, n_brands=2)
    gallery, queries = read_jsonl(gallery_path), read_jsonl(queries_path)
    _check_colourways(out, gallery, queries, n_designs=6, n_ways=4)
    # a colourway is the design in other colours: the same print, other pixels
    first = [p for p in gallery if p["group_id"] == gallery[0]["group_id"]]
    a, b = (np.asarray(Image.open(out / p["images"][0]).convert("L"), np.float32)
            for p in first[:2])
    assert a.shape == b.shape and not np.array_equal(a, b)
    out = tmp_path / "plain-colours"
    gallery_path, queries_path = reshoot.write_plain_colours(out, n_shapes=3)
    _check_colourways(out, read_jsonl(gallery_path), read_jsonl(queries_path),
                      n_designs=3, n_ways=4)


def test_fmnist_colours_dye_one_article_and_hold_one_dye_out(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    images = rng.integers(0, 256, size=(20, 28, 28), dtype=np.uint8)
    labels = np.arange(20, dtype=np.uint8) % 4
    out = tmp_path / "fmnist-colours"
    gallery_path, queries_path = protocols.write_fmnist_colours(
        out, n_articles=5, images=images, labels=labels)
    gallery, queries = read_jsonl(gallery_path), read_jsonl(queries_path)
    assert len(gallery) == 15 and len(queries) == 5
    for query in queries:
        own = Path(query["image"]).stem
        article = own.split("-dye")[0]
        assert own not in {p["product_id"] for p in gallery}
        assert set(query["relevant"]) == {p["product_id"] for p in gallery
                                          if p["group_id"] == article}
        index = int(article.split("-")[1])
        assert query["category"] == protocols.CLASS_NAMES[int(labels[index])]
        with Image.open(out / query["image"]) as png:
            rgb = np.asarray(png.convert("RGB"), np.float32)
        dye = np.asarray(protocols.DYES[int(own.split("-dye")[1])], np.float32)
        ink = images[index].astype(np.float32)[:, :, None] / 255
        np.testing.assert_allclose(rgb, np.clip(np.rint(255 - ink * (255 - dye)), 0, 255),
                                   atol=0.5)


def test_a_protocol_split_by_group_trains_on_one_half_and_tests_on_the_other(
        tmp_path: Path) -> None:
    """bench/train_split.py --protocol: no group on both sides, every query kept relevant to
    tested products only, and every path still pointing at its photo from where it is written."""
    split = load_bench_module("train_split")
    source = tmp_path / "proto"
    (source / "images").mkdir(parents=True)
    gallery, queries = [], []
    for g in range(6):
        for v in range(2):
            pid = f"p-{g}-{v}"
            Image.new("RGB", (8, 8), (40 * g, 100 * v, 0)).save(source / "images" / f"{pid}.png")
            gallery.append({"product_id": pid, "group_id": f"g{g}", "category": "c",
                            "images": [f"images/{pid}.png"]})
            queries.append({"image": f"images/{pid}.png", "relevant": [pid]})
    queries.append({"image": "images/p-0-0.png", "relevant": ["p-0-0", "p-1-0"]})  # two groups
    for name, rows in (("gallery.jsonl", gallery), ("queries.jsonl", queries)):
        (source / name).write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    out = tmp_path / "out"
    split.write_protocol_split(source, out, seed=0)
    trained = read_jsonl(out / "proto" / "train-catalog.jsonl")
    tested = read_jsonl(out / "proto" / "test" / "gallery.jsonl")
    asked = read_jsonl(out / "proto" / "test" / "queries.jsonl")
    trained_groups = {r["group_id"] for r in trained}
    tested_ids = {r["product_id"] for r in tested}
    assert len(trained_groups) == 3 and not trained_groups & {r["group_id"] for r in tested}
    assert len(trained) + len(tested) == len(gallery)
    assert asked and all(set(q["relevant"]) <= tested_ids for q in asked)
    assert len(asked) == sum(1 for q in queries if set(q["relevant"]) <= tested_ids)
    for base, rows in ((out / "proto", trained), (out / "proto" / "test", tested)):
        assert all((base / r["images"][0]).is_file() for r in rows)
    assert all((out / "proto" / "test" / q["image"]).is_file() for q in asked)
    again = tmp_path / "again"
    split.write_protocol_split(source, again, seed=0)
    assert read_jsonl(again / "proto" / "train-catalog.jsonl") == trained
