"""Untrusted image bytes -> a plain RGB ``PIL.Image``, or an ItemError with a reason.

Shops send whatever their CMS holds: CMYK JPEGs, rotated phone photos, PNGs with alpha,
16-bit TIFFs, truncated uploads, and now and then a decompression bomb. Every image that
reaches the model goes through here so they all look alike to it:

* the pixel count is read from the header and checked *before* any pixel is decoded, and
  PIL's own DecompressionBombWarning/Error count as the same failure;
* only common photo formats are opened (no EPS, which would start Ghostscript, nor the many
  exotic formats PIL can parse), HEIC/HEIF among them (an iPhone's photos; through
  ``pillow-heif``, which applies the photo's own turn when it decodes);
* EXIF orientation is applied, so a portrait phone photo is not embedded lying on its side;
* transparency is composited on white, like the studio backgrounds of catalog photos, rather
  than on black, which is what a bare ``convert("RGB")`` does to transparent pixels;
* CMYK goes through its ICC profile when it has one; 16-bit greys are scaled, not clipped;
* a caller that wants a photo at several scales gets it decoded once where the format cannot
  decode at a reduced scale (all but JPEG: :func:`decode_images`), and one that keeps
  working copies can make them from the photo shrunk (:func:`shrink_to`), so that what it
  holds is one full-size decode at a time.
"""

from __future__ import annotations

import errno
import io
import logging
import os
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Final

import numpy as np
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

from embedding.files import read_regular
from schema.errors import ItemError, Reason

log = logging.getLogger(__name__)

ALLOWED_FORMATS: Final = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "MPO", "AVIF", "HEIF")
DCT_SCALED: Final = frozenset({"JPEG", "MPO"})
"""Formats decoded at a reduced scale (``draft``): JPEG, and MPO (a phone's JPEG with a gain
map or a second picture, which PIL opens as MPO)."""
_ALPHA_MODES: Final = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})
_HIGH_DEPTH_MODES: Final = frozenset({"I", "I;16", "I;16L", "I;16B", "I;16N", "F"})
_SRGB: Final = ImageCms.createProfile("sRGB")
SHRINK_REDUCING_GAP: Final = 2.0
"""Pillow's ``reducing_gap`` for :func:`shrink_to`: box-reduce by an integer factor while at
least twice the target remains, then resample bicubic (indistinguishable from a plain bicubic
resize at the sizes the photo is used at afterwards)."""


ImageDecodeError = ItemError
"""The old name of the error raised here; catch :class:`schema.errors.ItemError` instead."""


def decode_image(data: bytes, max_pixels: int, *, min_size: int | None = None) -> Image.Image:
    """Decode ``data`` into an RGB image of at most ``max_pixels`` pixels.

    ``min_size``: the smallest square the caller will use. A JPEG is then decoded at the
    largest 1/2, 1/4 or 1/8 scale that still covers it (DCT scaling): about 4x less decoding
    and resizing for a 640 px photo bound for a 224 px model, the cheapest CPU saving in the
    ingest pipeline.
    """
    return decode_images(data, max_pixels, [min_size])[0]


def decode_images(data: bytes, max_pixels: int, min_sizes: Sequence[int | None]
                  ) -> list[Image.Image]:
    """``data`` decoded as :func:`decode_image` decodes it for each of ``min_sizes``, one
    decode per distinct scale: a JPEG whose reduced scales differ is decoded once per scale
    (each of them cheap), any other photo once for all (the same image object each time), so a
    caller that wants a photo at two sizes does not pay a full-size decode twice."""
    if not data:
        raise ItemError(Reason.CORRUPT_IMAGE, "empty image data")
    decoded: dict[tuple[int, int], Image.Image] = {}
    out = []
    for min_size in min_sizes:
        image = _open(io.BytesIO(data), max_pixels)
        _draft(image, min_size)
        scale = image.size  # after draft(): the size it decodes at
        if scale not in decoded:
            decoded[scale] = _normalise(image, max_pixels, owned=True)
        out.append(decoded[scale])
    return out


def _draft(image: Image.Image, min_size: int | None) -> None:
    """Set ``image`` (opened, not decoded) to decode at the reduced scale that still covers a
    ``min_size`` square (1/2, 1/4 or 1/8: DCT scaling), for the :data:`DCT_SCALED` formats;
    any other is left at its full size."""
    if min_size is not None and image.format in DCT_SCALED:
        image.draft(None, (min_size, min_size))


