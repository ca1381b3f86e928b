"""A colour descriptor of the product in a photo, appended to the CNN embedding.

Why: ImageNet features are trained to *ignore* colour (a red and a blue car are both "car"),
so off the shelf they rank the other colours of the same model above the product itself. On
the luma-views protocol (a back or close-up view must find its own colour variant), the
CNN alone finds the right variant first 31% of the time; CNN + this descriptor 62% (see
docs/quality.md). Colour variants are also what shoppers and price comparison must tell
apart, so the gain is not specific to one catalog.

What: a joint HSV histogram (12 hue x 4 saturation x 4 value = 192 bins) of the *foreground*
pixels, Hellinger-mapped (square root of the normalised histogram, so cosine is the
Bhattacharyya coefficient and a few large bins do not dominate) and L2-normalised.

Foreground: product photos mostly sit on a uniform background (studio white, a grey sweep),
and ``pad`` adds white around photos of other aspect ratios. Background colours are read off
the image's outermost pixel ring (:func:`foreground_weights`); pixels near none of them are
the product. A cluttered border (an in-store snapshot) has no such colour, and then every
pixel counts, weighted by a centred Gaussian (the product is usually in the middle). An image
with no foreground left (a blank square) falls back to the same Gaussian weighting.

The descriptor is computed at ``COLOUR_SIZE`` (112 px) from the model's square input, which
costs ~1 ms per image against ~14 ms for the CNN on 2 CPU cores.
"""

from __future__ import annotations

import math
from functools import lru_cache

import cv2
import numpy as np
from numpy.typing import NDArray
from PIL import Image

HUE_BINS, SAT_BINS, VAL_BINS = 12, 4, 4
COLOUR_DIM = HUE_BINS * SAT_BINS * VAL_BINS
COLOUR_SIZE = 112
BACKGROUND_TOLERANCE = 30.0
"""Largest per-channel difference (0..255) from the background colour that is background."""
UNIFORM_BORDER_FRACTION = 0.8
"""Share of the border ring that must match its median colour for a uniform background."""
SNUG_SPREAD_FACTOR = 3.0
SNUG_MARGIN = 4.0
SNUG_LEAST = 8.0
"""A snug background (:func:`background_mask` with ``snug``): its tolerance is
``SNUG_SPREAD_FACTOR`` times the spread of the border ring around its colour plus
``SNUG_MARGIN``, at least ``SNUG_LEAST`` and at most ``BACKGROUND_TOLERANCE``."""


def colour_version() -> str:
    """The descriptor's part of a model version string; change it with any change here."""
    return f"hsv{HUE_BINS}x{SAT_BINS}x{VAL_BINS}fg"


CACHED_CENTRE_PIXELS = 320 * 320
"""Largest image (pixels) whose :func:`_centre_weights` are kept per size: the verifier's
160 px photos ask for them once per aligned pair; a whole photo's are computed each time."""


def _centre_weights(h: int, w: int) -> NDArray[np.float32]:
    """A centred Gaussian over an h x w image (a third of each side its deviation), which the
    caller may write to (a copy of the kept one for a small image)."""
    if h * w > CACHED_CENTRE_PIXELS:
        return _centre_gaussian(h, w)
    return _kept_centre_weights(h, w).copy()


@lru_cache(maxsize=16)
def _kept_centre_weights(h: int, w: int) -> NDArray[np.float32]:
    """:func:`_centre_gaussian`, computed once per size (~0.2 ms at 160 px). Read-only."""
    out = _centre_gaussian(h, w)
    out.setflags(write=False)
    return out


def _centre_gaussian(h: int, w: int) -> NDArray[np.float32]:
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    d2 = ((yy - (h - 1) / 2) / (h / 3)) ** 2 + ((xx - (w - 1) / 2) / (w / 3)) ** 2
    out: NDArray[np.float32] = np.exp(-d2 / 2).astype(np.float32)
    return out


def _near(pixels: NDArray[np.float32], colour: NDArray[np.float32]) -> NDArray[np.bool_]:
    out: NDArray[np.bool_] = np.abs(pixels - colour).max(axis=-1) <= BACKGROUND_TOLERANCE
    return out


def _near_image(rgb: NDArray[np.uint8], colour: NDArray[np.float32],
                tolerance: float = BACKGROUND_TOLERANCE) -> NDArray[np.bool_]:
    """:func:`_near` of every pixel of an (h, w, 3) uint8 image (within ``tolerance``), the
    same answer at a tenth of the cost: an integer channel value is within the tolerance of a
    colour exactly when it lies in the whole-number range around it, which ``cv2.inRange``
    tests in place (no float copy of the image)."""
    low = [max(0, math.ceil(float(c) - tolerance)) for c in colour]
    high = [min(255, math.floor(float(c) + tolerance)) for c in colour]
    if any(lo > hi for lo, hi in zip(low, high, strict=True)):
        return np.zeros(rgb.shape[:2], dtype=bool)
    inside = cv2.inRange(np.ascontiguousarray(rgb), np.array(low, np.float64),
                         np.array(high, np.float64))
    out: NDArray[np.bool_] = inside > 0
    return out


def _uniform(ring: NDArray[np.float32]) -> NDArray[np.float32] | None:
    """The ring's median colour if ``UNIFORM_BORDER_FRACTION`` of it is near that colour."""
    if not len(ring):
        return None
    median: NDArray[np.float32] = np.median(ring, axis=0).astype(np.float32)
    return median if _near(ring, median).mean() >= UNIFORM_BORDER_FRACTION else None


