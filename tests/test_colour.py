"""The colour descriptor (embedding/colour.py) and how the embedder mixes it in."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.typing import NDArray
from PIL import Image, ImageDraw

from embedding.colour import (
    BACKGROUND_TOLERANCE,
    COLOUR_DIM,
    background_mask,
    colour_descriptor,
    colour_descriptors,
    colour_version,
    foreground_weights,
)
from embedding.embedder import l2_normalise, mix_colour, model_version
from embedding.preprocess import pad_to_square

RED, BLUE, NAVY, WHITE = (200, 30, 30), (30, 60, 200), (20, 25, 70), (255, 255, 255)


def shirt(colour: tuple[int, int, int], *, background: tuple[int, int, int] = WHITE,
          size: tuple[int, int] = (160, 200), offset: int = 0, back: bool = False) -> Image.Image:
    """A T-shape 'shirt' on a plain background; ``back`` draws it without the collar."""
    image = Image.new("RGB", size, background)
    d = ImageDraw.Draw(image)
    w, h = size
    d.rectangle((w // 4 + offset, h // 5, 3 * w // 4 + offset, 9 * h // 10), fill=colour)
    d.rectangle((w // 10 + offset, h // 5, 9 * w // 10 + offset, h // 3), fill=colour)
    if not back:
        d.ellipse((w // 2 - 12 + offset, h // 5 - 6, w // 2 + 12 + offset, h // 5 + 10), fill=WHITE)
    return image


def desc(image: Image.Image) -> NDArray[np.float32]:
    return colour_descriptor(np.asarray(pad_to_square(image, 224)))


def test_descriptor_is_a_unit_vector_of_fixed_size() -> None:
    v = desc(shirt(RED))
    assert v.shape == (COLOUR_DIM,) and v.dtype == np.float32
    assert np.linalg.norm(v) == pytest.approx(1.0, abs=1e-6)
    assert (v >= 0).all()


def test_same_colour_other_view_matches_and_other_colours_do_not() -> None:
    front, back = desc(shirt(RED)), desc(shirt(RED, back=True, offset=15, size=(200, 200)))
    blue, navy = desc(shirt(BLUE)), desc(shirt(NAVY))
    assert float(front @ back) > 0.95
    assert float(front @ blue) < 0.2
    assert float(front @ navy) < 0.2
    assert float(blue @ navy) < float(front @ back)


def test_white_background_and_padding_do_not_count() -> None:
    # the same product with much more white around it has the same colour description
    small = shirt(RED, size=(160, 200))
    roomy = Image.new("RGB", (600, 400), WHITE)
    roomy.paste(small, (220, 100))
    assert float(desc(small) @ desc(roomy)) > 0.97


def test_uniform_non_white_background_is_detected() -> None:
    grey = (128, 128, 128)
    on_grey, on_white = desc(shirt(RED, background=grey)), desc(shirt(RED))
    assert float(on_grey @ on_white) > 0.9  # edge pixels blend with the background
    mask = foreground_weights(np.asarray(shirt(RED, background=grey)))
    assert mask[0, 0] == 0.0 and mask[100, 80] == 1.0


def shaded_ball(colour: tuple[int, int, int], backdrop: tuple[int, int, int],
                noise: float = 0.0) -> tuple[NDArray[np.uint8], NDArray[np.bool_]]:
    """A plain ball lit from above (its colour x1.15 at the top to x0.8 at the bottom) on a
    one-colour backdrop, with sensor ``noise`` (standard deviation) over the whole photo;
    (photo, where the ball is)."""
    size = 160
    yy, xx = np.mgrid[:size, :size]
    ball = (yy - 80) ** 2 + (xx - 80) ** 2 <= 60 ** 2
    shade = np.linspace(1.15, 0.8, size, dtype=np.float32)[:, None, None]
    rgb = np.where(ball[..., None], np.array(colour, np.float32) * shade,
                   np.array(backdrop, np.float32))
    rgb = rgb + np.random.default_rng(0).normal(0.0, noise, rgb.shape) if noise else rgb
    return np.clip(rgb, 0, 255).astype(np.uint8), ball


def test_a_snug_background_keeps_a_product_near_its_backdrops_colour() -> None:
    """A grey-blue ball on a lavender sweep: the fixed tolerance takes its lit top for the
    backdrop, the tolerance fitted to the backdrop's own spread keeps it."""
    rgb, ball = shaded_ball((150, 158, 196), (178, 178, 222))
    fixed, snug = background_mask(rgb), background_mask(rgb, snug=True)
    assert fixed is not None and snug is not None
    assert np.count_nonzero(~fixed & ball) < 0.8 * np.count_nonzero(ball)
    assert np.count_nonzero(~snug & ball) > 0.97 * np.count_nonzero(ball)
    assert not np.any(~snug & ~ball)  # and none of the backdrop


