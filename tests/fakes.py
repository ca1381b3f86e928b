"""Small fakes for fast tests: a content-based embedder that needs no model weights."""

from __future__ import annotations

import importlib.util
import io
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageFont, ImageOps

from embedding.colour import COLOUR_DIM
from search.features import KeypointMatch, PhotoFeatures
from search.verify import Evidence, Overlay, SameItemVerifier

BENCH = Path(__file__).resolve().parent.parent / "bench"


def load_bench_module(name: str) -> ModuleType:
    """Import bench/NAME.py under a unique name (``bench_NAME``), once; the bench scripts
    import each other as top-level modules (``protocols_same_item`` imports ``protocols``)."""
    if f"bench_{name}" in sys.modules:
        return sys.modules[f"bench_{name}"]
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


class TinyEmbedder:
    """Embeds an image as its 4x4 RGB thumbnail (48-d, L2-normalised): the same picture always
    gives the same vector and different pictures differ, which is all the pipeline tests need."""

    model_version = "tiny-thumb-v1"
    dim = 48
    decode_size = 16

    def __init__(self) -> None:
        self.embedded = 0

    def prepare(self, image: Any) -> np.ndarray:
        assert isinstance(image, Image.Image)
        thumb = image.convert("RGB").resize((4, 4), Image.Resampling.BILINEAR)
        return np.asarray(thumb, dtype=np.float32).reshape(-1) + 1.0

    def embed_prepared(self, batch: np.ndarray) -> np.ndarray:
        self.embedded += len(batch)
        flat = batch.reshape(len(batch), -1).astype(np.float32)
        return flat / np.linalg.norm(flat, axis=1, keepdims=True)

    def embed(self, images: Any) -> np.ndarray:
        return self.embed_prepared(np.stack([self.prepare(i) for i in images]))


class WarmingEmbedder(TinyEmbedder):
    """:class:`TinyEmbedder` with a ``warm_up`` that takes ``warm_up_s``, as the real model's
    compiles do, and counts how many warm-ups started and finished."""

    def __init__(self, warm_up_s: float = 0.0) -> None:
        super().__init__()
        self.warm_up_s = warm_up_s
        self.warm_ups_started = 0
        self.warm_ups_done = 0

    def warm_up(self) -> float:
        self.warm_ups_started += 1
        time.sleep(self.warm_up_s)
        self.warm_ups_done += 1
        return self.warm_up_s


def serving_database(path: Path, products: Sequence[str] = ()) -> Path:
    """A Milvus Lite database at ``path`` whose collection serves :class:`TinyEmbedder`'s
    model (what ``lookalike serve`` needs before it loads one), with one image row of each
    of ``products``."""
    from ingest.plan import WritePlan
    from ingest.sink import MilvusSink
    from lookalike.app import close_stores, open_for_writing, open_versions
    from lookalike.settings import MilvusSettings, Settings
    from tests.milvus_support import record

    settings = Settings(milvus=MilvusSettings(uri=str(path)))
    embedder = TinyEmbedder()
    try:
        versions = open_versions(settings, create=True)
        spec, _ = open_for_writing(versions, embedder)
        if products:
            rows = [record(p, "front", [1.0] * embedder.dim,
                           model_version=embedder.model_version) for p in products]
            MilvusSink(versions.store, spec).apply(WritePlan(upserts=rows))
    finally:
        close_stores()
    return path


