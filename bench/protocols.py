"""Write the retrieval-evaluation protocols that ``lookalike eval`` reads.

Each protocol is a folder with ``gallery.jsonl`` (products in the catalog format) and
``queries.jsonl`` (``{"image", "relevant", "category"}`` per line). Image paths are relative to
the file's own folder, so the files work wherever they are written and need no copy of the photos.

* ``luma-views``: the Luma photos (``--luma``; by default ``shared/data/luma`` beside the
  checkout, ``../shared/data/luma`` from the repository root, wherever the command is run).
  Gallery: every variant's main image(s); queries: every other view (back, close-up), relevant
  to its own variant only. This is instance-level retrieval on real product photos.
* ``luma-multiview``: the variants with two or more non-main views, each as ONE query with
  all of them (``"images": [...]``, searched together); ``queries-single.jsonl`` beside it has
  the same views one per query, so the two files compare one view against several.
* ``luma-snapshots``: a stress test standing in for shoppers' snapshots, which we do not have:
  the luma-views queries cut out of their white background, scaled, turned a little and pasted
  onto a seeded clutter of coloured shapes, under a different brightness and white balance,
  saved as JPEG. Same gallery (catalog shots). A method that leans on clean white backgrounds
  or exact colours loses here. The images are written under the protocol folder.
* ``luma-colours`` (the ``similar`` intent): one seeded colour variant of every style with
  two or more is held out of the gallery; each of its photos (main, back, close-up) is a
  query, relevant to the style's OTHER colours (in the gallery). The query's own variant is
  absent, so colour can only mislead: it measures "this style, any colour".
* ``luma-colours-snapshots`` (``similar`` on scene photos): the luma-colours gallery and
  queries, each query photo made a snapshot as luma-snapshots makes them (same seed): the
  style's other colours are relevant, so a scene query's own colour, and its clutter's, can
  only mislead. It measures what a ``similar`` search does with a shopper's photo.
* ``luma-styles`` (``similar`` on the views): the luma-views gallery and queries, relevant to
  every colour variant of the query's style (its own included).
* ``fmnist``: the Fashion-MNIST test set. A seeded 1,000 images are queries and are left out of
  the gallery (the other 9,000); every gallery article of the query's class is relevant. This is
  category-level retrieval, which mAP@R rewards for ranking the whole class first.
* ``fmnist-colours`` (``similar``, garments in colours): 500 seeded Fashion-MNIST test
  articles, each dyed in 4 colours of a shared palette of 10 (the article's ink, its
  darkness, turned from black to the colour: ``255 - ink * (255 - colour)``). One seeded
  colour of every article is held out of the gallery and queries the article's 3 other
  colours; every other article of its class comes in the same palette. The colourways are
  one photo recoloured, not photos of three garments: a query variant that undoes colour
  exactly (greyscale) is flattered here, and the other cross-colour protocols say more.

Usage: ``python bench/protocols.py [--out var/protocols] [--only NAME] [--seed 0] [--luma DIR]``.
A protocol asked for (every one without ``--only``) whose data is missing is not skipped: one
line names the missing file and the option to pass, exit 2, before anything is written.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from lookalike.demo_catalog import CLASS_NAMES, load_fashion_mnist_test  # noqa: E402

# beside the checkout (where CI has it), whatever the current directory
LUMA = REPO.parent / "shared" / "data" / "luma"
PROTOCOLS = ("luma-views", "luma-multiview", "luma-snapshots", "luma-colours",
             "luma-colours-snapshots", "luma-styles", "fmnist", "fmnist-colours")
LUMA_PROTOCOLS = PROTOCOLS[:-2]
DYES = ((200, 40, 40), (235, 200, 40), (40, 170, 110), (130, 50, 150), (40, 110, 200),
        (240, 130, 30), (30, 30, 40), (120, 80, 50), (230, 120, 170), (110, 120, 130))
"""fmnist-colours' palette (bench/protocols_reshoot.py's colourways use it too)."""
SNAPSHOT_SIZE = 480
MAIN_VIEW = "main"
Row = dict[str, Any]


def _write_jsonl(path: Path, rows: Iterable[Row]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")


def write_protocol(out_dir: Path, gallery: Iterable[Row], queries: Iterable[Row]
                   ) -> tuple[Path, Path]:
    """``gallery.jsonl`` and ``queries.jsonl`` into ``out_dir``; returns their paths."""
    gallery_path, queries_path = out_dir / "gallery.jsonl", out_dir / "queries.jsonl"
    _write_jsonl(gallery_path, gallery)
    _write_jsonl(queries_path, queries)
    return gallery_path, queries_path


def _relative(target: Path, out_dir: Path) -> str:
    """``target`` as seen from ``out_dir``; both resolved, so symlinks cannot skew the ``..``s."""
    return os.path.relpath(target.resolve(), out_dir.resolve())


def _luma_rows(luma_dir: Path, out_dir: Path) -> tuple[list[Row], list[Row], int]:
    """Gallery rows, query rows and the number of variants skipped for want of a main image.

    A skipped variant's other views are not queries either: their only relevant product would be
    missing from the gallery, which ``lookalike eval`` rightly refuses.
    """
    gallery: list[Row] = []
    queries: list[Row] = []
    skipped = 0
    for line in (luma_dir / "catalog.jsonl").read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        variant = json.loads(line)
        views = variant["images"]
        mains = [_relative(luma_dir / v["path"], out_dir) for v in views if v["view"] == MAIN_VIEW]
        if not mains:
            skipped += 1
            continue
        gallery.append(dict(variant, images=mains))  # extra keys (group_id, color) kept
        queries.extend(
            {"image": _relative(luma_dir / v["path"], out_dir),
             "relevant": [variant["product_id"]], "category": variant["category"]}
            for v in views if v["view"] != MAIN_VIEW
        )
    return gallery, queries, skipped


def write_luma_views(luma_dir: Path, out_dir: Path) -> tuple[Path, Path]:
    """Write the luma-views protocol into ``out_dir``; returns (gallery path, queries path)."""
    gallery, queries, skipped = _luma_rows(luma_dir, out_dir)
    if skipped:
        print(f"luma-views: skipped {skipped} variant(s) without a main image")
    return write_protocol(out_dir, gallery, queries)


def write_luma_multiview(luma_dir: Path, out_dir: Path) -> tuple[Path, Path]:
    """Write the luma-multiview protocol (see module doc); returns (gallery, queries) paths."""
    gallery, queries, _ = _luma_rows(luma_dir, out_dir)
    views: dict[str, list[Row]] = {}
    for query in queries:
        views.setdefault(query["relevant"][0], []).append(query)
    several = {pid: rows for pid, rows in views.items() if len(rows) >= 2}
    multi = [{"images": [r["image"] for r in rows], "relevant": rows[0]["relevant"],
              "category": rows[0]["category"]} for rows in several.values()]
    gallery_path, queries_path = out_dir / "gallery.jsonl", out_dir / "queries.jsonl"
    _write_jsonl(gallery_path, gallery)
    _write_jsonl(queries_path, multi)
    _write_jsonl(out_dir / "queries-single.jsonl", [r for rows in several.values() for r in rows])
    return gallery_path, queries_path


def _clutter(rng: np.random.Generator, size: int) -> Image.Image:
    """A busy background: a colour gradient under 40 random rectangles and ellipses, blurred."""
    top, bottom = rng.integers(40, 230, size=3), rng.integers(40, 230, size=3)
    ramp = np.linspace(0.0, 1.0, size)[:, None, None]
    canvas = (top * (1 - ramp) + bottom * ramp).repeat(size, axis=1).astype(np.uint8)
    image = Image.fromarray(canvas, "RGB")
    draw = ImageDraw.Draw(image)
    for _ in range(40):
        x0, y0 = (int(v) for v in rng.integers(-size // 4, size, size=2))
        w, h = (int(v) for v in rng.integers(size // 12, size // 2, size=2))
        fill = tuple(int(c) for c in rng.integers(0, 256, size=3))
        shape = draw.rectangle if rng.random() < 0.5 else draw.ellipse
        shape((x0, y0, x0 + w, y0 + h), fill=fill)
    return image.filter(ImageFilter.GaussianBlur(2))


def snapshot(
    photo: Image.Image, rng: np.random.Generator, size: int = SNAPSHOT_SIZE
) -> Image.Image:
    """``photo`` (a product on white) as a seeded in-store-like snapshot (see module doc)."""
    photo = photo.convert("RGB")
    scale = rng.uniform(0.55, 0.8) * size / max(photo.size)
    photo = photo.resize((max(1, round(photo.width * scale)), max(1, round(photo.height * scale))),
                         Image.Resampling.BICUBIC)
    rgb = np.asarray(photo).astype(np.int16)
    mask = Image.fromarray(((255 - rgb.min(axis=2)) > 25).astype(np.uint8) * 255, "L")
    mask = mask.filter(ImageFilter.MaxFilter(5)).filter(ImageFilter.GaussianBlur(1))
    angle = float(rng.uniform(-8, 8))
    photo = photo.rotate(angle, Image.Resampling.BICUBIC, expand=True, fillcolor=(255, 255, 255))
    mask = mask.rotate(angle, Image.Resampling.BICUBIC, expand=True, fillcolor=0)
    canvas = _clutter(rng, size)
    x = int(rng.integers(0, max(1, size - photo.width)))
    y = int(rng.integers(0, max(1, size - photo.height)))
    canvas.paste(photo, (x, y), mask)
    canvas = ImageEnhance.Brightness(canvas).enhance(float(rng.uniform(0.8, 1.15)))
    balance = np.array([rng.uniform(0.9, 1.1), 1.0, rng.uniform(0.9, 1.1)])
    shifted = np.clip(np.asarray(canvas).astype(np.float32) * balance, 0, 255).astype(np.uint8)
    return Image.fromarray(shifted, "RGB")


def write_luma_snapshots(luma_dir: Path, out_dir: Path, seed: int = 0) -> tuple[Path, Path]:
    """Write the luma-snapshots protocol (see module doc); returns (gallery, queries) paths."""
    gallery, queries, _ = _luma_rows(luma_dir, out_dir)
    _snapshot_queries(queries, out_dir, seed)
    return write_protocol(out_dir, gallery, queries)


def _snapshot_queries(queries: list[Row], out_dir: Path, seed: int) -> None:
    """Each query's photo (``image``, relative to ``out_dir``) replaced by its seeded
    :func:`snapshot`, written as JPEG under ``out_dir/images``; one draw of the generator
    per query, in order."""
    images_dir = out_dir / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for query in queries:
        source = (out_dir / query["image"]).resolve()
        target = images_dir / f"{source.stem}_snapshot.jpg"
        with Image.open(source) as photo:
            snapshot(photo, rng).save(target, "JPEG", quality=80)
        query["image"] = _relative(target, out_dir)


def _luma_variants(luma_dir: Path) -> list[Row]:
    return [json.loads(line) for line in
            (luma_dir / "catalog.jsonl").read_text(encoding="utf-8").splitlines() if line.strip()]


def write_luma_colours(luma_dir: Path, out_dir: Path, seed: int = 0) -> tuple[Path, Path]:
    """Write the luma-colours protocol (see module doc); returns (gallery, queries) paths."""
    return write_protocol(out_dir, *_luma_colours_rows(luma_dir, out_dir, seed))


def write_luma_colours_snapshots(luma_dir: Path, out_dir: Path, seed: int = 0
                                 ) -> tuple[Path, Path]:
    """Write the luma-colours-snapshots protocol (see module doc); returns (gallery, queries)
    paths."""
    gallery, queries = _luma_colours_rows(luma_dir, out_dir, seed)
    _snapshot_queries(queries, out_dir, seed)
    return write_protocol(out_dir, gallery, queries)


def _luma_colours_rows(luma_dir: Path, out_dir: Path, seed: int) -> tuple[list[Row], list[Row]]:
    """luma-colours' (gallery, queries) rows, paths relative to ``out_dir``."""
    variants = _luma_variants(luma_dir)
    styles: dict[str, list[Row]] = {}
    for variant in variants:
        styles.setdefault(variant["group_id"], []).append(variant)
    rng = np.random.default_rng(seed)
    held = {members[int(rng.integers(len(members)))]["product_id"]
            for _, members in sorted(styles.items()) if len(members) >= 2}
    gallery: list[Row] = []
    for variant in variants:
        mains = [v["path"] for v in variant["images"] if v["view"] == MAIN_VIEW]
        if variant["product_id"] not in held and mains:
            gallery.append(dict(variant, images=[_relative(luma_dir / m, out_dir) for m in mains]))
    in_gallery = {g["product_id"] for g in gallery}
    queries: list[Row] = []
    for variant in variants:
        if variant["product_id"] not in held:
            continue
        others = [m["product_id"] for m in styles[variant["group_id"]]
                  if m["product_id"] in in_gallery]
        if not others:
            continue
        queries.extend({"image": _relative(luma_dir / v["path"], out_dir), "relevant": others,
                        "category": variant["category"]} for v in variant["images"])
    return gallery, queries


