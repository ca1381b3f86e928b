"""What a scene photo searches with, and the segmentation it shares with verification.

A shopper's snapshot, an in-store photo or a product re-shot on a backdrop has no border that
tells its background (:func:`is_scene`). An image search with such a photo also searches with
(:func:`scene_queries`, the one recipe of :meth:`search.api.ProductSearch.query_vectors` and of
``lookalike eval``):

* the photo under catalog light (:func:`white_patch`);
* its product cut out on white, and turned square-on when it is one flat face seen at an
  angle (:func:`cutouts`: GrabCut segments it, :func:`product_mask`);
* ten crops of it (:func:`windows`), one of which a product that fills part of the scene fills.

The segmentation is also what :mod:`search.verify` compares two re-shot photos over, read at
the same scale (:data:`VERIFY_SIZE`, halved), so that a cut-out is the product verification
sees. Why each of them: docs/matching.md ("Window queries", "Scene queries under catalog
light", "Cut-out queries", "Square-on fronts and fainter keypoints").
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from numpy.typing import NDArray
from PIL import Image

from embedding.colour import background_mask

VERIFY_SIZE = 320
"""Long side (px) a photo is read at, to be segmented here and compared in
:mod:`search.verify`: one scale, so that a query's cut-out is the product verification sees."""
WORKING_SIDE = 1280
"""Long side (px) at which a query photo's scene pictures are made, from the photo shrunk
to it when longer (:func:`embedding.decode.shrink_to`;
:meth:`search.api.ProductSearch.query_vectors`, price comparison, ``lookalike eval``): its
light, cut-outs and windows, and price comparison's quarter turns. The photo itself is
embedded, and its keypoints found, on the decode, which is then let go. It covers what
those pictures are read at: a window at ``min(WINDOW_SCALES)`` of the photo on a model
input of up to 768 px, and a cut-out of a product a quarter of the photo's long side on the
largest model input (EfficientNet-Lite4's 300 px; 224 px by default). A
40-megapixel upload (just under ``images.max_pixels``) was kept at full size, once more as
each of its scene pictures, and decoded again to verify: ~290 MB and 2.6 s a photo, 16 of
them in one request +2.3 GB (docs/hardening.md, "Query photos")."""
SEGMENT_PX = 80
"""Long side (px) at which a photo whose border does not tell its background is segmented
(:func:`product_mask`; ~10 ms, p95 16 ms)."""
SEGMENT_INSET = 0.03
"""Share of the frame on each side that GrabCut starts from as background."""
SEGMENT_STEPS = 3
"""GrabCut iterations."""
SEGMENT_SEED = 0
"""Seed of OpenCV's generator for GrabCut (:func:`product_mask`): the same photo, the same mask."""
CUTOUT_GROW_PX = 2
"""The product mask is grown by this many px (at half ``VERIFY_SIZE``) before the cut-out
(:func:`product_on_white`): GrabCut's edge at 80 px is coarse."""
CUTOUT_ROOM = 0.025
"""Room left around the cut-out product, as a share of the photo's long side."""
QUAD_MIN_FIT = 0.9
"""Share of a segmented product that a quadrilateral must match (1 - the area where the two
differ / the product's area) for :func:`front_on_white` to take the product for one flat
face seen at an angle (a box, a carton, a pack's front): 0.94-0.98 for most re-shot packs
of same-item-packs, 0.5-0.8 for re-shot garments (same-item-reshoot), which never pass."""
QUAD_MIN_SKEW = 0.03
"""How far (a share of the quadrilateral's long side) one of its corners must lie from the
corner of its upright bounding box for :func:`front_on_white` to turn it: an upright,
square-on face is already its :func:`product_on_white`."""
CUTOUT_VERSION = "cutout-v2-w1280"
"""Names how :func:`cutouts` cuts, for caches of cut-out vectors (evaluation/run.py): change it
when the segmentation or the cut-out changes."""
WINDOW_SCALES = (0.6, 0.75)
"""Sides of the :func:`windows` of a scene photo, as shares of the photo's (each scale: the
four corners and the centre)."""
WINDOW_VERSION = "windows-2x5-v1-w1280"
"""Names how :func:`windows` crops, for caches of window vectors (evaluation/run.py)."""
LIGHT_PERCENTILE = 99.0
"""The share of a scene photo's pixels (per channel, as a percentile) that :func:`white_patch`
takes to be below white: the brightest 1% of a photo are taken for white."""
LIGHT_MAX_GAIN = 1.5
"""The most :func:`white_patch` lifts a channel: re-shot and in-store stand-ins need 1.1-1.5
(the 90th percentile of their gains), while a close-up of dark fabric, whose brightest
pixels are not white, would be lifted up to 2.5x into another colour."""
LIGHT_VERSION = "whitepatch-p99-g1.5-v1-w1280"
"""Names how :func:`white_patch` corrects, for caches of scene vectors (evaluation/run.py)."""