def declared_pixels(data: bytes, min_sizes: Sequence[int | None] = (None,)) -> int | None:
    """The pixels ``data`` decodes to (width x height, the same count once turned by its EXIF
    orientation), read from its header as :func:`decode_image` opens it, no pixel decoded: for
    a caller that bounds several images together before decoding any. ``min_sizes``: the
    squares it is decoded to cover, as :func:`decode_images` takes them; a JPEG counts at
    each distinct reduced scale it is decoded at for them, added up (a 12 MP phone photo
    bound for 224 and 320 px squares: 1/8 for both, 0.19 MP; a 1000 px one: 1/4 and 1/2,
    0.31 MP, both decodes held while one photo is searched); any other format once at its
    full size. A progressive JPEG counts once at its full size: libjpeg holds all of its
    coefficients whatever the scale (an 8000x5000 one drafted to 0.6 MP took 0.3 s and
    236 MB). None when it does not open as an image of an allowed format, or PIL takes it for
    a decompression bomb: the decoder then refuses it and says why."""
    sizes = list(min_sizes) or [None]
    try:
        with _open(io.BytesIO(data), max_pixels=0) as image:
            drafted = image.format in DCT_SCALED and not image.info.get("progressive")
            if drafted:
                _draft(image, sizes[0])
            scales = {image.size}
        # the header read again per further size for a JPEG alone (any other: one decode)
        for min_size in sizes[1:] if drafted else []:
            with _open(io.BytesIO(data), max_pixels=0) as image:
                _draft(image, min_size)
                scales.add(image.size)
    except ItemError:
        return None
    return sum(max(width, 0) * max(height, 0) for width, height in scales)


def load_image(
    source: bytes | bytearray | memoryview | str | os.PathLike[str] | Image.Image,
    max_pixels: int,
    *,
    min_size: int | None = None,
    max_bytes: int | None = None,
) -> Image.Image:
    """Bytes, a file path or a PIL image (as the search API receives them) -> RGB image.
    ``max_bytes``: a file larger than this is refused before it is read."""
    return load_images(source, max_pixels, [min_size], max_bytes=max_bytes)[0]


def load_images(
    source: bytes | bytearray | memoryview | str | os.PathLike[str] | Image.Image,
    max_pixels: int,
    min_sizes: Sequence[int | None],
    *,
    max_bytes: int | None = None,
) -> list[Image.Image]:
    """:func:`load_image` for each of ``min_sizes``, the file read once and the photo
    decoded once per distinct scale (:func:`decode_images`)."""
    if isinstance(source, Image.Image):
        return [normalise_image(source, max_pixels)] * len(min_sizes)
    if isinstance(source, bytes | bytearray | memoryview):
        return decode_images(bytes(source), max_pixels, min_sizes)
    if isinstance(source, str | os.PathLike):
        return decode_images(_read_file(Path(source), max_bytes), max_pixels, min_sizes)
    raise TypeError(f"cannot load an image from {type(source).__name__}")


def shrink_to(image: Image.Image, max_side: int | None) -> Image.Image:
    """``image`` with its long side shrunk to ``max_side`` when longer (bicubic, as the
    model's preprocessing resizes; integer box reduction first, Pillow's ``reducing_gap``,
    so a 40-megapixel photo costs ~0.1 s, not ~1 s); ``image`` itself otherwise. What a
    caller keeps of a 40-megapixel upload is then a few megabytes, not 160 MB per copy."""
    w, h = image.size
    if max_side is None or max(w, h) <= max_side:
        return image
    scale = max_side / max(w, h)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return image.resize(size, Image.Resampling.BICUBIC, reducing_gap=SHRINK_REDUCING_GAP)


def normalise_image(image: Image.Image, max_pixels: int) -> Image.Image:
    """Check size, decode pixels, apply EXIF orientation and convert to RGB."""
    return _normalise(image, max_pixels, owned=False)


def _normalise(image: Image.Image, max_pixels: int, *, owned: bool) -> Image.Image:
    """:func:`normalise_image`; ``owned``: ``image`` is ours (just opened), so it is turned
    in place rather than copied (no second full-size copy while a large photo is decoded)."""
    _check_pixels(image, max_pixels)
    _load_pixels(image)
    return _to_rgb(_apply_orientation(image, owned=owned))


def _read_file(path: Path, max_bytes: int | None = None) -> bytes:
    """A photo file's bytes: a regular file only (a folder, a device such as ``/dev/zero``, a
    FIFO or a ``/proc`` file is refused, not read), read no further than ``max_bytes``."""
    try:
        return read_regular(path, max_bytes, "a photo is an image file")
    except OSError as exc:
        if exc.errno == errno.EFBIG:
            raise ItemError(Reason.IMAGE_TOO_LARGE, f"{path}: over {max_bytes} bytes") from exc
        raise ItemError(Reason.UNREADABLE, f"{path}: {exc.strerror or exc}") from exc


def _formats() -> tuple[str, ...]:
    Image.init()
    return tuple(f for f in ALLOWED_FORMATS if f in Image.OPEN)


def _register_heif() -> None:
    """Let PIL open HEIC/HEIF (pillow-heif, a dependency; its own size limits stay on)."""
    try:
        from pillow_heif import register_heif_opener
    except ImportError:  # an install without it refuses HEIC as an unsupported format
        return
    register_heif_opener()


_register_heif()