def write_luma_styles(luma_dir: Path, out_dir: Path) -> tuple[Path, Path]:
    """Write the luma-styles protocol (see module doc); returns (gallery, queries) paths."""
    gallery, queries, _ = _luma_rows(luma_dir, out_dir)
    style_of = {g["product_id"]: g["group_id"] for g in gallery}
    members: dict[str, list[str]] = {}
    for pid, style in style_of.items():
        members.setdefault(style, []).append(pid)
    for query in queries:
        query["relevant"] = members[style_of[query["relevant"][0]]]
    return write_protocol(out_dir, gallery, queries)


def _fmnist_id(index: int) -> str:
    return f"fmnist-{index:05d}"


def _write_pngs(images: np.ndarray, out_dir: Path) -> None:
    """Dark article on white, as ``write_fashion_mnist_catalog`` does; existing files are kept."""
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    for index, image in enumerate(images):
        path = out_dir / "images" / f"{_fmnist_id(index)}.png"
        if not path.exists():
            Image.fromarray(255 - np.asarray(image, dtype=np.uint8)).save(path)


def _split(n: int, n_queries: int, seed: int) -> tuple[list[int], list[int]]:
    """(query indices, gallery indices), both sorted; a query never appears in the gallery."""
    if not 0 < n_queries < n:
        raise ValueError(f"n_queries must be between 1 and {n - 1}, got {n_queries}")
    picked = np.random.default_rng(seed).choice(n, size=n_queries, replace=False)
    is_query = np.zeros(n, dtype=bool)
    is_query[picked] = True
    return np.flatnonzero(is_query).tolist(), np.flatnonzero(~is_query).tolist()


