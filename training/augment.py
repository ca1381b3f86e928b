"""Views of a catalog photo that look like what searches will send.

Training pairs each catalog photo with altered copies of itself as positives, so the
alterations decide what the model learns to ignore:

* **snapshot** (a shopper's photo in a shop): the product cut out of its background, cropped,
  scaled down, turned, pasted onto a shelf made of pieces of *other catalog photos* (so the
  clutter is other products, as on a real shelf), with a lighting and white-balance shift,
  blur and JPEG at low quality;
* **listing** (another shop's photo of the same article): padding of another colour and
  aspect, a price tag or banner, a smaller resolution and re-encoding;
* **display** (a shopper's photo of stock on display): several copies of the cut-out product,
  side by side in rows as on a shelf or heaped at any angle as in a bin, on the same shelf of
  other products and under the same light as a snapshot; the last ``display_views`` views
  (never the first), in their own colours;
* **colour jitter** (the "similar" intent: the same style in another colour): a hue rotation
  and saturation change, applied to a share of the other views when requested.

Every view is drawn from its own generator seeded by ``(seed, image index, view index)``, so a
run is reproducible whatever the order or the number of threads.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageOps

from embedding.preprocess import SquareMode, preprocess_image

WORK_SIZE = 320
"""Longest side photos are reduced to before altering them (the model sees 224)."""
BACKGROUND_LEVEL = 25
"""How far below white (0..255) a pixel must be to count as the product when cutting out."""


@dataclass(frozen=True)
class AugmentConfig:
    views: int = 6
    """Altered views per photo (besides the clean one)."""
    snapshot_share: float = 0.6
    """Share of the altered views that are snapshots; the rest are listings."""
    colour_jitter: float = 0.0
    """Share of the altered views whose colours are shifted."""
    display_views: int = 1
    """How many of the altered views (the last ones, never the first) show several copies of
    the product."""


def work_image(image: Image.Image) -> Image.Image:
    """RGB, longest side at most ``WORK_SIZE``: every alteration then costs about the same."""
    image = image.convert("RGB")
    scale = WORK_SIZE / max(image.size)
    if scale < 1:
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(size, Image.Resampling.BILINEAR)
    return image


def views(image: Image.Image, others: Sequence[Image.Image], seed: Sequence[int],
          config: AugmentConfig, size: int, square: SquareMode) -> NDArray[np.uint8]:
    """``(1 + config.views, size, size, 3)``: the clean model input, then the altered views.

    ``others``: other catalog photos (work-sized) for snapshot backgrounds; ``seed``: the
    generator seed of this image (its views add their index).
    """
    out = np.empty((1 + config.views, size, size, 3), dtype=np.uint8)
    out[0] = preprocess_image(image, size, square)
    for v in range(config.views):
        rng = np.random.default_rng([*seed, v])
        shown = v >= max(1, config.views - config.display_views)
        out[1 + v] = preprocess_image(alter(image, others, rng, config, shown), size, square)
    return out


def alter(image: Image.Image, others: Sequence[Image.Image], rng: np.random.Generator,
          config: AugmentConfig, shown: bool = False) -> Image.Image:
    """One altered view, mirrored half the time: ``shown``, a display of copies in their own
    colours; else a snapshot or a listing, its colours shifted at ``config.colour_jitter``."""
    if rng.random() < 0.5:
        image = ImageOps.mirror(image)
    if shown:
        return display(image, others, rng)
    if rng.random() < config.snapshot_share:
        image = snapshot(image, others, rng)
    else:
        image = listing(image, rng)
    if rng.random() < config.colour_jitter:
        image = colour_jitter(image, rng)
    return image


def _crop(image: Image.Image, rng: np.random.Generator, least: float) -> Image.Image:
    """A random crop keeping at least ``least`` of each side."""
    w, h = image.size
    cw, ch = round(w * rng.uniform(least, 1.0)), round(h * rng.uniform(least, 1.0))
    x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    return image.crop((x, y, x + cw, y + ch))


def _shelf(others: Sequence[Image.Image], rng: np.random.Generator, size: int) -> Image.Image:
    """A background of 2x2 to 3x3 pieces of other catalog photos, slightly blurred."""
    cells = int(rng.integers(2, 4))
    cell = -(-size // cells)
    canvas = Image.new("RGB", (size, size), tuple(int(c) for c in rng.integers(60, 230, 3)))
    for row in range(cells):
        for col in range(cells):
            if not others or rng.random() < 0.15:
                continue
            piece = _crop(others[int(rng.integers(0, len(others)))], rng, 0.5)
            canvas.paste(piece.resize((cell, cell), Image.Resampling.BILINEAR),
                         (col * cell, row * cell))
    return canvas.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.5, 2.5))))


def _cut_out(image: Image.Image, scale: float) -> tuple[Image.Image, Image.Image]:
    """``image`` resized by ``scale`` and the mask of its product (what is not near white)."""
    image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                         Image.Resampling.BILINEAR)
    rgb = np.asarray(image).astype(np.int16)
    mask = Image.fromarray(((255 - rgb.min(axis=2)) > BACKGROUND_LEVEL).astype(np.uint8) * 255)
    return image, mask.filter(ImageFilter.MaxFilter(5)).filter(ImageFilter.GaussianBlur(1))


def _turned(image: Image.Image, mask: Image.Image,
            angle: float) -> tuple[Image.Image, Image.Image]:
    return (image.rotate(angle, Image.Resampling.BILINEAR, expand=True, fillcolor=(255, 255, 255)),
            mask.rotate(angle, Image.Resampling.BILINEAR, expand=True, fillcolor=0))


def _photographed(canvas: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A phone's photo of ``canvas``: another light and white balance, blur, low JPEG."""
    canvas = ImageEnhance.Brightness(canvas).enhance(float(rng.uniform(0.65, 1.3)))
    canvas = ImageEnhance.Contrast(canvas).enhance(float(rng.uniform(0.7, 1.2)))
    balance = np.array([rng.uniform(0.85, 1.15), 1.0, rng.uniform(0.85, 1.15)])
    canvas = Image.fromarray(
        np.clip(np.asarray(canvas).astype(np.float32) * balance, 0, 255).astype(np.uint8))
    if rng.random() < 0.5:
        canvas = canvas.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.3, 1.5))))
    return jpeg(canvas, int(rng.integers(30, 90)))