def _open(fp: io.BytesIO, max_pixels: int) -> Image.Image:
    """Parse the header only; PIL's bomb check runs here and is turned into our error, which
    names the configured limit (PIL's own message names PIL's, ~179 million pixels)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return Image.open(fp, formats=_formats())
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        size = re.search(r"\((\d+) pixels\)", str(exc))
        pixels = int(size.group(1)) if size else None
        detail = (f"{pixels} pixels > {max_pixels}" if pixels and pixels > max_pixels
                  else f"{pixels or 'too many'} pixels: a decompression bomb to the decoder")
        raise ItemError(Reason.IMAGE_TOO_LARGE, detail) from exc
    except UnidentifiedImageError as exc:
        raise ItemError(Reason.UNSUPPORTED_FORMAT, "not an image in a supported format") from exc
    except Exception as exc:  # PIL plugins raise many types on malformed headers
        raise ItemError(Reason.CORRUPT_IMAGE, f"bad header: {type(exc).__name__}: {exc}") from exc


def _check_pixels(image: Image.Image, max_pixels: int) -> None:
    w, h = image.size
    if w <= 0 or h <= 0:
        raise ItemError(Reason.CORRUPT_IMAGE, f"invalid size {w}x{h}")
    if w * h > max_pixels:
        raise ItemError(Reason.IMAGE_TOO_LARGE, f"{w}x{h} = {w * h} pixels > {max_pixels}")


def _load_pixels(image: Image.Image) -> None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ItemError(Reason.IMAGE_TOO_LARGE, str(exc)) from exc
    except MemoryError as exc:
        raise ItemError(Reason.IMAGE_TOO_LARGE, "out of memory while decoding") from exc
    except Exception as exc:  # truncated data: OSError; bad streams: SyntaxError, ValueError...
        raise ItemError(Reason.CORRUPT_IMAGE, f"{type(exc).__name__}: {exc}") from exc


def _apply_orientation(image: Image.Image, *, owned: bool = False) -> Image.Image:
    """Rotate/flip per EXIF; a broken EXIF block is not worth rejecting the photo for.
    ``owned``: turn ``image`` itself (Pillow copies an upright photo otherwise)."""
    try:
        if owned:
            ImageOps.exif_transpose(image, in_place=True)
            return image
        return ImageOps.exif_transpose(image)
    except Exception as exc:
        log.debug("ignoring unreadable EXIF orientation: %s", exc)
        return image


def _to_rgb(image: Image.Image) -> Image.Image:
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in _ALPHA_MODES or "transparency" in image.info:
        return _flatten_on_white(image)
    if mode == "CMYK":
        return _cmyk_to_rgb(image)
    if mode in _HIGH_DEPTH_MODES:
        return _high_depth_to_rgb(image)
    try:
        return image.convert("RGB")
    except ValueError as exc:
        raise ItemError(Reason.UNSUPPORTED_FORMAT, f"cannot convert mode {mode} to RGB") from exc


def _flatten_on_white(image: Image.Image) -> Image.Image:
    """Composite on white, a strip of rows at a time into the RGB result: the same pixels
    as compositing the whole image at once, without its three full-size temporaries (an
    8000x5000 RGBA PNG of 166 KB took 766 MB to decode, 4 bytes a pixel each)."""
    out = Image.new("RGB", image.size)
    for box in _strips(image.size):
        rgba = image.crop(box).convert("RGBA")  # crop keeps the palette and transparency
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        out.paste(Image.alpha_composite(background, rgba).convert("RGB"), box[:2])
    return out


_STRIP_PIXELS: Final = 1 << 20
"""Pixels converted at a time (a few MB of temporaries)."""


def _strips(size: tuple[int, int]) -> list[tuple[int, int, int, int]]:
    """Boxes of whole rows, about ``_STRIP_PIXELS`` each, covering an image of ``size``."""
    w, h = size
    rows = max(1, _STRIP_PIXELS // max(1, w))
    return [(0, y, w, min(h, y + rows)) for y in range(0, h, rows)]


def _cmyk_to_rgb(image: Image.Image) -> Image.Image:
    """Use the embedded press profile when there is one; the naive formula is far off."""
    icc = image.info.get("icc_profile")
    if icc:
        try:
            source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            converted = ImageCms.profileToProfile(image, source, _SRGB, outputMode="RGB")
            if converted is not None:
                return converted
        except (ImageCms.PyCMSError, OSError, ValueError) as exc:
            log.debug("ignoring unusable CMYK ICC profile: %s", exc)
    return image.convert("RGB")


def _high_depth_to_rgb(image: Image.Image) -> Image.Image:
    """16-bit and float greys: scale to 8 bits (PIL's convert would clip most of them white).
    A strip of rows at a time: float32 copies of the whole image cost 544 MB for 40 MP."""
    boxes = _strips(image.size)
    peaks = [np.asarray(image.crop(box), dtype=np.float32).max() for box in boxes]
    peak = float(np.max(peaks))  # NaN, as the whole image's max() gives it
    if image.mode == "F" and peak <= 1.0:
        scale = 255.0
    elif peak > 255.0:
        scale = 255.0 / 65535.0
    else:
        scale = 1.0
    grey = np.empty((image.height, image.width), np.uint8)
    for x0, y0, x1, y1 in boxes:
        arr = np.asarray(image.crop((x0, y0, x1, y1)), dtype=np.float32)
        grey[y0:y1] = np.clip(np.rint(arr * scale), 0, 255)
    return Image.fromarray(grey).convert("RGB")