def test_a_noisy_or_untold_background_keeps_the_fixed_tolerance() -> None:
    """A backdrop whose pixels spread widely (noise, a soft gradient) needs the whole
    tolerance, and gets it; a padded photo and a border that tells no background are as
    :func:`background_mask` without ``snug`` has them."""
    noisy, _ = shaded_ball((140, 150, 185), (178, 178, 222), noise=BACKGROUND_TOLERANCE / 4)
    assert np.array_equal(background_mask(noisy, snug=True), background_mask(noisy))
    padded = np.asarray(pad_to_square(shirt(RED, background=(128, 128, 128), size=(120, 200)),
                                      200))
    assert np.array_equal(background_mask(padded, snug=True), background_mask(padded))
    cluttered = np.random.default_rng(1).integers(0, 256, (64, 64, 3)).astype(np.uint8)
    assert background_mask(cluttered, snug=True) is None and background_mask(cluttered) is None


def test_cluttered_border_falls_back_to_centre_weighting() -> None:
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, size=(120, 120, 3), dtype=np.uint8)
    weights = foreground_weights(noise)
    assert weights.shape == (120, 120)
    assert weights[60, 60] > 0.95 and weights[0, 0] < 0.15  # a centred Gaussian, not a mask
    assert weights.max() <= 1 and (weights > 0).mean() > 0.9


@pytest.mark.parametrize("value", [0, 255, 128])
def test_blank_or_tiny_images_still_give_a_unit_vector(value: int) -> None:
    blank = np.full((224, 224, 3), value, dtype=np.uint8)
    assert np.linalg.norm(colour_descriptor(blank)) == pytest.approx(1.0, abs=1e-6)
    tiny = np.full((2, 2, 3), value, dtype=np.uint8)
    assert np.linalg.norm(colour_descriptor(tiny)) == pytest.approx(1.0, abs=1e-6)


def test_batch_form_matches_single_and_accepts_float_input() -> None:
    squares = np.stack([np.asarray(pad_to_square(shirt(c), 224)) for c in (RED, BLUE)])
    batch = colour_descriptors(squares.astype(np.float32))
    np.testing.assert_allclose(batch[0], colour_descriptor(squares[0]), atol=1e-6)
    np.testing.assert_allclose(batch[1], colour_descriptor(squares[1]), atol=1e-6)
    assert colour_descriptors(np.empty((0, 224, 224, 3), np.uint8)).shape == (0, COLOUR_DIM)


def test_mixing_sets_how_far_colour_moves_the_cosine() -> None:
    rng = np.random.default_rng(1)
    cnn = rng.normal(size=(2, 1280)).astype(np.float32) + 0.5
    colour = l2_normalise(np.abs(rng.normal(size=(2, COLOUR_DIM))).astype(np.float32))
    w = 0.5
    mixed = mix_colour(cnn, colour, w)
    assert mixed.shape == (2, 1280 + COLOUR_DIM)
    np.testing.assert_allclose(np.linalg.norm(mixed, axis=1), 1.0, atol=1e-5)
    cnn_cos = float(l2_normalise(cnn)[0] @ l2_normalise(cnn)[1])
    expected = (cnn_cos + w * w * float(colour[0] @ colour[1])) / (1 + w * w)
    assert float(mixed[0] @ mixed[1]) == pytest.approx(expected, abs=1e-5)


def test_model_version_names_the_colour_part() -> None:
    plain = model_version("lite0", "pad", 0.0)
    assert plain == "efficientnet-lite0-imagenet-gap-pad224-v1"  # old vectors stay valid
    assert model_version("lite0", "pad", 0.0) == plain
    mixed = model_version("lite0", "pad", 0.5)
    assert mixed == f"{plain}+{colour_version()}-w0.5"
    assert model_version("lite0", "pad", 0.7) != mixed


def test_near_image_answers_as_the_float_comparison_does() -> None:
    """The in-place integer test of an image (cv2.inRange) is the float comparison exactly,
    for colours on whole and half values (a median of the ring) and at either end of the
    range, where the tolerance reaches past 0 or 255."""
    from embedding.colour import _near, _near_image

    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, size=(64, 48, 3), dtype=np.uint8)
    image[:8] = 255  # some white, some near it
    image[8:12] = 226
    colours = [np.array(c, np.float32) for c in (
        (255, 255, 255), (0, 0, 0), (225.5, 226, 254.5), (30, 30.5, 29.5), (128, 64, 200),
        (285.5, 255, 255), (-30.5, 0, 0))]
    colours += [rng.uniform(0, 255, 3).round(1).astype(np.float32) for _ in range(20)]
    for colour in colours:
        expected = _near(image.astype(np.float32), colour)
        assert np.array_equal(_near_image(image, colour), expected), colour
    assert _near_image(image, np.array((255, 255, 255), np.float32))[:8].all()
