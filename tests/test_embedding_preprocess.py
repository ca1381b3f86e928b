"""Square-making and resizing: pure PIL/numpy, no model."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from embedding.embedder import batch_buckets, l2_normalise, model_version, split_into_buckets
from embedding.preprocess import (
    SquareMode,
    centre_crop,
    preprocess_batch,
    preprocess_image,
    to_square,
)


def _red(w: int, h: int) -> Image.Image:
    return Image.new("RGB", (w, h), (255, 0, 0))


def test_pad_keeps_the_whole_image_on_white() -> None:
    arr = preprocess_image(_red(400, 200), 224, SquareMode.PAD)
    assert arr.shape == (224, 224, 3) and arr.dtype == np.uint8
    assert tuple(arr[0, 112]) == (255, 255, 255)  # band above the image
    assert tuple(arr[-1, 112]) == (255, 255, 255)
    assert tuple(arr[112, 0]) == (255, 0, 0)  # full width is kept
    assert tuple(arr[112, 223]) == (255, 0, 0)
    red_rows = np.all(arr[:, 112] == (255, 0, 0), axis=1).sum()
    assert 108 <= red_rows <= 114  # 2:1 aspect kept


def test_crop_is_the_reference_centre_crop() -> None:
    arr = np.zeros((200, 400, 3), dtype=np.uint8)
    arr[:, :100] = 255  # white only in the outer quarter on the left
    out = preprocess_image(Image.fromarray(arr), 224, "crop")
    assert out.shape == (224, 224, 3)
    assert out.max() == 0  # crop side = 0.875 * 200 = 175 px around the centre
    assert centre_crop(_red(300, 300), 224).size == (224, 224)


def test_square_input_pad_and_crop_differ_only_by_the_crop() -> None:
    img = _red(500, 500)
    assert np.array_equal(preprocess_image(img, 224, "pad"), preprocess_image(img, 224, "crop"))


def test_non_rgb_input_and_tiny_images() -> None:
    assert to_square(Image.new("L", (3, 1), 128), 224).mode == "RGB"
    assert preprocess_image(_red(1, 1), 224, SquareMode.CROP).shape == (224, 224, 3)


def test_batch_is_float32_in_pixel_range() -> None:
    batch = preprocess_batch([_red(50, 80), _red(80, 50)], 240, SquareMode.PAD)
    assert batch.shape == (2, 240, 240, 3) and batch.dtype == np.float32
    assert batch.min() == 0.0 and batch.max() == 255.0


def test_square_mode_parse() -> None:
    assert SquareMode.parse("PAD") is SquareMode.PAD
    with pytest.raises(ValueError, match="known: pad, crop"):
        SquareMode.parse("stretch")


def test_model_version_names_variant_mode_and_size() -> None:
    assert model_version("lite0", "pad", 0.0) == "efficientnet-lite0-imagenet-gap-pad224-v1"
    assert (model_version("lite2", SquareMode.CROP, 0.0)
            == "efficientnet-lite2-imagenet-gap-crop260-v1")


def test_batch_buckets_and_normalise() -> None:
    assert batch_buckets(32) == [1, 2, 4, 8, 16, 32]
    assert batch_buckets(48) == [1, 2, 4, 8, 16, 32, 48]
    assert batch_buckets(1) == [1]
    x = np.array([[3.0, 4.0], [0.0, 0.0]], dtype=np.float32)
    np.testing.assert_allclose(l2_normalise(x), [[0.6, 0.8], [0.0, 0.0]])


def test_batches_split_into_buckets_without_padding() -> None:
    buckets = batch_buckets(128)
    assert split_into_buckets(104, buckets) == [64, 32, 8]
    assert split_into_buckets(128, buckets) == [128]
    assert split_into_buckets(1, buckets) == [1]
    assert split_into_buckets(0, buckets) == []
    assert split_into_buckets(47, batch_buckets(48)) == [32, 8, 4, 2, 1]
    for n in range(0, 129):
        assert sum(split_into_buckets(n, buckets)) == n
    with pytest.raises(ValueError, match="no size 1"):
        split_into_buckets(3, [2])