class SimilarityOnlyVerifier(SameItemVerifier):
    """Accepts a candidate whose cosine is >= ``min_similarity`` and loads no photo: for tests
    of price comparison's retrieval, filters and order, whose listings have no real photos."""

    def __init__(self, min_similarity: float = -1.0) -> None:
        super().__init__(_no_photos)
        self.min_similarity = min_similarity

    def gallery_features(self, image_ref: str) -> PhotoFeatures:
        return PhotoFeatures(np.zeros((0, 2), np.float32), None,
                             np.zeros(COLOUR_DIM, np.float32), np.zeros((1, 1, 3), np.uint8))

    def compare(self, query: PhotoFeatures, other: PhotoFeatures, similarity: float,
                allow_coarse: bool = True, matched: KeypointMatch | None = None,
                print_check: bool = False,
                mirror: Callable[[], PhotoFeatures | None] | None = None,
                overlay: Overlay = "open") -> Evidence:
        return Evidence(similarity >= self.min_similarity, similarity, 0, 1.0, None,
                        "similarity only (test)")

    def keypoint_matches(self, query: PhotoFeatures, image_refs: Sequence[str],
                         copies: bool = False) -> list[KeypointMatch | None]:
        return [(0, None, np.zeros((0, 2), np.float32)) for _ in image_refs]


def _no_photos(image_ref: str) -> Image.Image:
    raise AssertionError(f"the test verifier loads no photo ({image_ref})")