def at_verify_size(image: Image.Image) -> Image.Image:
    """``image`` at ``VERIFY_SIZE`` on its long side (RGB). An RGB photo is not copied first:
    the keypoints of a query photo are found on its decode itself, up to 40 megapixels
    (160 MB a copy)."""
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    scale = VERIFY_SIZE / max(rgb.size)
    if scale < 1.0 or max(rgb.size) < VERIFY_SIZE // 2:  # shrink big, enlarge tiny (28 px) photos
        size = (max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale)))
        rgb = rgb.resize(size, Image.Resampling.BILINEAR)
    return rgb


def half_size(rgb: Image.Image) -> NDArray[np.uint8]:
    """The photo at exactly half its size (:data:`search.features.TO_HALF`): an odd last row or
    column is left out first, so that the scale is one half across the whole photo (not 130 /
    261)."""
    width, height = max(1, rgb.width // 2), max(1, rgb.height // 2)
    even = rgb.crop((0, 0, min(rgb.width, 2 * width), min(rgb.height, 2 * height)))
    return np.asarray(even.resize((width, height), Image.Resampling.BILINEAR), dtype=np.uint8)


def cutouts(image: Image.Image) -> list[Image.Image]:
    """:func:`product_on_white` of ``image`` with its product segmented as
    :func:`search.features.photo_features` segments it, followed by :func:`front_on_white` when
    the product is a flat face seen at an angle; empty for a photo whose border tells its
    background (a catalog photo on white, a padded one) or without a product found."""
    return cutouts_of(image, product_mask(half_size(at_verify_size(image))))


def cutouts_of(image: Image.Image, product: NDArray[np.bool_] | None) -> list[Image.Image]:
    """:func:`product_on_white` and, when it gives one, :func:`front_on_white` of ``image``
    with its segmented ``product`` (a :func:`product_mask`, at any scale)."""
    found = (product_on_white(image, product), front_on_white(image, product))
    return [picture for picture in found if picture is not None]


def is_scene(image: Image.Image) -> bool:
    """Whether a photo's border does not tell its background (a shopper's snapshot, a product
    re-shot in a scene): the test :func:`windows`, :func:`cutouts` and :func:`white_patch`
    are made for; False for a photo on white or padded, and for one too small to tell."""
    return _scene_pixels(half_size(at_verify_size(image)))


def _scene_pixels(rgb: NDArray[np.uint8]) -> bool:
    """:func:`is_scene` of a photo at half ``VERIFY_SIZE`` (as :func:`product_mask` reads it)."""
    return min(rgb.shape[:2]) >= 16 and background_mask(rgb) is None


def white_patch(image: Image.Image) -> Image.Image:
    """``image`` under the light of a catalog shot: each channel scaled so that its
    :data:`LIGHT_PERCENTILE`-th percentile becomes white, by at most :data:`LIGHT_MAX_GAIN`
    (the "white patch" estimate of the light: the brightest pixels of a scene are taken for
    white). A re-shot or in-store photo is darker and tinted where the catalog photo it must
    find is lit for the studio; the CNN and the colour histogram both read it closer to that
    photo once corrected (docs/matching.md, "Scene queries under catalog light"). A photo
    already white somewhere in every channel comes back as it is (``image`` itself when it
    is RGB)."""
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    scale = min(1.0, VERIFY_SIZE / max(rgb.size))
    small = rgb if scale >= 1.0 else rgb.resize(
        (max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale))),
        Image.Resampling.NEAREST)
    top = np.percentile(np.asarray(small).reshape(-1, 3), LIGHT_PERCENTILE, axis=0)
    gains = np.clip(255.0 / np.maximum(top, 1.0), 1.0, LIGHT_MAX_GAIN)
    if np.all(gains == 1.0):
        return rgb
    ramp = np.arange(256, dtype=np.float64)
    lut = np.concatenate([np.minimum(255, np.round(ramp * g)) for g in gains]).astype(np.uint8)
    return rgb.point(lut.tolist())


