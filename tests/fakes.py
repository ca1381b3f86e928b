"""Small fakes for fast tests: a content-based embedder that needs no model weights."""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image


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
