"""Small fakes for fast tests: a content-based embedder that needs no model weights."""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

from embedding.colour import COLOUR_DIM
from search.verify import Evidence, PhotoFeatures, SameItemVerifier


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


class SimilarityOnlyVerifier(SameItemVerifier):
    """Accepts a candidate whose cosine is >= ``min_similarity`` and loads no photo: for tests
    of price comparison's retrieval, filters and order, whose listings have no real photos."""

    def __init__(self, min_similarity: float = -1.0) -> None:
        super().__init__(_no_photos)
        self.min_similarity = min_similarity

    def gallery_features(self, image_ref: str) -> PhotoFeatures:
        return PhotoFeatures(np.zeros((0, 2), np.float32), None,
                             np.zeros(COLOUR_DIM, np.float32), np.zeros((1, 1, 3), np.uint8))

    def compare(self, query: PhotoFeatures, other: PhotoFeatures, similarity: float
                ) -> Evidence:
        return Evidence(similarity >= self.min_similarity, similarity, 0, 1.0, None,
                        "similarity only (test)")


def _no_photos(image_ref: str) -> Image.Image:
    raise AssertionError(f"the test verifier loads no photo ({image_ref})")
