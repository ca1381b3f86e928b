"""Same-item verification on real small images: a heavily edited copy must be accepted, a
look-alike (another colour of the same style, another product of the same kind) refused.

Luma photos when ``../shared/data/luma`` is there; synthetic textured pictures always (so the
checks run everywhere)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageEnhance, ImageOps

from embedding.decode import load_image
from ingest.fetch import ImageFetcher
from search.verify import (
    VERIFY_SIZE,
    SameItemRule,
    SameItemVerifier,
    fetching_loader,
    photo_features,
)

LUMA = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "luma" / "images"
needs_luma = pytest.mark.skipif(not LUMA.is_dir(), reason=f"{LUMA} not found")


def heavy_edit(photo: Image.Image) -> Image.Image:
    """What a reseller does to a catalog photo, all at once: crop, pad, turn, brighten, a
    sale tag, a watermark, shrink and re-encode hard."""
    w, h = photo.size
    out = photo.convert("RGB").crop((int(w * 0.07), int(h * 0.05), int(w * 0.95), int(h * 0.9)))
    out = ImageOps.expand(out, border=int(max(out.size) * 0.12), fill=(235, 235, 240))
    out = out.rotate(4, Image.Resampling.BICUBIC, expand=True, fillcolor=(255, 255, 255))
    out = ImageEnhance.Contrast(ImageEnhance.Brightness(out).enhance(1.15)).enhance(0.9)
    draw = ImageDraw.Draw(out)
    draw.rectangle((0, 0, out.width // 3, out.height // 10), fill=(210, 20, 30))
    draw.text((6, 4), "SALE -40%", fill="white")
    for y in range(0, out.height, 40):
        draw.text((10, y), "shop.example " * 6, fill=(150, 150, 150))
    out = out.resize((int(out.width * 0.55), int(out.height * 0.55)), Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    out.save(buf, "JPEG", quality=35)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def _textured(seed: int, tint: tuple[int, int, int] = (0, 0, 0)) -> Image.Image:
    """A 'product' of random shapes on white, with enough corners for keypoints."""
    rng = np.random.default_rng(seed)
    image = Image.new("RGB", (400, 480), "white")
    draw = ImageDraw.Draw(image)
    for _ in range(60):
        x, y = (int(v) for v in rng.integers(40, 340, size=2))
        size = int(rng.integers(10, 60))
        fill = tuple(int(min(255, c + t)) for c, t in zip(rng.integers(0, 200, size=3), tint,
                                                           strict=True))
        shape = draw.rectangle if rng.random() < 0.5 else draw.ellipse
        shape((x, y, x + size, y + size // 2 + 5), fill=fill, outline=(0, 0, 0))
    return image


def _recolour(photo: Image.Image) -> Image.Image:
    """Another colour variant of the same photo: hue rotated, geometry untouched."""
    hsv = np.asarray(photo.convert("HSV")).copy()
    hsv[..., 0] = (hsv[..., 0].astype(np.int32) + 85) % 256
    return Image.fromarray(hsv, "HSV").convert("RGB")


def _decide(query: Image.Image, listing: Image.Image, similarity: float = 0.9) -> tuple[bool, str]:
    verifier = SameItemVerifier(lambda ref: listing)
    evidence = verifier.verify(photo_features(query), [("listing", similarity)])[0]
    return evidence.same_item, evidence.reason


def test_heavily_edited_synthetic_copy_is_the_same_item() -> None:
    original = _textured(1)
    same, why = _decide(heavy_edit(original), original)
    assert same, why
    assert "inliers" in why


def test_synthetic_look_alikes_are_refused() -> None:
    original = _textured(1)
    same, why = _decide(heavy_edit(original), _textured(2), similarity=0.95)
    assert not same, why
    same, why = _decide(heavy_edit(original), _recolour(original), similarity=0.95)
    assert not same, why
    assert "colour" in why


def _luma(name: str) -> Image.Image:
    return load_image(LUMA / f"{name}_main.jpg", 40_000_000, min_size=VERIFY_SIZE)


@needs_luma
def test_heavily_edited_luma_copy_is_accepted_with_evidence() -> None:
    original = _luma("mh01-gray")
    verifier = SameItemVerifier(lambda ref: original)
    evidence = verifier.verify(photo_features(heavy_edit(original)), [("x", 0.8)])[0]
    assert evidence.same_item, evidence.reason
    assert evidence.inliers >= verifier.rule.min_inliers
    assert evidence.alignment is not None and evidence.alignment.correlation > 0.5


@needs_luma
@pytest.mark.parametrize("look_alike", ["mh01-orange", "mh01-black", "mh02-black"])
def test_luma_look_alikes_are_refused(look_alike: str) -> None:
    """Other colours of the same hoodie (MH01) and another hoodie (MH02)."""
    same, why = _decide(heavy_edit(_luma("mh01-gray")), _luma(look_alike), similarity=0.95)
    assert not same, why


def test_near_identical_photo_is_accepted_without_geometry() -> None:
    """A blank-ish photo (or a 28 px article) has no keypoints: the same photo is still the
    same item, on its global similarity and colours; a merely similar one is not."""
    blob = Image.new("RGB", (28, 28), (90, 90, 100))  # no corner, no keypoint
    same, why = _decide(blob, blob, similarity=0.999)
    assert same and "near-identical" in why
    same, why = _decide(blob, blob, similarity=0.95)
    assert not same and "similarity 0.950" in why


def test_a_listing_photo_outside_the_roots_is_refused_with_its_reason(tmp_path: Path) -> None:
    inside, outside = tmp_path / "roots", tmp_path / "elsewhere"
    inside.mkdir()
    outside.mkdir()
    _textured(3).save(inside / "a.png")
    _textured(3).save(outside / "a.png")
    verifier = SameItemVerifier(fetching_loader(ImageFetcher([inside]), 40_000_000))
    query = photo_features(_textured(3))
    ok, refused = verifier.verify(query, [(str(inside / "a.png"), 0.99),
                                          (str(outside / "a.png"), 0.99)])
    assert ok.same_item
    assert not refused.same_item and "path_not_allowed" in refused.reason


def test_rule_reasons_name_the_failing_evidence() -> None:
    rule = SameItemRule()
    assert rule.decide(0.99, 0, 0.1, None) == (
        False, f"0 geometric inliers < {rule.min_inliers} and similarity 0.990 < "
               f"{rule.duplicate_similarity}")
