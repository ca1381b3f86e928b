"""What a scene photo searches with (:mod:`search.scene`): its product cut out on white and
turned square-on, ten windows of it, and the photo under catalog light. Every image search
calls these on its query, so odd photos must give nothing rather than an error."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image, ImageOps

from search import scene
from search.features import photo_features
from tests.fakes import on_counter, printed_pack


def test_a_reshot_product_is_cut_out_onto_white() -> None:
    shot = on_counter(printed_pack("CRUNCHY"))
    features = photo_features(shot)
    cutout = scene.product_on_white(shot, features.product)
    assert cutout is not None
    assert cutout.width < shot.width and cutout.height < shot.height  # cropped to the product
    rgb = np.asarray(cutout)
    assert (rgb[0, 0] == 255).all() and (rgb[-1, -1] == 255).all()  # the backdrop is gone
    centre = rgb[rgb.shape[0] // 2, rgb.shape[1] // 2]
    assert not (centre == 255).all()  # the product is not
    assert scene.product_on_white(printed_pack("CRUNCHY"), None) is None
    # scene.cutouts segments as photo_features does, and the same photo always gives the
    # same cut-out (GrabCut's k-means is seeded): a query searches the same way every time
    same = scene.cutouts(shot)
    assert len(same) == 1  # upright: no square-on front besides
    assert [np.asarray(scene.cutouts(shot)[0]).tobytes() for _ in range(4)] == [
        np.asarray(same[0]).tobytes()] * 4
    assert scene.cutouts(printed_pack("CRUNCHY")) == []  # on white: no cut-out


def _box_front(name: str) -> Image.Image:
    """A pack's printed front filling its rectangle (a box: no white around the print)."""
    rgb = np.asarray(printed_pack(name).convert("RGB")).copy()
    rgb[rgb.min(axis=2) >= 235] = (236, 196, 64)
    return Image.fromarray(rgb)


def _skewed(photo: Image.Image) -> Image.Image:
    """``photo`` seen at an angle: its corners moved by 4-12% of its sides, on white."""
    w, h = photo.size
    corners = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
    moved = corners + np.float32([[0.10 * w, 0.04 * h], [-0.02 * w, 0.10 * h],
                                  [-0.08 * w, -0.03 * h], [0.04 * w, -0.12 * h]])
    warp = cv2.getPerspectiveTransform(corners, moved)
    rgb = cv2.warpPerspective(np.asarray(photo.convert("RGB")), warp, (w, h),
                              borderMode=cv2.BORDER_CONSTANT, borderValue=(255, 255, 255))
    return ImageOps.expand(Image.fromarray(rgb), border=20, fill=(255, 255, 255))


def _grey_correlation(a: Image.Image, b: Image.Image) -> float:
    x, y = (np.asarray(i.convert("L").resize((64, 64)), dtype=np.float64).ravel() for i in (a, b))
    return float(np.corrcoef(x, y)[0, 1])


def test_a_pack_reshot_at_an_angle_is_turned_square_on() -> None:
    """A flat front seen at an angle (its segmented outline a quadrilateral) is warped back
    into the rectangle it was: closer to the catalog photo than the skewed cut-out. An image
    search adds it after the cut-out."""
    pack = _box_front("CRUNCHY")
    shot = on_counter(_skewed(pack))
    mask = photo_features(shot).product
    assert mask is not None
    front = scene.front_on_white(shot, mask)
    cut = scene.product_on_white(shot, mask)
    assert front is not None and cut is not None
    assert front.width / front.height == pytest.approx(pack.width / pack.height, rel=0.15)
    rgb = np.asarray(front)
    assert (rgb[0, 0] == 255).all() and (rgb[-1, -1] == 255).all()  # on white, with room
    assert _grey_correlation(front, pack) > _grey_correlation(cut, pack) + 0.1
    assert [c.tobytes() for c in scene.cutouts(shot)] == [cut.tobytes(), front.tobytes()]


def test_only_a_skewed_quadrilateral_is_turned() -> None:
    """An upright, square-on pack is its cut-out already; a product of another shape (a
    disc, a garment's outline) is not a flat face; no mask, no front."""
    upright = on_counter(_box_front("CRUNCHY"))
    mask = photo_features(upright).product
    assert mask is not None
    assert scene.front_on_white(upright, mask) is None
    disc = np.zeros((160, 160), bool)
    yy, xx = np.mgrid[:160, :160]
    disc[(yy - 80) ** 2 + (xx - 80) ** 2 < 60**2] = True
    assert scene.front_on_white(Image.new("RGB", (320, 320), "grey"), disc) is None
    shirt = np.zeros((160, 160), bool)
    shirt[30:150, 50:110] = True  # body
    shirt[30:70, 10:150] = True  # sleeves
    assert scene.front_on_white(Image.new("RGB", (320, 320), "grey"), shirt) is None
    assert scene.front_on_white(upright, None) is None
    assert scene.front_on_white(upright, np.zeros((160, 160), bool)) is None