def write_fmnist(out_dir: Path, seed: int = 0, n_queries: int = 1000,
                 images: np.ndarray | None = None,
                 labels: np.ndarray | None = None) -> tuple[Path, Path]:
    """Write the fmnist protocol into ``out_dir``; returns (gallery path, queries path).

    ``images`` / ``labels`` default to the Fashion-MNIST test set; tests pass small arrays.
    """
    if images is None or labels is None:
        images, labels = load_fashion_mnist_test()
    query_idx, gallery_idx = _split(len(images), n_queries, seed)
    by_class: dict[int, list[str]] = {}
    for index in gallery_idx:
        by_class.setdefault(int(labels[index]), []).append(_fmnist_id(index))
    orphans = sorted({int(labels[i]) for i in query_idx} - by_class.keys())
    if orphans:
        raise ValueError(f"classes {orphans} have queries but no gallery product")
    _write_pngs(images, out_dir)

    def image(index: int) -> str:
        return f"images/{_fmnist_id(index)}.png"

    gallery = ({"product_id": _fmnist_id(i), "title": None,
                "category": CLASS_NAMES[int(labels[i])], "price": None, "currency": None,
                "images": [image(i)]} for i in gallery_idx)
    queries = ({"image": image(i), "relevant": by_class[int(labels[i])],
                "category": CLASS_NAMES[int(labels[i])]} for i in query_idx)
    return write_protocol(out_dir, gallery, queries)


