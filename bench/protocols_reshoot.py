"""Write same-item protocols closer to the held-back sets: *re-shot* photos and another kind of
product (printed packaging). Nothing in search/verify.py was tuned on them.

The same-item protocols of ``bench/protocols_same_item.py`` query with *edited copies* of the
listed photo. The held-back sets also hold photos taken again: another camera, angle, light
and background, of the same front view. These protocols simulate that, with every part of a
re-shoot at once (:func:`reshoot`): the product cut out of its white background and put on
another (a colour gradient with low-frequency texture) with 8-20% room around it, a
perspective warp of 3-10% per corner, a small turn, uneven light (a gradient of 0.7-1.15)
with a white-balance shift and a gamma, defocus blur, sensor noise, a crop of the frame
and a JPEG of middle quality, at 480-800 px.

* ``same-item-reshoot`` (luma): listings as in ``same-item-dev`` (main photo by its shop, half
  re-listed by a second shop with *its own re-shot photo*, a quarter with the same file); 240
  queries, each a fresh re-shoot of a variant's main photo. Other colours of the style and
  other products of the category are the hard negatives.
* ``same-item-packs`` (synthetic printed packaging, another product kind): 60 brands x 3
  product lines x 3 flavours of boxes, cans and pouches drawn with PIL: a brand band, a name,
  a flavour colour, a logo, a barcode and small print. Look-alikes: the other flavours of the
  line (the same design in another colour) and the other lines of the brand (the same layout
  and colours, another name and logo). Listings as above; 240 re-shot queries ("in-store
  photos").
* ``same-item-packs-copies`` (needs ``same-item-packs``, written first): its gallery; each of
  its 240 queries is instead the maker's own catalog photo of the item, resized to 80 % and
  re-encoded (JPEG 70), as a shop re-listing it would send. Added after the corroboration
  round, and scored before the change it led to (docs/matching.md, "Family round").
* ``same-item-packs-vivid`` (needs ``same-item-packs``): its gallery; 120 queries (every
  other one), each the maker's catalog photo with a shop's "vivid" edit (PIL saturation
  x1.2-1.6, then contrast x1.05-1.3), resized to 80 % and re-encoded (JPEG 85). Written
  after same-item-blind's vivid edits were diagnosed, to check a change for them on
  another kind of product (docs/matching.md, "Refined alignment and colour grading").
* ``same-item-packs-turned`` (needs ``same-item-packs``): its gallery; 120 queries (the
  other half of its in-store photos), each saved a quarter turn sideways (90 or 270 degrees,
  JPEG 90), as a phone photo whose orientation tag was lost. Written after same-item-blind's
  quarter turns were diagnosed, to check a change for them on another kind of product.
* ``packs-instore`` (needs ``same-item-packs``; a *retrieval* protocol, ``lookalike eval``
  and ``lookalike train``): one catalog photo per item, the maker's (540 items), each in the
  category of its product line (``Grocery/Packs/Tomato Soup``: ten lines across 60 brands);
  the 240 queries are same-item-packs' in-store photos, each relevant to its item alone. A
  second in-store stand-in beside luma-snapshots, of another product kind: printed packs
  against one catalog shot each, as the held-back grocery set (docs/training.md).
* ``same-item-relit`` (luma, seed 13) and ``same-item-packs-relit`` (needs ``same-item-packs``;
  its gallery, 120 queries from the maker's photos): re-shoots as above under *another model
  of light* (:func:`_lamp`: a lamp's fall-off, uneven shading, a colour temperature, an S-shaped
  tone curve and a glare), for the luma set in the shop re-shoots of its gallery too. Written
  before the shaded light map (docs/matching.md, "Shaded light round") was scored on them,
  to check it on light it was not fitted to.
* ``same-item-fmnist-reshoot``: the ``same-item-fmnist`` gallery (seed 11); 300 queries are
  re-shoots of the 28 px articles enlarged to 224 px (every article has hundreds of
  look-alikes of its class).
* ``same-item-plain`` (synthetic plain products, another product kind): 40 shapes (balls,
  bottles, blocks, rolls, mats, eight of each kind at random aspects, drawn with PIL:
  smooth shading, a soft highlight, no print) x 4 colours each, the colours of one shape
  45-90 apart in RGB and one of them taken from an earlier shape: the look-alikes are the
  same shape in a nearby colour and the same colour on another shape (of the same kind at
  times, and then of a similar outline). Listings as same-item-packs'; 160 queries, one
  re-shoot of every product (half under the ramp light, half under the lamp). Written
  after the silhouette route (docs/matching.md, "Silhouette route") was chosen on the luma
  sets, to check its precision on plain look-alikes it was not chosen on.
* ``same-item-glare`` (luma, seed 31) and ``same-item-packs-glare`` (needs ``same-item-packs``;
  its gallery, 120 queries from the maker's photos): re-shoots under the ramp light with one
  or two *specular highlights* (:func:`_specular`): elongated (an ellipse 1.5-4x as long as
  wide, at any angle), a flat core near white and a linear fall-off, not the lamp's round
  Gaussian glare. Written after the glare check of the recoloured-part check
  (docs/matching.md, "Glare round") was chosen on same-item-relit, to check it on
  highlights of another shape.

* ``packs-colours`` (synthetic packaging, the ``similar`` intent; a retrieval protocol): 30
  brands x 3 product lines, each line's design (brand, name, logo, small print, barcode)
  printed in 4 *colourways*: its brand band and logo, and its flavour band, in two colours
  of a shared palette of 10 (so other designs come in the query's colours). One seeded
  colourway of every design is held out of the gallery; its maker's photo, resized to 85 %
  and re-encoded (JPEG 80), is a query relevant to the design's 3 other colourways. The
  other lines of the brand (same shape and brand name) are the hard negatives.
* ``plain-colours`` (synthetic plain products, ``similar``): 60 shapes of
  ``same-item-plain``'s five kinds (12 of each kind at random aspects), each in 4 colours
  of a shared palette of 10; one seeded colour of every shape is held out and queries (as
  above) the shape's 3 other colours. Look-alikes: shapes of the same kind and any shape
  in the query's colour.
Usage: ``python bench/protocols_reshoot.py [--out var/protocols] [--only NAME] [--luma DIR]``
(``--luma`` by default ``shared/data/luma`` beside the checkout). A luma protocol asked for
(every one without ``--only``) with no Luma data there is not skipped: one line names the
missing file and the option, exit 2, before anything is written.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from protocols import (  # noqa: E402
    DYES,
    _relative,
    missing_luma,
    protocol_parser,
    write_protocol,
)
from protocols_same_item import (  # noqa: E402
    Edit,
    _font,
    _jpeg,
    _listing,
    _save,
    write_fmnist_listings,
    write_luma_listings,
)

from embedding.colour import foreground_weights  # noqa: E402
from search.alignment import outer_background  # noqa: E402

Row = dict[str, Any]
LUMA_PROTOCOLS = ("same-item-reshoot", "same-item-relit", "same-item-glare")
PROTOCOLS = ("same-item-reshoot", "same-item-packs", "same-item-packs-copies",
             "same-item-packs-vivid", "same-item-packs-turned", "packs-instore",
             "same-item-fmnist-reshoot", "same-item-relit", "same-item-packs-relit",
             "same-item-plain", "same-item-glare", "same-item-packs-glare", "packs-colours",
             "plain-colours")


def _background(size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A shelf, a table or a wall: a two-colour gradient with low-frequency texture."""
    w, h = size
    a, b = rng.integers(60, 235, size=(2, 3)).astype(np.float32)
    t = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None, None]
    grad = a * (1 - t) + b * t
    coarse = rng.normal(0, 12, size=(max(2, h // 40), max(2, w // 40), 1)).astype(np.float32)
    texture = np.asarray(Image.fromarray(coarse[:, :, 0]).resize((w, h), Image.Resampling.BICUBIC),
                         dtype=np.float32)[:, :, None]
    return np.clip(np.broadcast_to(grad, (h, w, 3)) + texture, 0, 255)


def cut_out(img: Image.Image, snug: bool = False) -> np.ndarray:
    """Weight (h, w, 1) in [0, 1] of the product: background pixels connected to the frame
    (a white label or a pale panel inside the product stays product), slightly grown, soft.
    ``snug``: shrunk by a pixel and softened less instead, so that no rim of the white around
    the product comes along (copies pasted side by side: bench/protocols_shelf.py)."""
    outside = outer_background(foreground_weights(np.asarray(img, dtype=np.uint8)) < 0.5)
    product = Image.fromarray(np.where(outside, 0, 255).astype(np.uint8))
    product = (product.filter(ImageFilter.MinFilter(5)).filter(ImageFilter.GaussianBlur(1))
               if snug else
               product.filter(ImageFilter.MaxFilter(5)).filter(ImageFilter.GaussianBlur(2)))
    return np.asarray(product, dtype=np.float32)[:, :, None] / 255


def reshoot(img: Image.Image, rng: np.random.Generator, min_side: int = 480,
            max_side: int = 800, light: str = "ramp") -> Image.Image:
    """The product photographed again (see the module doc): every part at once, randomised.
    ``light``: "ramp" (a linear gradient, a white balance and a gamma), "specular" (the ramp
    with specular highlights, :func:`_specular`) or "lamp" (another model of light,
    :func:`_lamp`, written for same-item-relit)."""
    img = img.convert("RGB")
    scale = float(rng.uniform(min_side, max_side)) / max(img.size)
    img = img.resize((max(8, round(img.width * scale)), max(8, round(img.height * scale))),
                     Image.Resampling.BICUBIC)
    # Another background, with room around the product (a re-shoot frames it anew).
    margin = round(max(img.size) * float(rng.uniform(0.08, 0.2)))
    w, h = img.width + 2 * margin, img.height + 2 * margin
    product = np.zeros((h, w, 3), np.float32)
    weight = np.zeros((h, w, 1), np.float32)
    product[margin:margin + img.height, margin:margin + img.width] = np.asarray(img, np.float32)
    weight[margin:margin + img.height, margin:margin + img.width] = cut_out(img)
    rgb = product * weight + _background((w, h), rng) * (1 - weight)
    if light == "lamp":
        return _reframed(_lamp(rgb, rng), rng)
    rgb = ramp_lit(rgb, rng)
    return _reframed(_specular(rgb, rng) if light == "specular" else rgb, rng)


def ramp_lit(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``rgb`` under uneven light (a linear ramp across it), a white balance and a gamma."""
    h, w = rgb.shape[:2]
    axis = rng.uniform(-1, 1, size=2)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    ramp = (xx / w - 0.5) * axis[0] + (yy / h - 0.5) * axis[1]
    low, high = float(rng.uniform(0.7, 0.9)), float(rng.uniform(1.0, 1.15))
    shading = low + (high - low) * (ramp - ramp.min()) / max(1e-6, float(np.ptp(ramp)))
    balance = rng.uniform(0.9, 1.1, size=3).astype(np.float32)
    rgb = rgb * shading[:, :, None] * balance
    gamma = float(rng.uniform(0.85, 1.2))
    out: np.ndarray = 255 * (np.clip(rgb, 0, 255) / 255) ** gamma
    return out


def _reframed(rgb: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """The rest of a re-shoot once lit (``rgb``): angle, framing, optics, sensor, the
    camera's JPEG."""
    h, w = rgb.shape[:2]
    out = Image.fromarray(rgb.astype(np.uint8), "RGB")
    # Another angle: a small turn and a perspective warp, filled with the background's edge.
    out = out.rotate(float(rng.uniform(-8, 8)), Image.Resampling.BICUBIC, expand=False,
                     fillcolor=tuple(int(c) for c in rgb[0, 0]))
    d = rng.uniform(0.03, 0.10, size=8) * np.array([w, h] * 4)
    quad = (d[0], d[1], d[2], h - d[3], w - d[4], h - d[5], w - d[6], d[7])
    out = out.transform((w, h), Image.Transform.QUAD, tuple(float(v) for v in quad),
                        Image.Resampling.BICUBIC, fillcolor=tuple(int(c) for c in rgb[-1, -1]))
    # Framing: a crop of up to 8% per side.
    left, top, right, bottom = rng.uniform(0.0, 0.08, size=4)
    out = out.crop((round(w * left), round(h * top), round(w * (1 - right)),
                    round(h * (1 - bottom))))
    # Optics and sensor: defocus, noise, the camera's JPEG.
    out = out.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.3, 1.5))))
    noisy = np.asarray(out, dtype=np.float32) + rng.normal(0, rng.uniform(2, 7), (out.height,
                                                                                  out.width, 3))
    return _jpeg(Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8), "RGB"),
                 int(rng.integers(55, 86)))


