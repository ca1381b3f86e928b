"""decode_image / load_image: orientation, colour modes, broken files and decompression bombs."""

from __future__ import annotations

import io
import os
import struct
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import embedding.decode
from embedding.decode import (
    declared_pixels,
    decode_image,
    decode_images,
    load_image,
    load_images,
    shrink_to,
)
from schema.errors import ItemError

MAX = 40_000_000


def _encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **params)
    return buf.getvalue()


def _two_halves(w: int = 40, h: int = 20) -> Image.Image:
    """Left half red, right half blue: tells rotations apart."""
    arr = np.zeros((h, w, 3), dtype=np.uint8)
    arr[:, : w // 2] = (255, 0, 0)
    arr[:, w // 2 :] = (0, 0, 255)
    return Image.fromarray(arr)


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims ``width`` x ``height``; the pixel data is a few bytes."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 16))
        + chunk(b"IEND", b"")
    )


def _reason(data: bytes, max_pixels: int = MAX) -> str:
    with pytest.raises(ItemError) as info:
        decode_image(data, max_pixels)
    return info.value.reason


# ------------------------------------------------------------------ orientation and modes


def test_exif_orientation_is_applied() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    data = _encode(_two_halves(40, 20), "JPEG", exif=exif.tobytes(), quality=95)
    image = decode_image(data, MAX)
    assert image.size == (20, 40)
    px = np.asarray(image).astype(int)
    assert px[5, 10, 0] > 200 and px[5, 10, 2] < 60  # the left (red) half is now on top
    assert px[35, 10, 2] > 200 and px[35, 10, 0] < 60


def test_plain_jpeg_is_rgb_and_unchanged_in_size() -> None:
    image = decode_image(_encode(_two_halves(), "JPEG"), MAX)
    assert image.mode == "RGB" and image.size == (40, 20)


def test_transparent_rgba_becomes_white() -> None:
    arr = np.zeros((8, 8, 4), dtype=np.uint8)
    arr[:, 4:] = (255, 0, 0, 128)  # half-transparent red on the right
    image = decode_image(_encode(Image.fromarray(arr), "PNG"), MAX)
    px = np.asarray(image).astype(int)
    assert image.mode == "RGB"
    assert tuple(px[0, 0]) == (255, 255, 255)
    assert px[0, 7, 0] == 255 and 120 <= px[0, 7, 1] <= 135


def test_la_becomes_white_where_transparent() -> None:
    arr = np.zeros((4, 4, 2), dtype=np.uint8)  # black, fully transparent
    image = decode_image(_encode(Image.fromarray(arr, "LA"), "PNG"), MAX)
    assert tuple(np.asarray(image)[0, 0]) == (255, 255, 255)


def test_palette_with_transparency_index_becomes_white() -> None:
    pal = Image.new("P", (4, 4), 0)
    pal.putpalette([0, 0, 0, 0, 255, 0] + [0] * 762)
    pal.putpixel((3, 3), 1)
    image = decode_image(_encode(pal, "GIF", transparency=0), MAX)
    px = np.asarray(image)
    assert image.mode == "RGB"
    assert tuple(px[0, 0]) == (255, 255, 255) and tuple(px[3, 3]) == (0, 255, 0)


def test_palette_without_transparency_keeps_colours() -> None:
    image = decode_image(_encode(_two_halves().convert("P"), "PNG"), MAX)
    px = np.asarray(image)
    assert image.mode == "RGB" and tuple(px[0, 0]) == (255, 0, 0)


def test_cmyk_jpeg_becomes_rgb() -> None:
    cmyk = Image.new("CMYK", (16, 16), (0, 255, 255, 0))  # pure red in CMYK terms
    image = decode_image(_encode(cmyk, "JPEG", quality=95), MAX)
    r, g, b = np.asarray(image)[8, 8].astype(int)
    assert image.mode == "RGB" and r > 200 and g < 60 and b < 60


@pytest.mark.parametrize("mode", ["L", "1"])
def test_grey_and_bilevel_become_rgb(mode: str) -> None:
    image = decode_image(_encode(Image.new(mode, (6, 6), 255), "PNG"), MAX)
    assert image.mode == "RGB" and tuple(np.asarray(image)[0, 0]) == (255, 255, 255)


def test_sixteen_bit_grey_is_scaled_not_clipped() -> None:
    arr = np.array([[0, 32896, 65535]], dtype=np.uint16)
    image = decode_image(_encode(Image.fromarray(arr), "PNG"), MAX)
    assert image.mode == "RGB"
    assert list(np.asarray(image)[0, :, 0]) == [0, 128, 255]


# ------------------------------------------------------------------ broken input


def test_truncated_jpeg_is_corrupt() -> None:
    noise = np.random.default_rng(0).integers(0, 255, (128, 128, 3), dtype=np.uint8)
    data = _encode(Image.fromarray(noise), "JPEG")
    assert _reason(data[: len(data) // 2]) == "corrupt_image"


def test_random_bytes_and_empty_input_are_errors() -> None:
    assert _reason(os.urandom(2048)) == "unsupported_format"
    assert _reason(b"") == "corrupt_image"


def test_heic_from_a_phone_is_opened_turned_and_capped() -> None:
    """HEIC, an iPhone's default format, decodes like a JPEG: RGB, its colours, the turn the
    phone recorded applied once (pillow-heif applies it and resets the EXIF tag, so it is not
    turned twice), and its pixel count checked from the header before decoding."""
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    data = _encode(_two_halves(40, 20), "HEIF", exif=exif.tobytes(), quality=95)
    assert data[4:12] == b"ftypheic"
    image = decode_image(data, MAX)
    assert image.mode == "RGB" and image.size == (20, 40)
    px = np.asarray(image).astype(int)
    assert px[5, 10, 0] > 200 and px[5, 10, 2] < 60  # the left (red) half is now on top
    assert px[35, 10, 2] > 200 and px[35, 10, 0] < 60
    large = _encode(Image.new("RGB", (2000, 1500), (10, 200, 10)), "HEIF")
    started = time.perf_counter()
    assert _reason(large, max_pixels=1_000_000) == "image_too_large"
    assert time.perf_counter() - started < 0.5


def test_declared_pixels_count_a_jpeg_at_the_scale_it_is_decoded_at() -> None:
    """What serve.max_request_pixels adds up for a view bound for a 320 px square: a JPEG (or
    an MPO, a phone's JPEG with a second picture) at its reduced scale, as the decoder decodes
    it; a progressive JPEG, a PNG and the rest in full (libjpeg holds a progressive one's
    coefficients at full size whatever the scale)."""
    picture = Image.new("RGB", (4000, 3000), (200, 30, 30))
    phone = _encode(picture, "JPEG")
    assert declared_pixels(phone) == 12_000_000
    assert declared_pixels(phone, [320]) == 500 * 375  # decoded at 1/8 for a 320 px square
    assert declared_pixels(phone, [224, 320]) == 500 * 375  # 1/8 for both: one decode
    assert decode_images(phone, MAX, [320])[0].size == (500, 375)  # as the decoder does
    mpo = _encode(picture, "MPO", save_all=True, append_images=[picture.resize((400, 300))])
    assert Image.open(io.BytesIO(mpo)).format == "MPO"
    assert declared_pixels(mpo, [320]) == 500 * 375
    assert decode_images(mpo, MAX, [320])[0].size == (500, 375)
    progressive = _encode(picture, "JPEG", progressive=True)
    assert declared_pixels(progressive, [224, 320]) == 12_000_000  # once
    assert declared_pixels(_encode(picture, "PNG"), [224, 320]) == 12_000_000  # once
    smaller = _encode(Image.new("RGB", (1000, 1000), (200, 30, 30)), "JPEG")
    assert [im.size for im in decode_images(smaller, MAX, [224, 320])] == [(250, 250),
                                                                          (500, 500)]
    assert declared_pixels(smaller, [224, 320]) == 250 * 250 + 500 * 500  # both decodes
    assert declared_pixels(smaller, [None, 320]) == 1000 * 1000 + 500 * 500  # no model size


def test_formats_outside_the_allow_list_are_not_opened() -> None:
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n"
    assert _reason(eps) == "unsupported_format"


def test_error_carries_reason_and_detail() -> None:
    with pytest.raises(ItemError) as info:
        decode_image(b"garbage", MAX)
    assert info.value.detail and str(info.value).startswith("unsupported_format: ")


# ------------------------------------------------------------------ decompression bombs


def test_header_over_our_cap_is_refused_before_decoding() -> None:
    data = _png_header_only(3000, 3000)  # 9 MP: below PIL's own limit, above ours
    started = time.perf_counter()
    assert _reason(data, max_pixels=1_000_000) == "image_too_large"
    assert time.perf_counter() - started < 0.5


@pytest.mark.parametrize("side", [10_000, 100_000])
def test_pil_bomb_warning_and_error_map_to_too_large(side: int) -> None:
    """10k^2 trips PIL's warning, 100k^2 its error; our cap is set high to let PIL speak."""
    data = _png_header_only(side, side)
    started = time.perf_counter()
    assert _reason(data, max_pixels=10**12) == "image_too_large"
    assert _reason(data) == "image_too_large"
    assert time.perf_counter() - started < 0.5  # 30 GB were never allocated
    with pytest.raises(ItemError) as refused:  # the configured limit, not PIL's 178,956,970
        decode_image(data, max_pixels=40_000_000)
    assert refused.value.detail == f"{side * side} pixels > 40000000"


def test_real_but_cheap_large_png_is_refused() -> None:
    data = _encode(Image.new("1", (4000, 4000), 0), "PNG")  # 16 MP in a few kB
    assert len(data) < 50_000
    assert _reason(data, max_pixels=10_000_000) == "image_too_large"


def test_declared_pixels_are_read_from_the_header_without_decoding() -> None:
    """What the API adds up over a request's views (serve.max_request_pixels)."""
    started = time.perf_counter()
    assert declared_pixels(_png_header_only(6000, 6000)) == 36_000_000  # pixels never there
    assert time.perf_counter() - started < 0.5
    exif = Image.Exif()
    exif[0x0112] = 6  # turned: the same count
    assert declared_pixels(_encode(_two_halves(40, 20), "JPEG", exif=exif.tobytes())) == 800
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n"
    for unopened in (b"", b"garbage", eps, _png_header_only(100_000, 100_000)):
        assert declared_pixels(unopened) is None  # the decoder's to refuse, and say why


# ------------------------------------------------------------------ load_image


def test_load_image_from_bytes_path_and_pil(tmp_path: Path) -> None:
    data = _encode(_two_halves(), "PNG")
    path = tmp_path / "img.png"
    path.write_bytes(data)
    rgba = _two_halves().convert("RGBA")
    for source in (data, bytearray(data), path, str(path), rgba):
        image = load_image(source, MAX)
        assert image.mode == "RGB" and image.size == (40, 20)
        assert tuple(np.asarray(image)[0, 0]) == (255, 0, 0)


def test_load_image_applies_cap_and_orientation_to_pil_images() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6
    opened = Image.open(io.BytesIO(_encode(_two_halves(), "JPEG", exif=exif.tobytes())))
    assert load_image(opened, MAX).size == (20, 40)
    with pytest.raises(ItemError, match="image_too_large"):
        load_image(Image.new("RGB", (100, 100)), max_pixels=9_999)


def test_load_image_missing_file_and_wrong_type(tmp_path: Path) -> None:
    with pytest.raises(ItemError) as info:
        load_image(tmp_path / "nope.jpg", MAX)
    assert info.value.reason == "unreadable"
    with pytest.raises(TypeError):
        load_image(12345, MAX)  # type: ignore[arg-type]


def test_jpeg_decodes_at_reduced_scale_but_covers_min_size() -> None:
    import io as _io

    from PIL import Image as _Image

    from embedding.decode import decode_image as _decode

    buf = _io.BytesIO()
    _Image.new("RGB", (640, 480), (200, 10, 10)).save(buf, "JPEG")
    full = _decode(buf.getvalue(), 40_000_000)
    reduced = _decode(buf.getvalue(), 40_000_000, min_size=224)
    assert full.size == (640, 480)
    assert reduced.size == (320, 240) and min(reduced.size) >= 224
    png = _io.BytesIO()
    _Image.new("RGB", (640, 480)).save(png, "PNG")
    assert _decode(png.getvalue(), 40_000_000, min_size=224).size == (640, 480)


def test_a_file_over_the_byte_limit_is_refused_without_reading_it_whole(
    tmp_path: Path
) -> None:
    """``ProductSearch`` reads a query given as a path through ``load_image``: with
    ``max_bytes`` (``LOOKALIKE_IMAGES__MAX_BYTES``) it reads one byte more, at most."""
    path = tmp_path / "q.png"
    path.write_bytes(_encode(Image.new("RGB", (64, 64), (200, 30, 30)), "PNG"))
    assert load_image(path, 10**6, max_bytes=path.stat().st_size).size == (64, 64)
    with pytest.raises(ItemError) as refused:
        load_image(path, 10**6, max_bytes=path.stat().st_size - 1)
    assert refused.value.reason == "image_too_large" and "over" in refused.value.detail


def _count_decodes(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """The size of each photo embedding.decode decodes from here on (its pixels loaded)."""
    sizes: list[tuple[int, int]] = []
    load = embedding.decode._load_pixels

    def counting(image: Image.Image) -> None:
        sizes.append(image.size)
        load(image)

    monkeypatch.setattr(embedding.decode, "_load_pixels", counting)
    return sizes


def _noise(w: int, h: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


def test_shrink_to_bounds_the_long_side_and_leaves_smaller_photos_alone() -> None:
    """What a caller keeps of a large upload can be ``max_side`` px long, not the full decode
    (a 6300 px PNG of 131 KB is 160 MB a copy); a photo within it is the photo itself."""
    big = decode_image(_encode(Image.new("RGB", (3000, 1500), (200, 10, 10)), "PNG"), MAX)
    assert big.size == (3000, 1500)
    assert shrink_to(big, 1280).size == (1280, 640)
    assert shrink_to(big.transpose(Image.Transpose.ROTATE_90), 1280).size == (640, 1280)
    small = decode_image(_encode(_noise(1000, 700), "PNG"), MAX)
    assert shrink_to(small, 1280) is small and shrink_to(small, None) is small


def test_a_png_is_decoded_once_for_two_scales(monkeypatch: pytest.MonkeyPatch) -> None:
    """The search API wants a query photo at the model's scale and at verification's: a PNG
    (no reduced-scale decoding) is decoded once for both, the same image."""
    data = _encode(_noise(1600, 1200), "PNG")
    decodes = _count_decodes(monkeypatch)
    shown, to_verify = decode_images(data, MAX, [224, 320])
    assert decodes == [(1600, 1200)]
    assert shown is to_verify and shown.size == (1600, 1200)
    first, second = load_images(data, MAX, [224, 320])
    assert first is second and decodes == [(1600, 1200)] * 2


@pytest.mark.parametrize(("size", "decoded"), [
    ((2000, 1500), [(500, 375)]),  # 1/4 covers both 224 and 320: decoded once
    ((640, 480), [(320, 240), (640, 480)]),  # 1/2 covers 224 only: once at each scale
])
def test_a_jpeg_is_decoded_once_per_reduced_scale(
        monkeypatch: pytest.MonkeyPatch, size: tuple[int, int],
        decoded: list[tuple[int, int]]) -> None:
    """A JPEG is decoded at the reduced scale each size asks for, exactly as
    ``decode_image`` decodes it for that size, and once when the scales agree."""
    data = _encode(_noise(*size), "JPEG", quality=90)
    singles = [decode_image(data, MAX, min_size=m) for m in (224, 320)]
    decodes = _count_decodes(monkeypatch)
    both = decode_images(data, MAX, [224, 320])
    assert decodes == decoded
    for one, single in zip(both, singles, strict=True):
        assert np.array_equal(np.asarray(one), np.asarray(single))


def _whole_image_rgb(image: Image.Image) -> np.ndarray:
    """The conversions as they were before they went a strip of rows at a time (a full-size
    copy per step): what the strips must reproduce pixel for pixel."""
    if image.mode in ("RGBA", "LA", "P", "L"):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(white, rgba).convert("RGB"))
    arr = np.asarray(image, dtype=np.float32)
    peak = float(arr.max())
    scale = (255.0 if image.mode == "F" and peak <= 1.0
             else 255.0 / 65535.0 if peak > 255.0 else 1.0)
    grey = np.clip(np.rint(arr * scale), 0, 255).astype(np.uint8)
    return np.asarray(Image.fromarray(grey).convert("RGB"))


def _transparent_photos() -> dict[str, bytes]:
    rng = np.random.default_rng(7)
    h, w = 37, 53
    palette = Image.fromarray(rng.integers(0, 256, (h, w), np.uint8), "L").convert("P")
    palette.putpalette([int(v) for v in rng.integers(0, 256, 768)])
    photos = {
        "RGBA": Image.fromarray(rng.integers(0, 256, (h, w, 4), np.uint8), "RGBA"),
        "LA": Image.fromarray(rng.integers(0, 256, (h, w, 2), np.uint8), "LA"),
        "I;16": Image.fromarray(rng.integers(0, 65536, (h, w), np.uint16)),
        "I;16 dark": Image.fromarray(rng.integers(0, 200, (h, w), np.uint16)),
        "F": Image.fromarray(rng.random((h, w), np.float32)),
    }
    out = {}
    for name, photo in photos.items():
        buf = io.BytesIO()
        photo.save(buf, "TIFF" if name == "F" else "PNG")
        out[name] = buf.getvalue()
    buf = io.BytesIO()
    palette.save(buf, "PNG", transparency=bytes(int(v) for v in rng.integers(0, 256, 256)))
    out["P+tRNS"] = buf.getvalue()
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 3, (h, w), np.uint8) * 100, "L").save(
        buf, "PNG", transparency=100)
    out["L+tRNS"] = buf.getvalue()
    return out


@pytest.mark.parametrize("name", sorted(_transparent_photos()))
def test_converting_a_strip_at_a_time_gives_the_same_pixels(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Strips of 2-3 rows (and a short last one): every seam is crossed.
    monkeypatch.setattr(embedding.decode, "_STRIP_PIXELS", 2 * 53 + 7)
    data = _transparent_photos()[name]
    expected = _whole_image_rgb(Image.open(io.BytesIO(data)))
    got = decode_image(data, 10_000)
    assert got.mode == "RGB" and got.size == (53, 37)
    assert np.array_equal(np.asarray(got), expected)
