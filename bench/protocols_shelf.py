"""In-store protocols of many copies of one product: a shelf of packs, a pile of plain goods.

A store shows a product as many copies of it: a row of one pack on a shelf, a crate of one
fruit. The catalog shows one, on white. luma-snapshots and packs-instore paste one product
into a scene; these two protocols paste many, so that what a method does with repeated
copies (a crop that holds one of them, a whole photo of a texture of them) is measured:

* ``packs-shelf`` (needs ``same-item-packs``; retrieval): packs-instore's gallery (the
  maker's photo of each of 540 items, in the category of its product line). 240 queries, one
  per seeded item: 1-3 rows of 2-5 copies of its pack (each at 90-110 % of one size, turned
  up to 4 degrees), a pack of another brand at one or both ends of a row, on a shelf
  backdrop; a 4:3 to 3:4 part of it framed, lit by a ramp, a white balance and a gamma,
  then re-framed as a re-shoot (angle, crop, blur, noise, JPEG). Relevant: the item.
* ``packs-pile`` (needs ``same-item-packs``; retrieval): packs-instore's gallery again; 160
  queries, one per seeded item: a bin of its pack, piled as ``plain-pile`` piles (below:
  copies turned at any angle, overlapping). Relevant: the item.
* ``plain-pile`` (retrieval): the catalog photos of same-item-plain's 160 plain products
  (40 outlines x 4 nearby colours, drawn anew with its seed), each in the category of its
  outline's kind (``Gear/Plain/Ball``...). 160 queries, one per product: a pile of 6-18
  copies at 22-40 % of the frame's side, each turned at random and overlapping the others,
  on a crate backdrop, lit and re-framed as above. Relevant: the product. Its look-alikes
  are the same outline in a nearby colour and the same colour on another outline.

Written before any method was tried on them, to measure scene queries (windows, cut-outs,
catalog light: docs/matching.md, "Shelves and piles") on what the held-back in-store set
shows and these stand-ins did not.

Usage: ``python bench/protocols_shelf.py [--out var/protocols] [--only NAME]``
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from protocols import _relative, protocol_parser, write_protocol  # noqa: E402
from protocols_reshoot import (  # noqa: E402
    _background,
    _reframed,
    cut_out,
    plain_products,
    ramp_lit,
    write_packs_instore,
)
from protocols_same_item import _save  # noqa: E402

Row = dict[str, Any]
PROTOCOLS = ("packs-shelf", "packs-pile", "plain-pile")
PLAIN_KINDS = ("Ball", "Bottle", "Block", "Roll", "Mat")


def _paste(scene: np.ndarray, photo: Image.Image, x: int, y: int) -> None:
    """``photo`` (a catalog photo on white) cut out and pasted into ``scene`` at (x, y),
    clipped at the scene's edges."""
    photo = photo.convert("RGB")
    rgb, weight = np.asarray(photo, dtype=np.float32), cut_out(photo, snug=True)
    h, w = scene.shape[:2]
    x0, y0, x1, y1 = max(0, x), max(0, y), min(w, x + photo.width), min(h, y + photo.height)
    if x0 >= x1 or y0 >= y1:
        return
    part = (slice(y0 - y, y1 - y), slice(x0 - x, x1 - x))
    scene[y0:y1, x0:x1] = (rgb[part] * weight[part]
                           + scene[y0:y1, x0:x1] * (1 - weight[part]))


def _copy(photo: Image.Image, side: int, rng: np.random.Generator, turn: float) -> Image.Image:
    """One copy of a product: its catalog photo at ``side`` px (longer side, +-10 %), turned
    up to ``turn`` degrees, on white."""
    scale = side * float(rng.uniform(0.9, 1.1)) / max(photo.size)
    out = photo.convert("RGB").resize((max(8, round(photo.width * scale)),
                                       max(8, round(photo.height * scale))),
                                      Image.Resampling.BICUBIC)
    return out.rotate(float(rng.uniform(-turn, turn)), Image.Resampling.BICUBIC, expand=True,
                      fillcolor=(255, 255, 255))