def heavy_edit(photo: Image.Image, watermark: bool = True) -> Image.Image:
    """What a reseller does to a catalog photo, all at once: crop, pad, turn, brighten, a
    sale tag, a watermark (optional), shrink and re-encode hard."""
    w, h = photo.size
    out = photo.convert("RGB").crop((int(w * 0.07), int(h * 0.05), int(w * 0.95), int(h * 0.9)))
    out = ImageOps.expand(out, border=int(max(out.size) * 0.12), fill=(235, 235, 240))
    out = out.rotate(4, Image.Resampling.BICUBIC, expand=True, fillcolor=(255, 255, 255))
    out = ImageEnhance.Contrast(ImageEnhance.Brightness(out).enhance(1.15)).enhance(0.9)
    draw = ImageDraw.Draw(out)
    draw.rectangle((0, 0, out.width // 3, out.height // 10), fill=(210, 20, 30))
    draw.text((6, 4), "SALE -40%", fill="white")
    for y in range(0, out.height if watermark else 0, 40):
        draw.text((10, y), "shop.example " * 6, fill=(150, 150, 150))
    out = out.resize((int(out.width * 0.55), int(out.height * 0.55)), Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    out.save(buf, "JPEG", quality=35)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def textured_photo(seed: int) -> Image.Image:
    """A 'product' on white: a few large colour patches (as a garment has, so re-encoding
    blurs colour at their edges only) under dark random marks that give keypoints."""
    rng = np.random.default_rng(seed)
    image = Image.new("RGB", (400, 480), "white")
    draw = ImageDraw.Draw(image)
    for _ in range(6):
        x, y = (int(v) for v in rng.integers(40, 240, size=2))
        w, h = (int(v) for v in rng.integers(80, 160, size=2))
        fill = tuple(int(c) for c in rng.integers(0, 220, size=3))
        draw.rectangle((x, y, x + w, y + h), fill=fill)
    for _ in range(35):
        x, y = (int(v) for v in rng.integers(40, 340, size=2))
        size = int(rng.integers(6, 30))
        shade = int(rng.integers(0, 90))
        shape = draw.rectangle if rng.random() < 0.5 else draw.ellipse
        shape((x, y, x + size, y + size // 2 + 4), outline=(shade, shade, shade), width=2)
    return image.filter(ImageFilter.GaussianBlur(1))  # a lens's softness, not vector art


def recolour(photo: Image.Image) -> Image.Image:
    """Another colour variant of the same photo: hue rotated, geometry untouched."""
    hsv = np.asarray(photo.convert("HSV")).copy()
    hsv[..., 0] = (hsv[..., 0].astype(np.int32) + 85) % 256
    return Image.fromarray(hsv, "HSV").convert("RGB")


def plain_photo(colour: tuple[int, int, int], round_shape: bool = True) -> Image.Image:
    """A textureless 'product' on white (a yoga ball, a mat): one flat colour with soft
    shading and no corners inside, so SIFT finds (almost) no keypoints on it."""
    image = Image.new("RGB", (400, 480), "white")
    mask = Image.new("L", image.size, 0)
    box = (70, 90, 330, 400)
    draw = ImageDraw.Draw(mask)
    if round_shape:
        draw.ellipse(box, fill=255)
    else:
        draw.rectangle((40, 170, 360, 310), fill=255)
    ys = np.linspace(1.15, 0.8, image.height, dtype=np.float32)[:, None, None]
    shaded = np.clip(np.array(colour, dtype=np.float32) * ys * np.ones((1, image.width, 1)),
                     0, 255).astype(np.uint8)
    image.paste(Image.fromarray(shaded, "RGB"), (0, 0), mask)
    return image.filter(ImageFilter.GaussianBlur(2))


def reshot_on_backdrop(photo: Image.Image,
                       gains: tuple[float, float, float] = (1.06, 1.0, 0.92),
                       colours: tuple[tuple[int, int, int], tuple[int, int, int]] = (
                           (150, 110, 70), (90, 120, 160)),
                       texture_seed: int | None = None) -> Image.Image:
    """The product photographed again on a shop's table: cut out of its white (the matte a
    little grown and soft, as a real edge is), on a coloured gradient backdrop with room
    around it, under another lamp, slightly out of focus, through the camera's JPEG. With a
    ``texture_seed`` the backdrop is also textured and runs to the frame (no border of one
    colour tells it apart); without, the room around it is the gradient's first colour."""
    room = 40
    if texture_seed is not None:
        photo = ImageOps.expand(photo.convert("RGB"), border=room, fill=(255, 255, 255))
    rgb = np.asarray(photo.convert("RGB"), dtype=np.float32)
    product = Image.fromarray(((rgb.min(axis=2) < 245) * 255).astype(np.uint8))
    matte = product.filter(ImageFilter.MaxFilter(5)).filter(ImageFilter.GaussianBlur(2))
    weight = np.asarray(matte, dtype=np.float32)[..., None] / 255.0
    h, w = rgb.shape[:2]
    t = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None, None]
    backdrop = (np.array(colours[0], np.float32) * (1 - t)
                + np.array(colours[1], np.float32) * t)
    if texture_seed is not None:
        noise = np.random.default_rng(texture_seed).integers(0, 255, (h // 8 + 1, w // 8 + 1))
        texture = np.asarray(Image.fromarray(noise.astype(np.uint8)).resize(
            (w, h), Image.Resampling.BICUBIC), dtype=np.float32)[..., None]
        backdrop = backdrop + (texture - 128.0) * 0.25
    scene = rgb * weight + np.broadcast_to(backdrop, rgb.shape) * (1 - weight)
    light = np.linspace(1.05, 0.85, w, dtype=np.float32)[None, :, None]
    lit = 255.0 * (np.clip(scene * np.array(gains, np.float32) * light, 0, 255) / 255.0) ** 0.9
    framed = Image.fromarray(lit.astype(np.uint8))
    if texture_seed is None:
        framed = ImageOps.expand(framed, border=room,
                                 fill=tuple(int(c) for c in backdrop[0, 0]))
    buffer = io.BytesIO()
    framed.filter(ImageFilter.GaussianBlur(0.8)).save(buffer, "JPEG", quality=80)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def on_counter(photo: Image.Image) -> Image.Image:
    """A shopper's re-shot photo, on another backdrop under another lamp."""
    return reshot_on_backdrop(photo, colours=((60, 140, 90), (170, 160, 120)), texture_seed=2)


def printed_pack(name: str) -> Image.Image:
    """A printed pack: a busy picture with a label box holding the product's name."""
    pack = textured_photo(4)
    draw = ImageDraw.Draw(pack)
    w, h = pack.size
    draw.rectangle((w * 0.2, h * 0.35, w * 0.8, h * 0.55), fill=(240, 240, 230))
    draw.text((w * 0.22, h * 0.38), name, fill=(20, 20, 60),
              font=ImageFont.load_default(size=int(h * 0.08)))
    return pack