def write_fmnist_colours(out_dir: Path, seed: int = 0, n_articles: int = 500, n_ways: int = 4,
                         images: np.ndarray | None = None,
                         labels: np.ndarray | None = None) -> tuple[Path, Path]:
    """Write the fmnist-colours protocol (see module doc); returns (gallery, queries) paths."""
    if images is None or labels is None:
        images, labels = load_fashion_mnist_test()
    rng = np.random.default_rng(seed + 7)
    picked = sorted(rng.choice(len(images), size=min(n_articles, len(images)),
                               replace=False).tolist())
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    gallery: list[Row] = []
    queries: list[Row] = []
    for index in picked:
        ink = np.asarray(images[index], np.float32)[:, :, None] / 255.0
        dyes = rng.choice(len(DYES), size=n_ways, replace=False)
        held = int(rng.integers(n_ways))
        ids = [f"{_fmnist_id(index)}-dye{int(d)}" for d in dyes]
        category = CLASS_NAMES[int(labels[index])]
        for n, (pid, dye) in enumerate(zip(ids, dyes, strict=True)):
            rgb = 255.0 - ink * (255.0 - np.asarray(DYES[int(dye)], np.float32))
            path = out_dir / "images" / f"{pid}.png"
            Image.fromarray(np.clip(np.rint(rgb), 0, 255).astype(np.uint8), "RGB").save(path)
            if n == held:
                queries.append({"image": f"images/{pid}.png", "category": category,
                                "relevant": [i for i in ids if i != pid]})
            else:
                gallery.append({"product_id": pid, "title": None, "category": category,
                                "price": None, "currency": None, "images": [f"images/{pid}.png"],
                                "group_id": _fmnist_id(index)})
    return write_protocol(out_dir, gallery, queries)