def shelf(pack: Image.Image, others: list[Image.Image], rng: np.random.Generator
          ) -> Image.Image:
    """A shelf of ``pack``: 1-3 rows of 2-5 copies, another pack at one or both ends of a
    row (from ``others``), lit and re-framed (see the module doc)."""
    rows, cols = int(rng.integers(1, 4)), int(rng.integers(2, 6))
    side = int(rng.integers(150, 230))
    cell_w, cell_h = round(side * 0.85), round(side * 1.08)
    ends = [bool(rng.random() < 0.7), bool(rng.random() < 0.5)]
    width = cell_w * (cols + sum(ends)) + 40
    height = cell_h * rows + 40
    scene = _background((width, height), rng)
    for r in range(rows):
        y = 20 + r * cell_h
        slots = ([others[int(rng.integers(len(others)))]] if ends[0] else [])
        slots += [pack] * cols
        slots += ([others[int(rng.integers(len(others)))]] if ends[1] else [])
        for c, photo in enumerate(slots):
            copy = _copy(photo, side, rng, turn=4)
            _paste(scene, copy, 20 + c * cell_w + (cell_w - copy.width) // 2,
                   y + (cell_h - copy.height) // 2)
    # A shopper frames part of the shelf: 4:3 to 3:4, as much of it as fits.
    aspect = float(rng.uniform(0.75, 1.34))
    crop_w, crop_h = min(width, round(height * aspect)), min(height, round(width / aspect))
    x, y = int(rng.integers(0, width - crop_w + 1)), int(rng.integers(0, height - crop_h + 1))
    return _reframed(ramp_lit(scene[y:y + crop_h, x:x + crop_w], rng), rng)


def pile(product: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A pile of ``product``: 6-18 copies at 22-40 % of the frame's side, turned at random,
    overlapping, on a crate backdrop, lit and re-framed (see the module doc)."""
    width, height = int(rng.integers(560, 801)), int(rng.integers(480, 641))
    scene = _background((width, height), rng)
    side = round(min(width, height) * float(rng.uniform(0.22, 0.4)) * 1.6)  # photo > product
    for _ in range(int(rng.integers(6, 19))):
        copy = _copy(product, side, rng, turn=180)
        _paste(scene, copy, int(rng.integers(-copy.width // 3, width - copy.width * 2 // 3)),
               int(rng.integers(-copy.height // 3, height - copy.height * 2 // 3)))
    return _reframed(ramp_lit(scene, rng), rng)


def _query(out_dir: Path, row: Row, picture: Image.Image, edit: str) -> Row:
    """A query of ``row``'s product (``picture``, saved under ``out_dir``), relevant to it."""
    path = out_dir / "queries" / f"{row['product_id']}.jpg"
    _save(picture, path)
    return {"image": _relative(path, out_dir), "relevant": [row["product_id"]],
            "category": row["category"], "edit": edit}


def _write_pack_scenes(packs_dir: Path, out_dir: Path, seed: int, n_queries: int, edit: str,
                       scene: Callable[[str, dict[str, Image.Image], np.random.Generator],
                                       Image.Image]) -> tuple[Path, Path]:
    """packs-instore's gallery under ``out_dir``, and one query for each of ``n_queries``
    seeded items: ``scene(item, the gallery's photos, rng)``."""
    write_packs_instore(packs_dir, out_dir)  # its gallery (and queries, replaced below)
    gallery = [json.loads(line) for line in (out_dir / "gallery.jsonl").open()]
    rng = np.random.default_rng(seed)
    photos = {row["product_id"]: Image.open(out_dir / row["images"][0]).convert("RGB")
              for row in gallery}
    chosen = sorted(rng.choice(len(gallery), size=min(n_queries, len(gallery)),
                               replace=False).tolist())
    queries = [_query(out_dir, gallery[index], scene(gallery[index]["product_id"], photos, rng),
                      edit) for index in chosen]
    return write_protocol(out_dir, gallery, queries)


def _shelf_of(item: str, photos: dict[str, Image.Image], rng: np.random.Generator
              ) -> Image.Image:
    """:func:`shelf` of ``item``'s pack, with six packs of other brands for the row ends."""
    brand = item.split("-")[1]
    others = [photo for pid, photo in photos.items() if pid.split("-")[1] != brand]
    picks = [others[int(i)] for i in rng.choice(len(others), size=6, replace=False)]
    return shelf(photos[item], picks, rng)


def write_packs_shelf(packs_dir: Path, out_dir: Path, seed: int = 41, n_queries: int = 240
                      ) -> tuple[Path, Path]:
    """The packs-shelf protocol (see module doc) from a written same-item-packs."""
    return _write_pack_scenes(packs_dir, out_dir, seed, n_queries, "shelf", _shelf_of)


def write_packs_pile(packs_dir: Path, out_dir: Path, seed: int = 47, n_queries: int = 160
                     ) -> tuple[Path, Path]:
    """The packs-pile protocol (see module doc) from a written same-item-packs."""
    return _write_pack_scenes(packs_dir, out_dir, seed, n_queries, "pile",
                              lambda item, photos, rng: pile(photos[item], rng))


def write_plain_pile(out_dir: Path, seed: int = 17, pile_seed: int = 43, n_shapes: int = 40
                     ) -> tuple[Path, Path]:
    """The plain-pile protocol (see module doc): same-item-plain's products
    (:func:`plain_products` with its seed)."""
    gallery: list[Row] = []
    photos: dict[str, Image.Image] = {}
    for pid, photo, _ in plain_products(np.random.default_rng(seed), n_shapes):
        photos[pid] = photo
        path = out_dir / "images" / f"{pid}.jpg"
        _save(photo, path)
        kind = PLAIN_KINDS[int(pid.split("-")[1]) % len(PLAIN_KINDS)]
        gallery.append({"product_id": pid, "group_id": pid.rsplit("-", 1)[0],
                        "title": f"plain {pid}", "category": f"Gear/Plain/{kind}",
                        "images": [_relative(path, out_dir)]})
    rng = np.random.default_rng(pile_seed)
    queries = [_query(out_dir, row, pile(photos[row["product_id"]], rng), "pile")
               for row in gallery]
    return write_protocol(out_dir, gallery, queries)


def main(argv: list[str] | None = None) -> int:
    parser = protocol_parser(__doc__, PROTOCOLS)
    args = parser.parse_args(argv)
    wanted = [args.only] if args.only else list(PROTOCOLS)
    if "packs-shelf" in wanted:
        print("packs-shelf: {} {}".format(*write_packs_shelf(
            args.out / "same-item-packs", args.out / "packs-shelf")))
    if "packs-pile" in wanted:
        print("packs-pile: {} {}".format(*write_packs_pile(
            args.out / "same-item-packs", args.out / "packs-pile")))
    if "plain-pile" in wanted:
        print("plain-pile: {} {}".format(*write_plain_pile(args.out / "plain-pile")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