def windows(image: Image.Image) -> list[Image.Image]:
    """Crops of a photo whose border does not tell its background (a shopper's snapshot, a
    product re-shot in a scene): at each of ``WINDOW_SCALES`` of its sides, its four corners
    and its centre. A product that fills part of such a photo fills most of one of them, and
    a search with them all meets its catalog photo where the whole scene does not
    (docs/matching.md, "Window queries"). Empty for a photo on white or padded, whose
    product is the photo (the test :func:`product_mask` makes)."""
    if not is_scene(image):
        return []
    out = []
    for scale in WINDOW_SCALES:
        w, h = max(1, round(image.width * scale)), max(1, round(image.height * scale))
        for x, y in ((0, 0), (image.width - w, 0), (0, image.height - h),
                     (image.width - w, image.height - h),
                     ((image.width - w) // 2, (image.height - h) // 2)):
            out.append(image.crop((x, y, x + w, y + h)))
    return out


@dataclass(frozen=True)
class SceneQueries:
    """What a photo searches with beside itself (:func:`scene_queries`), in search order."""

    lit: Image.Image | None
    """The photo under catalog light (:func:`white_patch`); None when it is not a scene or
    is already under that light."""
    cutouts: list[Image.Image]
    """:func:`cutouts` of the (lit) photo."""
    windows: list[Image.Image]
    """:func:`windows` of the (lit) photo."""

    @property
    def pictures(self) -> list[Image.Image]:
        """All of them, in the order a search embeds them after the photo itself."""
        return [*([self.lit] if self.lit is not None else []), *self.cutouts, *self.windows]


def scene_queries(picture: Image.Image, *, light: bool = True, cutouts_too: bool = True,
                  windows_too: bool = True) -> SceneQueries:
    """The pictures an image search with ``picture`` adds to it, each unless turned off: the
    photo under catalog light when it is a scene, then the cut-outs and the windows of the
    lit photo. The one recipe of :meth:`search.api.ProductSearch.query_vectors` and of
    ``lookalike eval`` (:func:`evaluation.run.embed_scene_queries`), which must search as a
    service does."""
    lit = white_patch(picture) if light and is_scene(picture) else picture
    return SceneQueries(lit if lit is not picture else None,
                        cutouts(lit) if cutouts_too else [], windows(lit) if windows_too else [])


def product_mask(rgb: NDArray[np.uint8]) -> NDArray[np.bool_] | None:
    """Where a photo whose border does not tell its background shows the product (None when
    the border tells it: a catalog photo on white, a padded one; see
    :func:`embedding.colour.background_mask`). On a re-shot photo's backdrop (a gradient, a
    texture) the colour-based foreground keeps the backdrop, and two re-shots on two
    backdrops then differ over it. OpenCV's GrabCut separates product and backdrop with
    colour models fitted inside and outside a rectangle ``SEGMENT_INSET`` within the frame,
    at ``SEGMENT_PX``; the mask is enlarged back."""
    if not _scene_pixels(rgb):
        return None
    height, width = rgb.shape[:2]
    scale = min(1.0, SEGMENT_PX / max(height, width))
    size = (max(8, round(width * scale)), max(8, round(height * scale)))
    bgr = np.ascontiguousarray(cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)[:, :, ::-1])
    labels = np.zeros(bgr.shape[:2], np.uint8)
    x, y = round(size[0] * SEGMENT_INSET), round(size[1] * SEGMENT_INSET)
    models = (np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64))
    # GrabCut seeds its colour models with k-means from this thread's OpenCV generator: a
    # fixed seed makes one photo's mask (and a query's cut-out) the same on every call.
    cv2.setRNGSeed(SEGMENT_SEED)
    try:
        cv2.grabCut(bgr, labels, (x, y, size[0] - 2 * x, size[1] - 2 * y), *models,
                    SEGMENT_STEPS, cv2.GC_INIT_WITH_RECT)
    except cv2.error:
        return None
    product = ((labels == cv2.GC_FGD) | (labels == cv2.GC_PR_FGD)).astype(np.uint8)
    if int(product.sum()) < 16:
        return None
    out: NDArray[np.bool_] = cv2.resize(product, (width, height),
                                        interpolation=cv2.INTER_NEAREST) > 0
    return out