def _count_lines(path: Path) -> int:
    with open(path, encoding="utf-8") as fh:
        return sum(1 for line in fh if line.strip())


def _report(name: str, gallery: Path, queries: Path) -> None:
    print(f"{name}: gallery {_count_lines(gallery)} products, {_count_lines(queries)} queries")
    print(f"  gallery: {gallery}")
    print(f"  queries: {queries}")
    print(f"  run: lookalike eval --gallery {gallery} --queries {queries}")


def protocol_parser(doc: str | None, protocols: Sequence[str]) -> argparse.ArgumentParser:
    """The options every protocol writer takes: ``--out``, ``--only`` and ``--luma``."""
    parser = argparse.ArgumentParser(description=doc.split("\n", 1)[0] if doc else None)
    parser.add_argument("--out", type=Path, default=Path("var/protocols"),
                        help="folder to write the protocol folders into (default var/protocols)")
    parser.add_argument("--only", choices=list(protocols), help="write just this protocol")
    parser.add_argument("--luma", type=Path, default=LUMA,
                        help="the Luma data folder, holding catalog.jsonl and images/ (default: "
                             f"shared/data/luma beside the checkout, {LUMA})")
    return parser


def missing_luma(luma: Path, needing: Sequence[str], hint: str = "") -> str | None:
    """The one line to print (exit 2) when the protocols asked for, ``needing``, need the Luma
    data and ``luma`` does not hold it; None when it does or nothing needs it."""
    catalog = luma / "catalog.jsonl"
    if not needing or catalog.is_file():
        return None
    verb = "needs" if len(needing) == 1 else "need"
    return (f"error: {', '.join(needing)} {verb} the Luma data: {catalog} not found; "
            f"pass --luma DIR (the folder holding catalog.jsonl and images/){hint}")


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = protocol_parser(__doc__, PROTOCOLS)
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the fmnist query draw, the luma-colours hold-out, "
                             "the snapshots and the fmnist-colours draw")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    wanted = [args.only] if args.only else list(PROTOCOLS)
    writers = {
        "luma-views": lambda out: write_luma_views(args.luma, out),
        "luma-multiview": lambda out: write_luma_multiview(args.luma, out),
        "luma-snapshots": lambda out: write_luma_snapshots(args.luma, out, seed=args.seed),
        "luma-colours": lambda out: write_luma_colours(args.luma, out, seed=args.seed),
        "luma-colours-snapshots": lambda out: write_luma_colours_snapshots(args.luma, out,
                                                                           seed=args.seed),
        "luma-styles": lambda out: write_luma_styles(args.luma, out),
    }
    needing = [n for n in LUMA_PROTOCOLS if n in wanted]
    missing = missing_luma(args.luma, needing, hint="" if args.only else ", or --only fmnist")
    if missing:
        print(missing, file=sys.stderr)
        return 2
    for name in needing:
        _report(name, *writers[name](args.out / name))
    if "fmnist" in wanted:
        _report("fmnist", *write_fmnist(args.out / "fmnist", seed=args.seed))
    if "fmnist-colours" in wanted:
        _report("fmnist-colours", *write_fmnist_colours(args.out / "fmnist-colours",
                                                        seed=args.seed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
