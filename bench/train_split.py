"""Write a group-disjoint split of Luma to measure ``lookalike train`` on styles it never saw.

Half of Luma's ``group_id``s (seeded) are for training, the other half for testing; no style
has a photo on both sides. Written under ``--out``:

* ``train-gallery.jsonl``: the training styles' variants with their main photo only (what a
  gallery file holds); ``train-catalog.jsonl``: the same variants with all their photos;
* ``views/``: luma-views on the test styles (gallery: main photos; queries: back and close-up
  views; relevant: the query's own variant; the other colours count as misses);
* ``snapshots/``: the same queries as shop snapshots (``bench/protocols.py``'s ``snapshot``);
* ``cross-colour/``: for every test style with two or more colours, one seeded variant is left
  out of the gallery and its main photo is the query; relevant: the style's other colours
  (the "similar" intent: the same style in another colour);
* ``cross-colour-views/``: the same left-out variants and gallery, with every photo of the
  left-out variant as a query (main, back, close-up), as ``luma-colours`` does: harder than
  the main photo alone, which the untrained CNN already places.

With ``--fmnist``, a second product kind, Fashion-MNIST by class (the ``category`` key),
under ``OUT/fmnist``: ``train-catalog.jsonl`` (3,000 seeded training-set articles),
``test/`` (2,000 test-set articles as gallery, 500 others as queries, relevant: the query's
class: product-disjoint, classes shared, like an in-store set against its catalog) and
``disjoint/`` (``train-catalog.jsonl`` and ``test/`` restricted to five seeded classes each,
no class on both sides: what training carries to kinds of product it never saw).

With ``--protocol DIR`` (repeatable; then only those are written), any retrieval protocol
(``gallery.jsonl`` + ``queries.jsonl``, each query relevant to products of one group) split
the same way, under ``OUT/NAME``: ``train-catalog.jsonl`` (the gallery's products of half its
``group_id``s, seeded; the product itself where a row has none) and ``test/`` (the other
half's products as gallery, and the queries whose relevant products are all among them). So
the in-store stand-ins (packs-instore, packs-shelf, packs-pile, plain-pile) are measured as
the issue's "done when" asks: trained on some products, tested on in-store photos of others.

Usage: ``python bench/train_split.py [--out var/train-split] [--seed 0] [--fmnist]
[--protocol var/protocols/packs-instore ...]``, then
``lookalike train --catalog OUT/train-gallery.jsonl --out M [--group-key group_id]`` and
``LOOKALIKE_MODEL__PATH=M lookalike eval --gallery OUT/views/gallery.jsonl --queries ...``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.protocols import (  # noqa: E402
    LUMA,
    _luma_rows,
    _relative,
    _write_jsonl,
    missing_luma,
    snapshot,
)

Row = dict[str, Any]


def _split_groups(gallery: list[Row], seed: int) -> set[str]:
    groups = sorted({row["group_id"] for row in gallery})
    order = np.random.default_rng(seed).permutation(len(groups))
    return {groups[i] for i in order[: len(groups) // 2]}


def write(luma: Path, out: Path, seed: int) -> None:
    gallery, queries, _ = _luma_rows(luma, out)
    train_groups = _split_groups(gallery, seed)
    group_of = {row["product_id"]: row["group_id"] for row in gallery}
    train = [row for row in gallery if row["group_id"] in train_groups]
    test = [row for row in gallery if row["group_id"] not in train_groups]
    _write_jsonl(out / "train-gallery.jsonl", train)
    full = {row["product_id"]: row for row in
            (json.loads(line) for line in
             (luma / "catalog.jsonl").read_text(encoding="utf-8").splitlines() if line.strip())}
    _write_jsonl(out / "train-catalog.jsonl", [
        dict(full[row["product_id"]], images=[_relative(luma / im["path"], out)
                                             for im in full[row["product_id"]]["images"]])
        for row in train])
    test_queries = [q for q in queries if group_of[q["relevant"][0]] not in train_groups]
    views = out / "views"
    _write_jsonl(views / "gallery.jsonl", _rebase(test, out, views))
    _write_jsonl(views / "queries.jsonl", _rebase_queries(test_queries, out, views))
    _snapshots(test, test_queries, out, seed)
    _cross_colour(test, out, seed, queries)
    print(f"train: {len(train_groups)} styles, {len(train)} variants; test: "
          f"{len({r['group_id'] for r in test})} styles, {len(test)} variants, "
          f"{len(test_queries)} view queries")


def _rebase(rows: list[Row], base: Path, target: Path) -> list[Row]:
    return [dict(row, images=[_relative(base / p, target) for p in row["images"]])
            for row in rows]


def _rebase_queries(rows: list[Row], base: Path, target: Path) -> list[Row]:
    return [dict(row, image=_relative(base / row["image"], target)) for row in rows]


def _snapshots(test: list[Row], queries: list[Row], out: Path, seed: int) -> None:
    folder = out / "snapshots"
    (folder / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = []
    for query in queries:
        source = (out / query["image"]).resolve()
        target = folder / "images" / f"{source.stem}_snapshot.jpg"
        with Image.open(source) as photo:
            snapshot(photo, rng).save(target, "JPEG", quality=80)
        rows.append(dict(query, image=_relative(target, folder)))
    _write_jsonl(folder / "gallery.jsonl", _rebase(test, out, folder))
    _write_jsonl(folder / "queries.jsonl", rows)


def _cross_colour(test: list[Row], out: Path, seed: int, views: list[Row]) -> None:
    folder = out / "cross-colour"
    rng = np.random.default_rng(seed)
    styles: dict[str, list[Row]] = {}
    for row in test:
        styles.setdefault(row["group_id"], []).append(row)
    left_out: dict[str, Row] = {}
    for group, rows in sorted(styles.items()):
        if len(rows) >= 2:
            left_out[group] = rows[int(rng.integers(0, len(rows)))]
    gallery = [row for row in test if left_out.get(row["group_id"]) is not row]
    queries = [{"image": _relative(out / row["images"][0], folder),
                "relevant": [r["product_id"] for r in styles[group] if r is not row],
                "category": row["category"]} for group, row in left_out.items()]
    _write_jsonl(folder / "gallery.jsonl", _rebase(gallery, out, folder))
    _write_jsonl(folder / "queries.jsonl", queries)
    every = out / "cross-colour-views"
    of_variant = {row["product_id"]: (group, row) for group, row in left_out.items()}
    extra = [dict(q, relevant=[r["product_id"] for r in styles[of_variant[pid][0]]
                               if r is not of_variant[pid][1]])
             for q in views for pid in q["relevant"] if pid in of_variant]
    _write_jsonl(every / "gallery.jsonl", _rebase(gallery, out, every))
    _write_jsonl(every / "queries.jsonl",
                 [dict(q, image=_relative(folder / q["image"], every)) for q in queries]
                 + _rebase_queries(extra, out, every))


def write_protocol_split(protocol: Path, out: Path, seed: int) -> None:
    """``protocol`` split by group (module doc), under ``out / protocol.name``."""

    def rows(name: str) -> list[Row]:
        text = (protocol / name).read_text(encoding="utf-8")
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    gallery, queries = rows("gallery.jsonl"), rows("queries.jsonl")
    group = {row["product_id"]: str(row.get("group_id") or row["product_id"]) for row in gallery}
    train_groups = _split_groups([{"group_id": g} for g in group.values()], seed)
    folder = out / protocol.name
    test = folder / "test"
    train = [row for row in gallery if group[row["product_id"]] in train_groups]
    tested = [row for row in gallery if group[row["product_id"]] not in train_groups]
    asked = [q for q in queries if q["relevant"]
             and all(pid in group and group[pid] not in train_groups for pid in q["relevant"])]
    _write_jsonl(folder / "train-catalog.jsonl", _rebase(train, protocol, folder))
    _write_jsonl(test / "gallery.jsonl", _rebase(tested, protocol, test))
    _write_jsonl(test / "queries.jsonl", _rebase_queries(asked, protocol, test))
    print(f"{protocol.name}: train {len(train_groups)} groups, {len(train)} products; test "
          f"{len(tested)} products, {len(asked)} of {len(queries)} queries")


FMNIST_TRAIN, FMNIST_GALLERY, FMNIST_QUERIES = 3000, 2000, 500


def write_fmnist(out: Path, seed: int) -> None:
    from lookalike.demo_catalog import CLASS_NAMES, DEBIAN_DIR, _read_idx, load_fashion_mnist_test

    rng = np.random.default_rng(seed)
    train_x = _read_idx(DEBIAN_DIR / "train-images-idx3-ubyte.gz")
    train_y = _read_idx(DEBIAN_DIR / "train-labels-idx1-ubyte.gz")
    test_x, test_y = load_fashion_mnist_test()
    picked = rng.choice(len(train_x), FMNIST_TRAIN, replace=False)
    drawn = rng.choice(len(test_x), FMNIST_GALLERY + FMNIST_QUERIES, replace=False)
    gallery, queries = drawn[:FMNIST_GALLERY], drawn[FMNIST_GALLERY:]
    seen = set(rng.permutation(len(CLASS_NAMES))[: len(CLASS_NAMES) // 2].tolist())
    images = out / "images"
    images.mkdir(parents=True, exist_ok=True)

    def png(kind: str, index: int, pixels: np.ndarray) -> str:
        path = images / f"{kind}-{index:05d}.png"
        if not path.exists():
            Image.fromarray(255 - pixels).save(path)
        return str(path.resolve())

    def product(kind: str, index: int, pixels: np.ndarray, label: int) -> Row:
        return {"product_id": f"{kind}-{index:05d}", "title": None, "price": None,
                "currency": None, "category": CLASS_NAMES[label],
                "images": [png(kind, index, pixels)]}

    train_rows = [(product("train", i, train_x[i], int(train_y[i])), int(train_y[i]))
                  for i in picked.tolist()]
    gallery_rows = [(product("test", i, test_x[i], int(test_y[i])), int(test_y[i]))
                    for i in gallery.tolist()]
    query_rows = [({"image": png("test", i, test_x[i]), "category": CLASS_NAMES[int(test_y[i])]},
                   int(test_y[i])) for i in queries.tolist()]
    for folder, keep_train, keep_test in ((out, None, None), (out / "disjoint", seen, seen)):
        def kept(rows: list[tuple[Row, int]], classes: set[int] | None,
                 invert: bool) -> list[tuple[Row, int]]:
            return [(r, y) for r, y in rows if classes is None or ((y in classes) != invert)]

        train_kept = kept(train_rows, keep_train, False)
        test_gallery = kept(gallery_rows, keep_test, True)
        members: dict[int, list[str]] = {}
        for row, y in test_gallery:
            members.setdefault(y, []).append(row["product_id"])
        _write_jsonl(folder / "train-catalog.jsonl", [r for r, _ in train_kept])
        _write_jsonl(folder / "test" / "gallery.jsonl", [r for r, _ in test_gallery])
        _write_jsonl(folder / "test" / "queries.jsonl",
                     [dict(q, relevant=members[y]) for q, y in kept(query_rows, keep_test, True)])
    print(f"fmnist: {FMNIST_TRAIN} training articles, test {FMNIST_GALLERY} gallery + "
          f"{FMNIST_QUERIES} queries; disjoint: trained on classes {sorted(seen)}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--luma", type=Path, default=LUMA,
                   help="the Luma data folder, holding catalog.jsonl and images/ (default: "
                        f"shared/data/luma beside the checkout, {LUMA})")
    p.add_argument("--out", type=Path, default=Path("var/train-split"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fmnist", action="store_true", help="also write the Fashion-MNIST split")
    p.add_argument("--protocol", type=Path, action="append", default=[],
                   help="split this retrieval protocol's folder by group instead (repeatable; "
                        "the Luma and Fashion-MNIST splits are then not written)")
    args = p.parse_args(argv)
    if args.protocol:  # those alone: the Luma split is another run's
        names = [protocol.name for protocol in args.protocol]
        if len(set(names)) < len(names):
            p.error(f"two --protocol folders of one name would share OUT/NAME: {names}")
        for protocol in args.protocol:
            write_protocol_split(protocol, args.out, args.seed)
        return 0
    missing = missing_luma(args.luma, ["the split"])
    if missing:
        print(missing, file=sys.stderr)
        return 2
    write(args.luma, args.out, args.seed)
    if args.fmnist:
        write_fmnist(args.out / "fmnist", args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