def product_on_white(image: Image.Image, product: NDArray[np.bool_] | None
                     ) -> Image.Image | None:
    """``image`` with everything but its segmented ``product`` (a :func:`product_mask`, at
    any scale) turned white, cropped to the product with a little room: a re-shot
    photo as a catalog shows it. None without a mask. Searching with it as well as with the
    photo as shot finds the catalog listing of a re-shot pack far more often (relevant
    listings in the top 20: 0.26 -> 0.42 on same-item-packs; docs/matching.md)."""
    if product is None:
        return None
    grown = cv2.dilate(product.astype(np.uint8), np.ones((CUTOUT_GROW_PX * 2 + 1,) * 2, np.uint8))
    mask = cv2.resize(grown, image.size, interpolation=cv2.INTER_NEAREST) > 0
    ys, xs = np.nonzero(mask)
    if not len(xs):
        return None
    rgb = np.array(image.convert("RGB"), dtype=np.uint8)
    rgb[~mask] = 255
    room = round(CUTOUT_ROOM * max(image.size))
    box = (max(0, int(xs.min()) - room), max(0, int(ys.min()) - room),
           min(image.width, int(xs.max()) + 1 + room), min(image.height, int(ys.max()) + 1 + room))
    return Image.fromarray(rgb).crop(box)


def front_on_white(image: Image.Image, product: NDArray[np.bool_] | None
                   ) -> Image.Image | None:
    """The product turned square-on, when it is one flat face seen at an angle: the segmented
    ``product`` (a :func:`product_mask`, at any scale) is a quadrilateral
    (:data:`QUAD_MIN_FIT`) that is skewed or turned (:data:`QUAD_MIN_SKEW`), and ``image`` is
    warped so that the quadrilateral becomes the rectangle it was, on white with a little
    room. None otherwise (no mask, another shape, already square-on). A catalog shows a
    pack's front square-on; a shopper's or a second shop's photo of it rarely does, and the
    global vector of the skewed photo ranks other packs of the same layout above it
    (docs/matching.md, "Square-on fronts and fainter keypoints")."""
    if product is None:
        return None
    corners = _quadrilateral(product)
    if corners is None:
        return None
    corners = corners * np.array([image.width / product.shape[1],
                                  image.height / product.shape[0]], np.float32)
    top_left, top_right, bottom_right, bottom_left = corners
    width = max(np.linalg.norm(top_right - top_left), np.linalg.norm(bottom_right - bottom_left))
    height = max(np.linalg.norm(bottom_left - top_left), np.linalg.norm(bottom_right - top_right))
    if min(width, height) < 8:
        return None
    low, high = corners.min(axis=0), corners.max(axis=0)
    upright = np.array([low, [high[0], low[1]], high, [low[0], high[1]]], np.float32)
    if np.linalg.norm(corners - upright, axis=1).max() < QUAD_MIN_SKEW * max(width, height):
        return None
    room = round(CUTOUT_ROOM * max(width, height))
    w, h = round(width), round(height)
    target = np.array([[room, room], [room + w, room], [room + w, room + h], [room, room + h]],
                      np.float32)
    warp = cv2.getPerspectiveTransform(corners.astype(np.float32), target)
    front = cv2.warpPerspective(np.asarray(image.convert("RGB"), dtype=np.uint8), warp,
                                (w + 2 * room, h + 2 * room), flags=cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_CONSTANT, borderValue=(255, 255, 255))
    inside = np.zeros(front.shape[:2], np.uint8)
    cv2.fillPoly(inside, [np.rint(target).astype(np.int32)], 1)
    front[inside == 0] = 255
    return Image.fromarray(front)


def _quadrilateral(product: NDArray[np.bool_]) -> NDArray[np.float32] | None:
    """The corners (top left, top right, bottom right, bottom left; px of ``product``) of the
    quadrilateral that outlines the largest region of ``product``, when it matches that
    region to :data:`QUAD_MIN_FIT`; else None."""
    mask = product.astype(np.uint8)
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return None
    hull = cv2.convexHull(max(contours, key=cv2.contourArea))
    perimeter = cv2.arcLength(hull, True)
    for tolerance in (0.02, 0.03, 0.04, 0.05):  # the fewest corner cuts that leave four
        polygon = cv2.approxPolyDP(hull, tolerance * perimeter, True)
        if len(polygon) <= 4:
            break
    if len(polygon) != 4:
        return None
    points = polygon.reshape(4, 2)
    filled = np.zeros_like(mask)
    cv2.fillPoly(filled, [points.astype(np.int32)], 1)
    if 1.0 - float((filled ^ mask).sum()) / max(1, int(mask.sum())) < QUAD_MIN_FIT:
        return None
    # Clockwise from the top left (y points down): by angle around the centre, starting
    # from the corner nearest the origin.
    points = points.astype(np.float32)
    centre = points.mean(axis=0)
    order = np.argsort(np.arctan2(points[:, 1] - centre[1], points[:, 0] - centre[0]))
    points = points[order]
    first = int(np.argmin(points.sum(axis=1)))
    out: NDArray[np.float32] = np.roll(points, -first, axis=0)
    return out