@pytest.mark.parametrize("size", [(1, 1), (1, 5000), (5000, 1), (20, 20), (3000, 20), (400, 400)])
def test_odd_photos_get_no_cut_out_and_raise_nothing(size: tuple[int, int]) -> None:
    """A query of any shape goes through ``cutouts`` (every image search calls it):
    slivers, tiny photos, noise and one flat colour give no cut-out, not an error."""
    rng = np.random.default_rng(size[0] * 7 + size[1])
    noise = Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))
    for photo in (noise, Image.new("RGB", size, (10, 20, 30)), Image.new("RGB", size, "white")):
        assert scene.cutouts(photo) == []


def test_a_scene_photo_has_ten_windows_and_a_photo_on_white_none() -> None:
    """``scene.windows``: at 60% and 75% of a scene photo's sides, its four corners and its
    centre, in that order; a photo whose border tells its background (on white, padded)
    has none, its product being the photo already."""
    shot = on_counter(printed_pack("CRUNCHY"))
    crops = scene.windows(shot)
    assert len(crops) == 10
    width, height = shot.size
    for n, crop in enumerate(crops):
        scale = scene.WINDOW_SCALES[n // 5]
        assert crop.size == (round(width * scale), round(height * scale))
    pixels = np.asarray(shot)
    w75, h75 = crops[8].size
    assert np.array_equal(np.asarray(crops[0]), pixels[: crops[0].height, : crops[0].width])
    assert np.array_equal(np.asarray(crops[8]), pixels[height - h75 :, width - w75 :])
    centre = np.asarray(crops[9])
    x, y = (width - w75) // 2, (height - h75) // 2
    assert np.array_equal(centre, pixels[y : y + h75, x : x + w75])
    assert scene.windows(printed_pack("CRUNCHY")) == []
    assert scene.windows(ImageOps.expand(printed_pack("CRUNCHY"), 30, (40, 90, 200))) == []


def test_white_patch_brings_a_scene_back_under_catalog_light() -> None:
    """``scene.white_patch``: a scene photographed under a dimmer, warmer light (each channel
    scaled down) comes back to the light it had, read off its brightest pixels; a photo
    white in every channel already is left as it is; a dark photo without any white (a
    close-up of dark fabric) is lifted by at most ``LIGHT_MAX_GAIN``, not into grey."""
    studio = scene.white_patch(on_counter(printed_pack("CRUNCHY")))
    assert scene.is_scene(studio) and not scene.is_scene(printed_pack("CRUNCHY"))
    pixels = np.asarray(studio, dtype=np.float32)
    assert np.array_equal(np.asarray(scene.white_patch(studio)), np.asarray(studio))
    dim = Image.fromarray(np.round(pixels * [0.8, 0.88, 0.72]).astype(np.uint8))
    back = np.asarray(scene.white_patch(dim), dtype=np.float32)
    before = np.abs(np.asarray(dim, dtype=np.float32) - pixels).mean()
    assert before > 25 and np.abs(back - pixels).mean() < 2.5
    rng = np.random.default_rng(3)
    dark = rng.integers(20, 101, (120, 160, 3), dtype=np.uint8)
    lifted = np.asarray(scene.white_patch(Image.fromarray(dark)), dtype=np.float32)
    assert np.allclose(lifted, np.minimum(255, np.round(dark * scene.LIGHT_MAX_GAIN)), atol=1)


@pytest.mark.parametrize("size", [(1, 1), (1, 5000), (5000, 1), (20, 20), (3000, 20), (400, 400)])
def test_odd_photos_get_windows_or_none_and_raise_nothing(size: tuple[int, int]) -> None:
    """Every image search calls ``scene.windows`` too (and ``white_patch``): slivers, tiny
    photos, noise and one flat colour give no windows or ten non-empty ones, never an error."""
    rng = np.random.default_rng(size[0] * 7 + size[1])
    noise = Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))
    for photo in (noise, Image.new("RGB", size, (10, 20, 30)), Image.new("RGB", size, "white")):
        crops = scene.windows(photo)
        assert len(crops) in (0, 10)
        assert all(min(crop.size) >= 1 for crop in crops)
        assert scene.white_patch(photo).size == photo.size
    assert scene.windows(Image.new("RGB", size, "white")) == []
