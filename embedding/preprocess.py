"""RGB image -> the square, fixed-size pixel array the network takes.

Two ways to make a photo square:

* ``pad`` (default): fit the whole image inside the square and fill the rest with white.
  Catalog photos are products on white; cropping would cut off the ends of long products
  (a yoga mat, a lamp) and make the same product at two aspect ratios look different.
* ``crop``: the reference ImageNet evaluation transform: a centred square of 224/(224+32) =
  0.875 of the short side (``preprocessing.py`` in tensorflow/tpu, CROP_FRACTION), resized.

Resizing is bicubic, as in the reference eval transform. PIL's bicubic filter is
antialiased when it shrinks; TF1's ``resize_bicubic`` was not, so a large downscale differs
slightly from the original pipeline, in the direction of fewer aliasing artefacts.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import Enum

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from embedding.names import parse_member

CROP_FRACTION = 0.875
PAD_COLOUR = (255, 255, 255)
RESAMPLE = Image.Resampling.BICUBIC


class SquareMode(str, Enum):
    """How a non-square photo becomes square; the value goes into model_version."""

    PAD = "pad"
    CROP = "crop"

    @classmethod
    def parse(cls, value: str | SquareMode) -> SquareMode:
        return parse_member(cls, value, str(value).strip().lower(), "square mode")


def pad_to_square(image: Image.Image, size: int) -> Image.Image:
    """Scale the long side to ``size`` and centre the image on a white ``size`` square.

    Resizing before padding gives the same picture as padding first, without building a
    huge white canvas for a 40-megapixel photo.
    """
    w, h = image.size
    scale = size / max(w, h)
    new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
    resized = image if (new_w, new_h) == (w, h) else image.resize((new_w, new_h), RESAMPLE)
    canvas = Image.new("RGB", (size, size), PAD_COLOUR)
    canvas.paste(resized, ((size - new_w) // 2, (size - new_h) // 2))
    return canvas


def centre_crop(image: Image.Image, size: int) -> Image.Image:
    """The reference eval crop: centred square of CROP_FRACTION of the short side, resized."""
    w, h = image.size
    side = max(1, int(size / (size + round(size * (1 / CROP_FRACTION - 1))) * min(w, h)))
    left, top = (w - side + 1) // 2, (h - side + 1) // 2
    return image.resize((size, size), RESAMPLE, box=(left, top, left + side, top + side))


def to_square(
    image: Image.Image, size: int, mode: SquareMode | str = SquareMode.PAD
) -> Image.Image:
    """An RGB ``size`` x ``size`` image made from ``image`` the way ``mode`` says."""
    if image.mode != "RGB":
        image = image.convert("RGB")
    if SquareMode.parse(mode) is SquareMode.CROP:
        return centre_crop(image, size)
    return pad_to_square(image, size)


def preprocess_image(
    image: Image.Image, size: int, mode: SquareMode | str = SquareMode.PAD
) -> NDArray[np.uint8]:
    """One image as a (size, size, 3) uint8 array, RGB, values 0..255."""
    return np.asarray(to_square(image, size, mode), dtype=np.uint8)


def preprocess_batch(
    images: Sequence[Image.Image], size: int, mode: SquareMode | str = SquareMode.PAD
) -> NDArray[np.float32]:
    """Images as an (n, size, size, 3) float32 array in 0..255, ready for the model."""
    out = np.empty((len(images), size, size, 3), dtype=np.float32)
    for i, image in enumerate(images):
        out[i] = preprocess_image(image, size, mode)
    return out
