"""A larger catalog from a small one, for throughput runs: each product again as edited copies.

Usage: ``python bench/edited_catalog.py SRC_DIR DST_DIR [--copies 5]``. ``SRC_DIR`` holds a
``catalog.jsonl`` whose image paths are relative to it (the Luma layout); ``DST_DIR`` gets a
catalog with ``--copies`` products per source product (``<id>-v0`` the photos re-saved,
then a mirror, a 6 % crop, a 4 degree turn, a light and colour change, repeating) and their
photos as new JPEG files, so nothing is a byte-for-byte duplicate. The copies are new
products for ingest; they are not a quality protocol (see bench/protocols*.py). Used for the
GPU ingest figures in docs/speed.md ("Second loan").
"""

from __future__ import annotations

import argparse
import json
from multiprocessing import Pool
from pathlib import Path
from typing import Any

from PIL import Image, ImageEnhance, ImageOps

EDITS = ("resaved", "mirror", "crop", "turn", "light")


def edited_copy(image: Image.Image, variant: int) -> Image.Image:
    """``image`` with edit ``EDITS[variant % len(EDITS)]`` applied (an RGB copy)."""
    out = image.convert("RGB")
    w, h = out.size
    edit = EDITS[variant % len(EDITS)]
    if edit == "mirror":
        return ImageOps.mirror(out)
    if edit == "crop":
        box = (int(w * 0.06), int(h * 0.06), int(w * 0.94), int(h * 0.94))
        return out.crop(box).resize((w, h))
    if edit == "turn":
        return out.rotate(4, fillcolor=(255, 255, 255))
    if edit == "light":
        return ImageEnhance.Color(ImageEnhance.Brightness(out).enhance(1.12)).enhance(0.8)
    return out


def _write(job: tuple[Path, int, Path]) -> None:
    source, variant, target = job
    with Image.open(source) as image:
        edited_copy(image, variant).save(target, quality=90)


def write_edited_catalog(src: Path, dst: Path, copies: int) -> tuple[int, int]:
    """Write ``dst/catalog.jsonl`` and ``dst/images/``; returns (products, images)."""
    (dst / "images").mkdir(parents=True, exist_ok=True)
    jobs: list[tuple[Path, int, Path]] = []
    lines: list[str] = []
    for line in (src / "catalog.jsonl").read_text().splitlines():
        if not line.strip():
            continue
        product: dict[str, Any] = json.loads(line)
        for v in range(copies):
            images = []
            for image in product["images"]:
                name = f"images/v{v}-{Path(image['path']).name}"
                jobs.append((src / image["path"], v, dst / name))
                images.append({**image, "path": name})
            lines.append(json.dumps({**product, "product_id": f"{product['product_id']}-v{v}",
                                     "images": images}))
    with Pool() as pool:
        pool.map(_write, jobs, chunksize=16)
    (dst / "catalog.jsonl").write_text("\n".join(lines) + "\n")
    return len(lines), len(jobs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("src", type=Path)
    parser.add_argument("dst", type=Path)
    parser.add_argument("--copies", type=int, default=5)
    args = parser.parse_args()
    products, images = write_edited_catalog(args.src, args.dst, args.copies)
    print(f"{products} products, {images} images in {args.dst}")


if __name__ == "__main__":
    main()