def _lamp(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Light of another model than the ramp's (same-item-relit; nothing in search/verify.py
    was chosen on it): a lamp at a random point in or near the frame whose light falls off
    with the distance, a soft uneven shading (a 3x3 field, +-6 %), a colour temperature (red
    and blue moved apart), an S-shaped tone curve instead of a gamma, and a glare: a soft
    white highlight over a few percent of the frame."""
    h, w = rgb.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    cx, cy = rng.uniform(-0.3, 1.3) * w, rng.uniform(-0.3, 1.3) * h
    reach = float(rng.uniform(0.6, 1.5)) * max(w, h)
    fall = 1.0 / (1.0 + ((xx - cx) ** 2 + (yy - cy) ** 2) / reach ** 2)
    low, high = float(rng.uniform(0.65, 0.85)), float(rng.uniform(1.0, 1.12))
    light = low + (high - low) * (fall - fall.min()) / max(1e-6, float(np.ptp(fall)))
    field = rng.uniform(-0.06, 0.06, size=(3, 3)).astype(np.float32)
    light *= 1 + np.asarray(Image.fromarray(field).resize((w, h), Image.Resampling.BICUBIC),
                            dtype=np.float32)
    warm = float(rng.uniform(-0.08, 0.08))
    tint = np.array([1 + warm, 1 + float(rng.uniform(-0.03, 0.03)), 1 - warm], np.float32)
    x = np.clip(rgb * light[:, :, None] * tint, 0, 255) / 255
    contrast = float(rng.uniform(0.1, 0.35))
    x = x + contrast * x * (1 - x) * (2 * x - 1)  # an S-curve: darks darker, lights lighter
    gx, gy = rng.uniform(0.15, 0.85) * w, rng.uniform(0.15, 0.85) * h
    size = float(rng.uniform(0.06, 0.14)) * max(w, h)
    glare = float(rng.uniform(0.15, 0.35)) * np.exp(-((xx - gx) ** 2 + (yy - gy) ** 2)
                                                   / (2 * size ** 2))
    x = x + (1 - x) * glare[:, :, None]
    return np.clip(255 * x, 0, 255)


def _specular(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One or two specular highlights (same-item-glare; the glare check in search/verify.py
    was chosen on the lamp's round glare, not on these): each an ellipse 1.5-4x as long as
    wide at any angle, over 5-15 % of the frame's longer side, placed in its middle 70 %,
    whose core (the inner 30-70 %) is blended 60-95 % of the way to white and whose rim falls
    off linearly to nothing."""
    h, w = rgb.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    x = np.clip(rgb, 0, 255) / 255
    for _ in range(int(rng.integers(1, 3))):
        cx, cy = rng.uniform(0.15, 0.85) * w, rng.uniform(0.15, 0.85) * h
        length = float(rng.uniform(0.05, 0.15)) * max(w, h)
        width = length / float(rng.uniform(1.5, 4.0))
        turn = float(rng.uniform(0, np.pi))
        u = ((xx - cx) * np.cos(turn) + (yy - cy) * np.sin(turn)) / length
        v = (-(xx - cx) * np.sin(turn) + (yy - cy) * np.cos(turn)) / width
        core = float(rng.uniform(0.3, 0.7))
        fall = np.clip((1 - np.sqrt(u ** 2 + v ** 2)) / (1 - core), 0, 1)
        x = x + (1 - x) * (float(rng.uniform(0.6, 0.95)) * fall)[:, :, None]
    return np.clip(255 * x, 0, 255)


