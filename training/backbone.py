"""The network being fine-tuned, cut in two: a frozen bottom and a trainable top.

Two cuts: :class:`ProjectionBackbone` (the default) freezes the whole ImageNet network and
trains a linear projection of its pooled features, so the cache holds one 1280-d vector per
view and a training step costs a matrix product; :class:`EfficientNetBackbone` retrains the
last blocks and the head conv on cached feature maps. docs/training.md compares them.

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


class _PinnedBackbone:
    """What both cuts share: the pinned ImageNet variant and its input geometry."""

    def __init__(self, variant: str | Variant, square: str | SquareMode,
                 batch_size: int) -> None:
        self._variant = Variant.parse(variant)
        self._square = SquareMode.parse(square)
        self._batch_size = batch_size

    @property
    def image_size(self) -> int:
        return self._variant.spec.image_size

    @property
    def square(self) -> SquareMode:
        return self._square


class EfficientNetBackbone(_PinnedBackbone):
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

        super().__init__(variant, square, batch_size)
        blocks = block_count(self._variant)
        if not 0 <= train_blocks < blocks:
            raise ValueError(f"train_blocks must be within 0..{blocks - 1}, got {train_blocks}")
        self.first_block = blocks - train_blocks
        self._bottom, self._top = split_feature_model(
            build_feature_model(self._variant), self._variant, self.first_block)

    def features(self, batch: NDArray[np.uint8]) -> NDArray[np.float16]:
        return _run_batched(self._bottom, batch, self._batch_size)

    def top(self) -> Any:
        return self._top

    def save(self, directory: Path, top: Any, colour_weight: float,
             report: dict[str, Any]) -> str:
        from embedding.trained import TrainedConfig, save_trained

        config = TrainedConfig(variant=self._variant.value, square=self._square.value,
                               first_block=self.first_block)
        return save_trained(directory, config, top, report, colour_weight)


class ProjectionBackbone(_PinnedBackbone):
    """The whole pinned ImageNet network frozen; what trains is the residual linear projection
    after its pooled features (:func:`embedding.efficientnet_lite.add_projection`).

    Why the default: on a few hundred catalog photos, retraining convolution blocks moved
    the features little and overfitted (docs/training.md), while a projection trained on
    cached pooled vectors takes thousands of steps in seconds and re-weights what the
    ImageNet features already tell apart. ``features`` gives the pooled vectors (float16),
    ``top`` the projection alone (vector -> vector)."""

    def __init__(self, variant: str | Variant = Variant.LITE0,
                 square: str | SquareMode = SquareMode.PAD, batch_size: int = 32) -> None:
        import keras

        from embedding.efficientnet_lite import add_projection, block_count, build_feature_model
        from embedding.variants import FEATURE_DIM

        super().__init__(variant, square, batch_size)
        self.first_block = block_count(self._variant)
        self._model = build_feature_model(self._variant)
        pooled = keras.Input(shape=(FEATURE_DIM,), name="pooled")
        self._head = keras.Model(pooled, add_projection(pooled), name="projection_head")

    def features(self, batch: NDArray[np.uint8]) -> NDArray[np.float16]:
        return _run_batched(self._model, batch, self._batch_size)

    def top(self) -> Any:
        return self._head

    def save(self, directory: Path, top: Any, colour_weight: float,
             report: dict[str, Any]) -> str:
        from embedding.efficientnet_lite import PROJECTION
        from embedding.trained import TrainedConfig, save_trained, trained_model_parts

        config = TrainedConfig(variant=self._variant.value, square=self._square.value,
                               first_block=self.first_block, projection=True)
        _, saved = trained_model_parts(config)
        saved.get_layer(PROJECTION).set_weights(top.get_layer(PROJECTION).get_weights())
        return save_trained(directory, config, saved, report, colour_weight)


def _run_batched(model: Any, batch: NDArray[np.uint8], size: int) -> NDArray[np.float16]:
    parts = [np.asarray(model.predict_on_batch(batch[i : i + size].astype(np.float32)))
             for i in range(0, len(batch), size)]
    return np.concatenate(parts).astype(np.float16)
