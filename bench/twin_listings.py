"""Which wrong listings of a same-item evaluation show the query item's own photo.

Some catalogs show several items with one photo. Luma lists MP09 and MP12 in black and in
blue with the same photo, and MH12, WSH05 and WSH10 in several colours with photos that
differ in a trim of under 3 % of their pixels. A listing of such a *twin* is wrong by its
label, and no comparison of photos can tell it from a right one: the photos are the same.
This script says how many of an evaluation's wrong listings are twins, so that a precision
below target can be read as the verifier's errors or the catalog's.

It reads the per-query details that ``lookalike eval --task same-item --details FILE``
writes, and the protocol's gallery. The protocol writers of bench/ name each listing's
``item``, and the item's own listing (the maker's, whose ``product_id`` is the item) carries
its unedited photo. A wrong listing is a twin of the query's item when the two items' photos
have the same size and fewer than ``TWIN_SHARE`` of their pixels differ by more than
``TWIN_LEVELS`` in any channel. Listings of one item that share a photo file are already one
item in those protocols (luma's stability balls of three sizes).

Usage::

    lookalike eval --task same-item --gallery var/protocols/same-item-tags/gallery.jsonl \\
        --queries var/protocols/same-item-tags/queries.jsonl --details var/tags.jsonl
    python bench/twin_listings.py --protocol var/protocols/same-item-tags --details var/tags.jsonl
"""

from __future__ import annotations

import argparse
import json
import sys
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

TWIN_SHARE = 0.03
"""Largest share of pixels that may differ for two items' photos to be twins."""
TWIN_LEVELS = 40
"""Channel difference (0..255) from which a pixel differs (above a JPEG's noise)."""


def load_items(gallery: Path) -> tuple[dict[str, str], dict[str, Path]]:
    """(the item of each listing, the photo of each item's own listing)."""
    item_of: dict[str, str] = {}
    photo_of: dict[str, Path] = {}
    with gallery.open() as lines:
        for line in lines:
            if not line.strip():
                continue
            listing = json.loads(line)
            pid = str(listing["product_id"])
            item_of[pid] = str(listing.get("item", pid))
            if item_of[pid] == pid and listing.get("images"):
                photo_of[pid] = (gallery.parent / listing["images"][0]).resolve()
    return item_of, photo_of


@cache
def _pixels(path: Path) -> np.ndarray[Any, np.dtype[np.int16]]:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), dtype=np.int16)


def twins(a: Path, b: Path) -> bool:
    """Whether two photos are the same but for ``TWIN_SHARE`` of their pixels."""
    first, second = _pixels(a), _pixels(b)
    if first.shape != second.shape:
        return False
    return float((np.abs(first - second).max(axis=2) > TWIN_LEVELS).mean()) < TWIN_SHARE


def count(details: Path, gallery: Path) -> dict[str, Any]:
    item_of, photo_of = load_items(gallery)
    listed = correct = wrong = twin = 0
    twin_pairs: set[tuple[str, str]] = set()
    with details.open() as lines:
        for line in lines:
            query = json.loads(line)
            relevant = set(query["relevant"])
            mine = item_of.get(query["relevant"][0], query["relevant"][0])
            for match in query["listed"]:
                pid = match["product_id"]
                listed += 1
                if pid in relevant:
                    correct += 1
                    continue
                wrong += 1
                theirs = item_of.get(pid, pid)
                if (mine in photo_of and theirs in photo_of
                        and twins(photo_of[mine], photo_of[theirs])):
                    twin += 1
                    twin_pairs.add((mine, theirs))
    return {
        "listed": listed, "wrong": wrong, "wrong_twins": twin,
        "precision": round(correct / listed, 4) if listed else None,
        "precision_without_twins": (round(correct / (listed - twin), 4)
                                    if listed - twin else None),
        "twin_items": sorted(f"{a} ~ {b}" for a, b in twin_pairs),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--protocol", type=Path, required=True,
                        help="a same-item protocol folder (its gallery.jsonl)")
    parser.add_argument("--details", type=Path, required=True,
                        help="what lookalike eval --task same-item --details wrote")
    args = parser.parse_args(argv)
    gallery = args.protocol / "gallery.jsonl"
    for path in (gallery, args.details):
        if not path.is_file():
            print(f"error: {path} not found", file=sys.stderr)
            return 2
    try:
        counted = count(args.details, gallery)
    except (json.JSONDecodeError, KeyError, TypeError, IndexError) as exc:
        print(f"error: {args.details} or {gallery} is not what lookalike eval --details and "
              f"the protocol writers of bench/ write ({type(exc).__name__}: {exc})",
              file=sys.stderr)
        return 2
    print(json.dumps(counted, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