def _ring(rgb: NDArray[np.uint8]) -> NDArray[np.float32]:
    """The outermost pixel ring of an (h, w, 3) image, as (n, 3) floats."""
    out: NDArray[np.float32] = np.concatenate(
        [rgb[0], rgb[-1], rgb[1:-1, 0], rgb[1:-1, -1]]).astype(np.float32)
    return out


def background_mask(rgb: NDArray[np.uint8], *, snug: bool = False) -> NDArray[np.bool_] | None:
    """The pixels of an (h, w, 3) uint8 image that show its background, when the border
    tells it: the outermost pixel ring is (mostly) one colour, or white padding on some
    sides and one colour on the rest (a padded photo). None otherwise: a backdrop with a
    gradient or a texture, a scene, a crop to the product.

    ``snug``: a one-colour border's tolerance fitted to the backdrop (:func:`_snug_tolerance`)
    instead of ``BACKGROUND_TOLERANCE``. A product whose colour lies within that of its
    backdrop (a grey ball on a lavender sweep) loses that much of itself to the fixed
    tolerance, while a backdrop's own spread around its colour (JPEG noise, a soft gradient)
    is a few levels. A padded photo is read as without. For outlines (the silhouette route
    of search/verify.py), not for the colour descriptor, whose model version it would
    change."""
    if rgb.shape[0] < 3 or rgb.shape[1] < 3:
        return None
    ring = _ring(rgb)
    white = np.full(3, 255.0, dtype=np.float32)
    ring_white = _near(ring, white)
    background = _uniform(ring)
    if background is not None:
        return _near_image(rgb, background,
                           _snug_tolerance(ring, background) if snug else BACKGROUND_TOLERANCE)
    if ring_white.any() and (second := _uniform(ring[~ring_white])) is not None:
        out: NDArray[np.bool_] = _near_image(rgb, white) | _near_image(rgb, second)
        return out
    return None


def _snug_tolerance(ring: NDArray[np.float32], background: NDArray[np.float32]) -> float:
    """``SNUG_SPREAD_FACTOR`` times the ring's spread around its ``background`` colour (the
    95th percentile of its pixels' distance to it, among those within the fixed tolerance)
    plus ``SNUG_MARGIN``, between ``SNUG_LEAST`` and ``BACKGROUND_TOLERANCE``."""
    distance = np.abs(ring - background).max(axis=-1)
    spread = float(np.percentile(distance[distance <= BACKGROUND_TOLERANCE], 95))
    return min(max(SNUG_SPREAD_FACTOR * spread + SNUG_MARGIN, SNUG_LEAST), BACKGROUND_TOLERANCE)


def foreground_weights(rgb: NDArray[np.uint8]) -> NDArray[np.float32]:
    """Per-pixel weight in [0, 1] of belonging to the product, for an (h, w, 3) uint8 image.

    The background is the colour of the outermost pixel ring when the ring is (mostly) one
    colour. A padded photo has white padding on two sides and its own background on the
    other two: then the background is white plus the colour of the rest of the ring, if that
    rest is one colour (:func:`background_mask`). Pixels near the background are left out.
    Without a uniform border, a centred Gaussian weights the pixels (white left out where the
    ring had padding white).
    """
    h, w = rgb.shape[:2]
    if h < 3 or w < 3:
        return np.ones((h, w), dtype=np.float32)
    is_background = background_mask(rgb)
    if is_background is None:
        weights = _centre_weights(h, w)
        white = np.full(3, 255.0, dtype=np.float32)
        if _near(_ring(rgb), white).any():
            weights[_near_image(rgb, white)] = 0.0
        return weights if weights.sum() >= 1e-3 else _centre_weights(h, w)
    mask: NDArray[np.float32] = (~is_background).astype(np.float32)
    return mask if mask.sum() >= 1.0 else _centre_weights(h, w)


def colour_descriptor(square: NDArray[np.uint8]) -> NDArray[np.float32]:
    """One (h, w, 3) uint8 RGB image -> a unit ``COLOUR_DIM`` vector (see module doc)."""
    image = Image.fromarray(square, "RGB")
    if image.size != (COLOUR_SIZE, COLOUR_SIZE):
        image = image.resize((COLOUR_SIZE, COLOUR_SIZE), Image.Resampling.BOX)
    rgb = np.asarray(image, dtype=np.uint8)
    hsv = np.asarray(image.convert("HSV"), dtype=np.int32)
    hue = np.minimum(hsv[..., 0] * HUE_BINS // 256, HUE_BINS - 1)
    sat = np.minimum(hsv[..., 1] * SAT_BINS // 256, SAT_BINS - 1)
    val = np.minimum(hsv[..., 2] * VAL_BINS // 256, VAL_BINS - 1)
    bins = (hue * SAT_BINS + sat) * VAL_BINS + val
    weights = foreground_weights(rgb)
    hist = np.bincount(bins.ravel(), weights=weights.ravel(), minlength=COLOUR_DIM)
    hist = np.sqrt(hist / max(float(hist.sum()), 1e-12))
    out: NDArray[np.float32] = (hist / max(float(np.linalg.norm(hist)), 1e-12)).astype(np.float32)
    return out


def colour_descriptors(batch: NDArray[np.generic]) -> NDArray[np.float32]:
    """(n, h, w, 3) RGB in 0..255 (any dtype) -> (n, ``COLOUR_DIM``) unit rows."""
    out = np.empty((len(batch), COLOUR_DIM), dtype=np.float32)
    for i, square in enumerate(batch):
        out[i] = colour_descriptor(np.clip(np.asarray(square), 0, 255).astype(np.uint8))
    return out