def glare_edit(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    return reshoot(img, rng, light="specular")


def reshoot_edit(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    return reshoot(img, rng)


def relit_edit(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    return reshoot(img, rng, light="lamp")


def _fmnist_reshoot(img: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, str]:
    return reshoot(img.resize((224, 224), Image.Resampling.BICUBIC), rng, 160, 320), "reshoot"


# -- synthetic packaging ------------------------------------------------------------------------

WORDS = ("ORCHARD", "NORDIC", "VALLEY", "SUNNY", "MAPLE", "HARBOR", "ALPINE", "GOLDEN",
         "PRAIRIE", "COASTAL", "MEADOW", "RIVER", "SUMMIT", "CEDAR", "LOTUS", "EMBER")
LINES = ("Crunchy Oats", "Tomato Soup", "Green Tea", "Dark Roast", "Rice Crackers",
         "Herbal Mix", "Pasta Sauce", "Trail Mix", "Honey Rings", "Sea Salt Chips")
FLAVOURS = (("Original", (200, 40, 40)), ("Lemon", (235, 200, 40)), ("Mint", (40, 170, 110)),
            ("Berry", (130, 50, 150)), ("Ocean", (40, 110, 200)), ("Orange", (240, 130, 30)))


def _logo(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], kind: int,
          colour: tuple[int, ...]) -> None:
    x0, y0, x1, y1 = box
    if kind == 0:
        draw.ellipse(box, fill=colour, outline="white", width=3)
    elif kind == 1:
        draw.polygon([((x0 + x1) // 2, y0), (x1, y1), (x0, y1)], fill=colour)
    elif kind == 2:
        draw.rectangle(box, fill=colour)
        draw.ellipse((x0 + 8, y0 + 8, x1 - 8, y1 - 8), fill="white")
    else:
        cx, cy, r = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2
        points = [(cx + (r if i % 2 == 0 else r / 2.5) * np.cos(np.pi * i / 5 - np.pi / 2),
                   cy + (r if i % 2 == 0 else r / 2.5) * np.sin(np.pi * i / 5 - np.pi / 2))
                  for i in range(10)]
        draw.polygon(points, fill=colour)


def draw_pack(brand: str, brand_colour: tuple[int, ...], line: str, logo: int, flavour: str,
              flavour_colour: tuple[int, ...], shape: int, seed: int) -> Image.Image:
    """A catalog photo of a package front on white: box (0), can (1) or pouch (2)."""
    rng = np.random.default_rng(seed)  # the small print and barcode of this product line
    w, h = (360, 480) if shape != 1 else (300, 480)
    face = Image.new("RGB", (w, h), (236, 228, 206))  # a cream panel, not the white around
    draw = ImageDraw.Draw(face)
    draw.rectangle((0, 0, w - 1, h - 1), outline=(120, 110, 90), width=2)
    draw.rectangle((0, 0, w, 90), fill=brand_colour)
    draw.text((18, 20), brand, fill="white", font=_font(44))
    draw.rectangle((0, 300, w, 380), fill=flavour_colour)
    draw.text((18, 110), line, fill=(30, 30, 30), font=_font(34))
    draw.text((18, 320), flavour, fill="white", font=_font(38))
    _logo(draw, (w - 150, 150, w - 30, 270), logo, brand_colour)
    for i in range(4):
        draw.text((18, 170 + 26 * i), " ".join(
            "".join(chr(int(c)) for c in rng.integers(97, 123, size=int(rng.integers(3, 8))))
            for _ in range(3)), fill=(90, 90, 90), font=_font(18))
    x = 18
    for bar in rng.integers(1, 5, size=30):
        draw.rectangle((x, 400, x + int(bar) - 1, 460), fill=(20, 20, 20))
        x += int(bar) + int(rng.integers(1, 4))
    draw.text((x + 20, 420), f"{int(rng.integers(100, 999))} g", fill=(30, 30, 30),
              font=_font(28))
    canvas = Image.new("RGB", (w + 80, h + 80), (255, 255, 255))
    if shape == 2:  # a pouch: the face narrows towards the top
        face = face.transform((w, h), Image.Transform.QUAD,
                              (-30.0, 0.0, 0.0, float(h), float(w), float(h), w + 30.0, 0.0),
                              Image.Resampling.BICUBIC, fillcolor=(255, 255, 255))
    canvas.paste(face, (40, 40))
    if shape == 1:  # a can: rounded top and bottom, shaded sides
        arr = np.asarray(canvas, dtype=np.float32)
        xs = (np.arange(w + 80) - 40 - w / 2) / (w / 2)
        shade = np.clip(1.0 - 0.35 * np.clip(np.abs(xs), 0, 1) ** 3, 0.6, 1.0)
        arr[40:40 + h] *= shade[None, :, None]
        canvas = Image.fromarray(arr.astype(np.uint8))
    return canvas


def _listed(out_dir: Path, products: list[tuple[str, Image.Image, Row]],
            rng: np.random.Generator, prices: tuple[float, float]
            ) -> tuple[list[Row], dict[str, list[str]]]:
    """The gallery's listings of ``products`` (id, maker's photo, variant): each by its maker
    at a price drawn from ``prices``, half again by a second shop with its own re-shot photo,
    a quarter by a third shop with the maker's file; and each item's listing ids."""
    gallery: list[Row] = []
    listings: dict[str, list[str]] = {}
    for pid, photo, variant in products:
        price = float(rng.uniform(*prices))
        main = out_dir / "images" / f"{pid}.jpg"
        _save(photo, main)
        rows = [_listing(variant, pid, "maker", _relative(main, out_dir), price)]
        if rng.random() < 0.5:
            path = out_dir / "images" / f"{pid}~shop1.jpg"
            _save(reshoot(photo, rng), path)
            rows.append(_listing(variant, f"{pid}~shop1", "shop-1", _relative(path, out_dir),
                                 price * rng.uniform(0.8, 1.2)))
        if rng.random() < 0.25:
            rows.append(_listing(variant, f"{pid}~shop2", "shop-2", _relative(main, out_dir),
                                 price * rng.uniform(0.8, 1.2)))
        gallery.extend(rows)
        listings[pid] = [r["product_id"] for r in rows]
    return gallery, listings


def write_packs(out_dir: Path, seed: int = 5, n_brands: int = 60, n_queries: int = 240
                ) -> tuple[Path, Path]:
    """The same-item-packs protocol (see module doc)."""
    rng = np.random.default_rng(seed)
    products: list[tuple[str, Image.Image, Row]] = []
    for b in range(n_brands):
        brand = f"{WORDS[b % len(WORDS)]} {chr(65 + b // len(WORDS))}"
        brand_colour = tuple(int(c) for c in rng.integers(20, 160, size=3))
        shape = int(rng.integers(0, 3))
        for li, line_index in enumerate(rng.choice(len(LINES), size=3, replace=False)):
            line, logo = LINES[int(line_index)], int(rng.integers(0, 4))
            for fl in rng.choice(len(FLAVOURS), size=3, replace=False):
                flavour, colour = FLAVOURS[int(fl)]
                pid = f"pack-{b:02d}-{li}-{int(fl)}"
                photo = draw_pack(brand, brand_colour, line, logo, flavour, colour, shape,
                                  seed=1000 * b + li)
                variant = {"product_id": pid, "group_id": f"pack-{b:02d}-{li}",
                           "title": f"{brand} {line} {flavour}", "category": "Grocery/Packs",
                           "currency": "EUR"}
                products.append((pid, photo, variant))
    gallery, listings = _listed(out_dir, products, rng, (1, 9))
    queries: list[Row] = []
    for index in sorted(rng.choice(len(products), size=min(n_queries, len(products)),
                                   replace=False).tolist()):
        pid, photo, variant = products[index]
        path = out_dir / "queries" / f"{pid}.jpg"
        _save(reshoot(photo, rng), path)
        queries.append({"image": _relative(path, out_dir), "relevant": listings[pid],
                        "category": variant["category"], "edit": "reshoot"})
    return write_protocol(out_dir, gallery, queries)


def draw_plain(kind: int, aspect: float, colour: tuple[int, int, int], seed: int
               ) -> Image.Image:
    """A plain product on white (see the module doc): one of five outlines (``kind``) at
    ``aspect``, one flat ``colour`` under smooth shading and a soft highlight, no print."""
    rng = np.random.default_rng(seed)
    width, height = 480, 560
    mask = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(mask)
    cx, cy = width // 2, height // 2
    w = 340 if aspect >= 1 else round(340 * aspect)
    h = round(w / aspect) if aspect >= 1 else 340 * 1.3
    w, h = min(w, 420), min(round(h), 500)
    box = (cx - w // 2, cy - h // 2, cx + w // 2, cy + h // 2)
    if kind == 0:  # a ball (an ellipse)
        draw.ellipse(box, fill=255)
    elif kind == 1:  # a bottle: a body and a neck
        neck = max(12, w // 4)
        draw.rounded_rectangle((box[0], box[1] + h // 4, box[2], box[3]), radius=w // 5, fill=255)
        draw.rectangle((cx - neck // 2, box[1], cx + neck // 2, box[1] + h // 4 + 4), fill=255)
    elif kind == 2:  # a block (a rounded box)
        draw.rounded_rectangle(box, radius=int(rng.integers(6, 30)), fill=255)
    elif kind == 3:  # a roll (a capsule)
        draw.rounded_rectangle(box, radius=min(w, h) // 2, fill=255)
    else:  # a mat rolled up: a capsule with a flat end
        draw.rounded_rectangle(box, radius=min(w, h) // 2, fill=255)
        draw.rectangle((box[0], box[1], box[0] + w // 3, box[3]), fill=255)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    light = 1.12 - 0.3 * (yy - box[1]) / max(1, h) - 0.1 * (xx - box[0]) / max(1, w)
    spot = np.exp(-(((xx - cx + w / 5) ** 2 + (yy - cy + h / 4) ** 2) / (2 * (w / 6) ** 2)))
    rgb = np.array(colour, np.float32) * light[:, :, None] + 60 * spot[:, :, None]
    product = Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8), "RGB")
    photo = Image.new("RGB", (width, height), "white")
    photo.paste(product, (0, 0), mask.filter(ImageFilter.GaussianBlur(1.5)))
    return photo


def plain_products(rng: np.random.Generator, n_shapes: int
                   ) -> list[tuple[str, Image.Image, Row]]:
    """same-item-plain's products (see the module doc), drawn with ``rng``: (id, catalog
    photo, variant) each; the outline's kind is ``int(id.split("-")[1]) % 5``."""
    palette: list[tuple[int, int, int]] = []
    products: list[tuple[str, Image.Image, Row]] = []
    for shape in range(n_shapes):
        kind, aspect = shape % 5, float(rng.uniform(0.45, 2.2))
        base = rng.integers(40, 215, size=3)
        colours: list[tuple[int, int, int]] = []
        while len(colours) < 4:  # nearby colours of one shape, 45-90 apart
            step = rng.normal(size=3)
            candidate = np.clip(base + step / np.linalg.norm(step) * rng.uniform(45, 90) *
                                len(colours), 15, 240)
            if all(np.linalg.norm(candidate - np.array(c)) >= 45 for c in colours):
                colours.append(tuple(int(v) for v in candidate))
        if palette:  # and colours shared with other shapes
            colours[int(rng.integers(1, 4))] = palette[int(rng.integers(len(palette)))]
        palette.extend(colours)
        for n, colour in enumerate(colours):
            pid = f"plain-{shape:02d}-{n}"
            variant = {"product_id": pid, "group_id": f"plain-{shape:02d}",
                       "title": f"plain {shape} colour {n}", "category": "Gear/Plain",
                       "currency": "EUR"}
            products.append((pid, draw_plain(kind, aspect, colour, 100 * shape), variant))
    return products


def write_plain(out_dir: Path, seed: int = 17, n_shapes: int = 40, n_queries: int = 240
                ) -> tuple[Path, Path]:
    """The same-item-plain protocol (see module doc)."""
    rng = np.random.default_rng(seed)
    products = plain_products(rng, n_shapes)
    gallery, listings = _listed(out_dir, products, rng, (5, 40))
    queries: list[Row] = []
    chosen = rng.choice(len(products), size=min(n_queries, len(products)), replace=False)
    for n, index in enumerate(sorted(chosen.tolist())):
        pid, photo, variant = products[index]
        light = "ramp" if n % 2 == 0 else "lamp"
        path = out_dir / "queries" / f"{pid}.jpg"
        _save(reshoot(photo, rng, light=light), path)
        queries.append({"image": _relative(path, out_dir), "relevant": listings[pid],
                        "category": variant["category"], "edit": f"reshoot-{light}"})
    return write_protocol(out_dir, gallery, queries)


def _packs_gallery(packs_dir: Path, out_dir: Path) -> list[Row]:
    """A written same-item-packs' gallery, its image paths relative to ``out_dir``."""
    if not (packs_dir / "queries.jsonl").exists():
        raise SystemExit(f"write same-item-packs first: {packs_dir / 'queries.jsonl'} not found")
    gallery: list[Row] = [json.loads(line) for line in (packs_dir / "gallery.jsonl").open()]
    for row in gallery:
        row["images"] = [_relative(packs_dir / image, out_dir) for image in row["images"]]
    return gallery


def write_pack_copies(packs_dir: Path, out_dir: Path) -> tuple[Path, Path]:
    """The same-item-packs-copies protocol (see module doc) from a written same-item-packs."""
    gallery = _packs_gallery(packs_dir, out_dir)
    queries: list[Row] = []
    for line in (packs_dir / "queries.jsonl").open():
        query = json.loads(line)
        item = str(query["relevant"][0])  # the maker's listing of the item
        photo = Image.open(packs_dir / "images" / f"{item}.jpg").convert("RGB")
        path = out_dir / "queries" / f"{item}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        photo.resize((int(photo.width * 0.8), int(photo.height * 0.8)),
                     Image.Resampling.LANCZOS).save(path, "JPEG", quality=70)
        queries.append({"image": _relative(path, out_dir), "relevant": query["relevant"],
                        "category": query["category"], "edit": "copy"})
    return write_protocol(out_dir, gallery, queries)


def _makers_of_every_other(packs_dir: Path) -> Iterator[tuple[Row, str, Image.Image]]:
    """Every other query of a written same-item-packs (the first, the third, ...), with its
    item (the maker's listing) and the maker's photo of it."""
    for n, line in enumerate((packs_dir / "queries.jsonl").open()):
        if n % 2:
            continue
        query = json.loads(line)
        item = str(query["relevant"][0])
        yield query, item, Image.open(packs_dir / "images" / f"{item}.jpg").convert("RGB")


def write_pack_vivid(packs_dir: Path, out_dir: Path, seed: int = 123) -> tuple[Path, Path]:
    """The same-item-packs-vivid protocol (see module doc) from a written same-item-packs."""
    gallery = _packs_gallery(packs_dir, out_dir)
    rng = np.random.default_rng(seed)
    queries: list[Row] = []
    for query, item, photo in _makers_of_every_other(packs_dir):
        saturation, contrast = float(rng.uniform(1.2, 1.6)), float(rng.uniform(1.05, 1.3))
        photo = ImageEnhance.Contrast(ImageEnhance.Color(photo).enhance(saturation)).enhance(
            contrast)
        path = out_dir / "queries" / f"{item}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        photo.resize((int(photo.width * 0.8), int(photo.height * 0.8)),
                     Image.Resampling.LANCZOS).save(path, "JPEG", quality=85)
        queries.append({"image": _relative(path, out_dir), "relevant": query["relevant"],
                        "category": query["category"],
                        "edit": f"vivid saturation {saturation:.2f} contrast {contrast:.2f}"})
    return write_protocol(out_dir, gallery, queries)


def write_pack_relit(packs_dir: Path, out_dir: Path, seed: int = 77,
                     light: str = "lamp") -> tuple[Path, Path]:
    """The same-item-packs-relit protocol (see module doc) from a written same-item-packs;
    ``light="specular"``: same-item-packs-glare."""
    gallery = _packs_gallery(packs_dir, out_dir)
    rng = np.random.default_rng(seed)
    queries: list[Row] = []
    edit = "reshoot under a lamp" if light == "lamp" else f"reshoot, {light} highlights"
    for query, item, photo in _makers_of_every_other(packs_dir):
        path = out_dir / "queries" / f"{item}.jpg"
        _save(reshoot(photo, rng, light=light), path)
        queries.append({"image": _relative(path, out_dir), "relevant": query["relevant"],
                        "category": query["category"], "edit": edit})
    return write_protocol(out_dir, gallery, queries)


def write_pack_turned(packs_dir: Path, out_dir: Path, seed: int = 321) -> tuple[Path, Path]:
    """The same-item-packs-turned protocol (see module doc) from a written same-item-packs."""
    gallery = _packs_gallery(packs_dir, out_dir)
    rng = np.random.default_rng(seed)
    turns = {"90": Image.Transpose.ROTATE_90, "270": Image.Transpose.ROTATE_270}
    queries: list[Row] = []
    for n, line in enumerate((packs_dir / "queries.jsonl").open()):
        if not n % 2:
            continue
        query = json.loads(line)
        photo = Image.open(packs_dir / query["image"]).convert("RGB")
        turn = str(rng.choice(sorted(turns)))
        path = out_dir / "queries" / Path(str(query["image"])).name
        path.parent.mkdir(parents=True, exist_ok=True)
        photo.transpose(turns[turn]).save(path, "JPEG", quality=90)
        queries.append({"image": _relative(path, out_dir), "relevant": query["relevant"],
                        "category": query["category"], "edit": f"reshoot turned {turn} deg"})
    return write_protocol(out_dir, gallery, queries)


def write_packs_instore(packs_dir: Path, out_dir: Path) -> tuple[Path, Path]:
    """The packs-instore protocol (see module doc) from a written same-item-packs."""
    gallery = [row for row in _packs_gallery(packs_dir, out_dir) if row["seller_id"] == "maker"]
    for row in gallery:
        line = next(name for name in LINES if f" {name} " in f" {row['title']} ")
        row.update(category=f"Grocery/Packs/{line}", product_id=row["item"])
        for key in ("item", "seller_id"):
            row.pop(key, None)
    queries: list[Row] = []
    for raw in (packs_dir / "queries.jsonl").open():
        query = json.loads(raw)
        item = str(query["relevant"][0])  # the maker's listing of the item
        queries.append({"image": _relative(packs_dir / query["image"], out_dir),
                        "relevant": [item], "edit": query["edit"]})
    return write_protocol(out_dir, gallery, queries)


# -- colourways (the ``similar`` intent) -------------------------------------------------------

PALETTE = DYES
"""The colourways' palette, fmnist-colours' (bench/protocols.py): red, yellow, green, purple,
blue, orange, black, brown, pink, grey."""


def write_colourways(out_dir: Path, designs: list[list[tuple[str, Image.Image, Row]]],
                     rng: np.random.Generator) -> tuple[Path, Path]:
    """A cross-colour protocol from ``designs`` (each: its colourways as (id, maker's photo,
    variant)): one seeded colourway of each held out of the gallery, its photo resized to
    85 % and re-encoded (JPEG 80) a query relevant to the design's other colourways."""
    gallery: list[Row] = []
    queries: list[Row] = []
    for ways in designs:
        held = int(rng.integers(len(ways)))
        for n, (pid, photo, variant) in enumerate(ways):
            if n != held:
                path = out_dir / "images" / f"{pid}.jpg"
                _save(photo, path)
                gallery.append(dict(variant, images=[_relative(path, out_dir)]))
                continue
            path = out_dir / "queries" / f"{pid}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            photo.resize((round(photo.width * 0.85), round(photo.height * 0.85)),
                         Image.Resampling.LANCZOS).save(path, "JPEG", quality=80)
            queries.append({"image": _relative(path, out_dir),
                            "relevant": [w[0] for m, w in enumerate(ways) if m != held],
                            "category": variant["category"]})
    return write_protocol(out_dir, gallery, queries)


def _two_colours(rng: np.random.Generator, taken: set[tuple[int, int]]) -> tuple[int, int]:
    """Two different palette indices, as a pair not in ``taken`` (which it joins)."""
    while True:
        pair = tuple(int(i) for i in rng.choice(len(PALETTE), size=2, replace=False))
        if pair not in taken:
            taken.add((pair[0], pair[1]))
            return pair[0], pair[1]


def write_packs_colours(out_dir: Path, seed: int = 41, n_brands: int = 30, n_ways: int = 4
                        ) -> tuple[Path, Path]:
    """The packs-colours protocol (see module doc)."""
    rng = np.random.default_rng(seed)
    designs: list[list[tuple[str, Image.Image, Row]]] = []
    for b in range(n_brands):
        brand = f"{WORDS[b % len(WORDS)]} {chr(65 + b // len(WORDS))}"
        shape = int(rng.integers(0, 3))
        for li, line_index in enumerate(rng.choice(len(LINES), size=3, replace=False)):
            line, logo = LINES[int(line_index)], int(rng.integers(0, 4))
            flavour = FLAVOURS[int(rng.integers(len(FLAVOURS)))][0]
            taken: set[tuple[int, int]] = set()
            ways = []
            for w in range(n_ways):
                band, panel = _two_colours(rng, taken)
                pid = f"packway-{b:02d}-{li}-{w}"
                photo = draw_pack(brand, PALETTE[band], line, logo, flavour, PALETTE[panel],
                                  shape, seed=1000 * b + li)
                ways.append((pid, photo, {
                    "product_id": pid, "group_id": f"packway-{b:02d}-{li}",
                    "title": f"{brand} {line} {flavour} colourway {w}",
                    "category": "Grocery/Packs", "price": 3.0, "currency": "EUR"}))
            designs.append(ways)
    return write_colourways(out_dir, designs, rng)


def write_plain_colours(out_dir: Path, seed: int = 43, n_shapes: int = 60, n_ways: int = 4
                        ) -> tuple[Path, Path]:
    """The plain-colours protocol (see module doc)."""
    rng = np.random.default_rng(seed)
    designs: list[list[tuple[str, Image.Image, Row]]] = []
    for shape in range(n_shapes):
        kind, aspect = shape % 5, float(rng.uniform(0.45, 2.2))
        ways = []
        for w, c in enumerate(rng.choice(len(PALETTE), size=n_ways, replace=False)):
            pid = f"plainway-{shape:02d}-{w}"
            ways.append((pid, draw_plain(kind, aspect, PALETTE[int(c)], 100 * shape), {
                "product_id": pid, "group_id": f"plainway-{shape:02d}",
                "title": f"plain {shape} colourway {w}", "category": "Gear/Plain",
                "price": 10.0, "currency": "EUR"}))
        designs.append(ways)
    return write_colourways(out_dir, designs, rng)


def _write_luma(luma: Path, out: Path, name: str,
                edit: Edit, seed: int) -> None:
    """A luma listings protocol re-shot by ``edit`` (gallery re-shoots and queries)."""
    gallery, queries, _ = write_luma_listings(luma, out / name, (edit,), seed=seed)
    print(f"{name}: {gallery} {queries}")


def main(argv: list[str] | None = None) -> int:
    args = protocol_parser(__doc__, PROTOCOLS).parse_args(argv)
    wanted = [args.only] if args.only else list(PROTOCOLS)
    missing = missing_luma(args.luma, [p for p in LUMA_PROTOCOLS if p in wanted],
                           hint="" if args.only else ", or --only NAME for one that does not")
    if missing:
        print(missing, file=sys.stderr)
        return 2
    if "same-item-reshoot" in wanted:
        _write_luma(args.luma, args.out, "same-item-reshoot", reshoot_edit, seed=3)
    if "same-item-packs" in wanted:
        print("same-item-packs: {} {}".format(*write_packs(args.out / "same-item-packs")))
    if "same-item-packs-copies" in wanted:
        print("same-item-packs-copies: {} {}".format(*write_pack_copies(
            args.out / "same-item-packs", args.out / "same-item-packs-copies")))
    if "same-item-packs-vivid" in wanted:
        print("same-item-packs-vivid: {} {}".format(*write_pack_vivid(
            args.out / "same-item-packs", args.out / "same-item-packs-vivid")))
    if "same-item-packs-turned" in wanted:
        print("same-item-packs-turned: {} {}".format(*write_pack_turned(
            args.out / "same-item-packs", args.out / "same-item-packs-turned")))
    if "packs-instore" in wanted:
        print("packs-instore: {} {}".format(*write_packs_instore(
            args.out / "same-item-packs", args.out / "packs-instore")))
    if "same-item-relit" in wanted:
        _write_luma(args.luma, args.out, "same-item-relit", relit_edit, seed=13)
    if "same-item-packs-relit" in wanted:
        print("same-item-packs-relit: {} {}".format(*write_pack_relit(
            args.out / "same-item-packs", args.out / "same-item-packs-relit")))
    if "same-item-glare" in wanted:
        _write_luma(args.luma, args.out, "same-item-glare", glare_edit, seed=31)
    if "same-item-packs-glare" in wanted:
        print("same-item-packs-glare: {} {}".format(*write_pack_relit(
            args.out / "same-item-packs", args.out / "same-item-packs-glare", seed=79,
            light="specular")))
    if "same-item-plain" in wanted:
        print("same-item-plain: {} {}".format(*write_plain(args.out / "same-item-plain")))
    if "packs-colours" in wanted:
        print("packs-colours: {} {}".format(*write_packs_colours(args.out / "packs-colours")))
    if "plain-colours" in wanted:
        print("plain-colours: {} {}".format(*write_plain_colours(args.out / "plain-colours")))
    if "same-item-fmnist-reshoot" in wanted:
        print("same-item-fmnist-reshoot: {} {}".format(*write_fmnist_listings(
            args.out / "same-item-fmnist-reshoot", query_edit=_fmnist_reshoot)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