def snapshot(image: Image.Image, others: Sequence[Image.Image],
             rng: np.random.Generator) -> Image.Image:
    """The product on a shelf, photographed by a phone (see module doc)."""
    image = _crop(image, rng, 0.75)
    canvas_size = WORK_SIZE
    image, mask = _cut_out(image, rng.uniform(0.5, 0.95) * canvas_size / max(image.size))
    image, mask = _turned(image, mask, float(rng.uniform(-15, 15)))
    canvas = _shelf(others, rng, canvas_size)
    x = int(rng.integers(min(0, canvas_size - image.width), max(1, canvas_size - image.width)))
    y = int(rng.integers(min(0, canvas_size - image.height), max(1, canvas_size - image.height)))
    canvas.paste(image, (x, y), mask)
    return _photographed(canvas, rng)


def display(image: Image.Image, others: Sequence[Image.Image],
            rng: np.random.Generator) -> Image.Image:
    """Several copies of the product on display, photographed by a phone (see module doc)."""
    canvas_size = WORK_SIZE
    canvas = _shelf(others, rng, canvas_size)
    product, mask = _cut_out(image, rng.uniform(0.25, 0.5) * canvas_size / max(image.size))
    if rng.random() < 0.5:  # rows, as on a shelf
        step_x, step_y = max(1, product.width), max(1, product.height)
        x0, y0 = (int(rng.integers(-step_x // 2, 1)), int(rng.integers(-step_y // 2, 1)))
        for y in range(y0, canvas_size, step_y):
            for x in range(x0, canvas_size, step_x):
                copy, copy_mask = _turned(product, mask, float(rng.uniform(-4, 4)))
                canvas.paste(copy, (x + int(rng.integers(-3, 4)), y + int(rng.integers(-3, 4))),
                             copy_mask)
    else:  # a heap, as in a bin
        for _ in range(int(rng.integers(4, 13))):
            copy, copy_mask = _turned(product, mask, float(rng.uniform(-180, 180)))
            canvas.paste(copy, (int(rng.integers(-copy.width // 3, canvas_size - copy.width // 2)),
                                int(rng.integers(-copy.height // 3,
                                                 canvas_size - copy.height // 2))), copy_mask)
    return _photographed(canvas, rng)


def listing(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """The same photo as another shop lists it (see module doc)."""
    image = _crop(image, rng, 0.85)
    w, h = image.size
    pads = [int(p) for p in rng.integers(0, max(2, max(w, h) // 4), 4)]
    fill = tuple(int(c) for c in rng.integers(170, 256, 3)) if rng.random() < 0.5 else (255,) * 3
    image = ImageOps.expand(image, border=tuple(pads), fill=fill)
    if rng.random() < 0.5:
        draw = ImageDraw.Draw(image)
        tw, th = image.width // int(rng.integers(3, 6)), image.height // int(rng.integers(8, 14))
        x, y = int(rng.integers(0, image.width - tw)), int(rng.integers(0, image.height - th))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        draw.rectangle((x, y, x + tw, y + th), fill=colour)
        draw.text((x + 3, y + 1), "SALE -30%", fill=(255, 255, 255))
    small = rng.uniform(0.35, 1.0)
    if small < 0.9:
        reduced = (max(8, round(image.width * small)), max(8, round(image.height * small)))
        image = image.resize(reduced, Image.Resampling.BILINEAR)
    return jpeg(image, int(rng.integers(50, 95)))


def colour_jitter(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Rotate the hue and scale the saturation (white and grey stay as they are)."""
    hsv = np.asarray(image.convert("HSV")).copy()
    hsv[..., 0] = (hsv[..., 0].astype(np.int16) + int(rng.integers(20, 236))) % 256
    hsv[..., 1] = np.clip(hsv[..., 1].astype(np.float32) * rng.uniform(0.6, 1.4), 0, 255)
    return Image.fromarray(hsv, "HSV").convert("RGB")


def jpeg(image: Image.Image, quality: int) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return decoded.convert("RGB")
