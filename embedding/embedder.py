"""The embedding interface shared by ingest and search, and its EfficientNet-Lite implementation.

Ingest and search only see :class:`Embedder`: a version string, a dimension and
``embed(images)``. The version is stored next to every vector, so it must name everything that
changes the numbers (weights, pooling, preprocessing); vectors of two versions are never
compared.

Importing this module is cheap: Keras (and with it TensorFlow or JAX) is imported only when an
:class:`EfficientNetLiteEmbedder` is built, so fakes in other packages' tests stay fast.
"""

from __future__ import annotations

import importlib
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from embedding.colour import COLOUR_DIM, colour_descriptors, colour_version
from embedding.preprocess import CROP_FRACTION, SquareMode, preprocess_image
from embedding.variants import FEATURE_DIM, Variant
from embedding.weights import StateDict

log = logging.getLogger(__name__)

# Bump when code here or in preprocess/efficientnet_lite changes the vectors for given weights.
REVISION = 1


@runtime_checkable
class Embedder(Protocol):
    """Turns RGB images into L2-normalised float32 vectors of a fixed dimension."""

    @property
    def model_version(self) -> str:
        """Changes whenever the same image could get a different vector."""
        ...

    @property
    def dim(self) -> int: ...

    def embed(self, images: Sequence[Image.Image]) -> NDArray[np.float32]:
        """``(len(images), dim)`` float32, each row of unit length."""
        ...


@runtime_checkable
class PreparedEmbedder(Embedder, Protocol):
    """An Embedder whose CPU preprocessing can run apart from (and overlap) inference."""

    def prepare(self, image: Image.Image) -> NDArray[Any]:
        """One RGB image -> the model's input array for it."""
        ...

    def embed_prepared(self, batch: NDArray[Any]) -> NDArray[np.float32]:
        """Stacked ``prepare`` outputs -> ``(n, dim)`` unit rows, as ``embed`` returns."""
        ...


def model_version(variant: str | Variant, square: str | SquareMode, colour_weight: float) -> str:
    """e.g. ``efficientnet-lite0-imagenet-gap-pad224-v1`` (CNN only) or
    ``efficientnet-lite0-imagenet-gap-pad224-v1+hsv12x4x4fg-w0.5`` (with colour)."""
    v, mode = Variant.parse(variant), SquareMode.parse(square)
    version = f"efficientnet-{v.value}-imagenet-gap-{mode.value}{v.spec.image_size}-v{REVISION}"
    if colour_weight > 0:
        version += f"+{colour_version()}-w{colour_weight:g}"
    return version


def mix_colour(
    cnn: NDArray[np.float32], colour: NDArray[np.float32], weight: float
) -> NDArray[np.float32]:
    """Unit rows of ``[cnn / |cnn|, weight * colour]``: cosine = (cos_cnn + w^2 cos_colour) /
    (1 + w^2) for unit colour rows, so ``weight`` sets how much colour can move a score."""
    return l2_normalise(np.hstack([l2_normalise(cnn), weight * colour]).astype(np.float32))


def l2_normalise(x: NDArray[np.float32]) -> NDArray[np.float32]:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    out: NDArray[np.float32] = (x / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)
    return out


def batch_buckets(batch_size: int) -> list[int]:
    """Batch shapes the model is ever run with: powers of two up to ``batch_size``, and it.

    A batch is run as pieces of these sizes (:func:`split_into_buckets`), so a single search
    query costs one image of compute, while the number of distinct shapes (each a fresh
    trace/compile: about a second on TF, several on JAX/XLA) stays small.
    """
    sizes = [1 << i for i in range(batch_size.bit_length()) if (1 << i) < batch_size]
    return [*sizes, batch_size]


def split_into_buckets(n: int, buckets: Sequence[int]) -> list[int]:
    """Greedy split of ``n`` images into bucket sizes, largest first: 104 -> [64, 32, 8].

    ``buckets`` must contain 1 (as :func:`batch_buckets` does), so any ``n`` splits exactly.
    """
    sizes: list[int] = []
    for bucket in sorted(buckets, reverse=True):
        while n >= bucket:
            sizes.append(bucket)
            n -= bucket
    if n:
        raise ValueError(f"buckets {list(buckets)} cannot split {n} images (no size 1)")
    return sizes


class EfficientNetLiteEmbedder:
    """ImageNet EfficientNet-Lite, global-average-pooled head activations (1280-d), optionally
    followed by the product's colour descriptor (:mod:`embedding.colour`, 192-d) weighted by
    ``colour_weight`` (0 leaves it out)."""

    def __init__(
        self,
        variant: str | Variant = Variant.LITE0,
        square: str | SquareMode = SquareMode.PAD,
        batch_size: int = 32,
        *,
        colour_weight: float,
        weights: StateDict | None = None,
        model: Any = None,
        version: str | None = None,
    ) -> None:
        """``model`` and ``version``: a prebuilt feature model (a fine-tuned one, see
        :mod:`embedding.trained`) and the version string that names it; both or neither."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not 0.0 <= colour_weight <= 10.0 or math.isnan(colour_weight):
            raise ValueError(f"colour_weight must be within 0..10, got {colour_weight}")
        self._colour_weight = float(colour_weight)
        self._dim = FEATURE_DIM + (COLOUR_DIM if self._colour_weight > 0 else 0)
        self._variant = Variant.parse(variant)
        self._square = SquareMode.parse(square)
        self._batch_size = batch_size
        self._buckets = batch_buckets(batch_size)
        self._size = self._variant.spec.image_size
        if (model is None) != (version is None):
            raise ValueError("a prebuilt model needs its version, and a version its model")
        self._version = version or model_version(self._variant, self._square, self._colour_weight)
        self._predict = _build_predict(self._variant, weights, model)
        self._lock = threading.Lock()  # one graph, one caller at a time
        # The colour part (~2-3 ms per image of numpy and PIL, both of which release the GIL)
        # runs on these threads while the model runs, so it neither serialises behind the
        # model nor caps a GPU's throughput at one CPU core's ~400 images/s.
        self._colour_workers = max(1, min(4, os.cpu_count() or 1))
        self._colour_pool = (
            ThreadPoolExecutor(self._colour_workers, thread_name_prefix="colour")
            if self._colour_weight > 0 else None
        )
        self._device = describe_device()
        log.info("embedding model %s runs on %s", self._version, self._device)

    @property
    def model_version(self) -> str:
        return self._version

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def colour_weight(self) -> float:
        return self._colour_weight

    @property
    def on_gpu(self) -> bool:
        """Whether inference runs on an accelerator (so the CPU cores are free for decoding)."""
        return self._device.startswith("GPU")

    @property
    def image_size(self) -> int:
        return self._size

    @property
    def decode_size(self) -> int:
        """The smallest square a photo must cover for preprocessing not to upscale it: the
        model's input for ``pad``, the area the centre crop is taken from for ``crop``."""
        if self._square is SquareMode.CROP:
            return math.ceil(self._size / CROP_FRACTION)
        return self._size

    def embed(self, images: Sequence[Image.Image]) -> NDArray[np.float32]:
        out = np.empty((len(images), self._dim), dtype=np.float32)
        for start in range(0, len(images), self._batch_size):
            chunk = images[start : start + self._batch_size]
            out[start : start + len(chunk)] = self.embed_prepared(
                np.stack([self.prepare(image) for image in chunk])
            )
        return out

    def prepare(self, image: Image.Image) -> NDArray[np.uint8]:
        """The CPU half of ``embed`` for one image, so callers can run it on other threads."""
        return preprocess_image(image, self._size, self._square)

    def embed_prepared(self, batch: NDArray[Any]) -> NDArray[np.float32]:
        """The model half of ``embed``: stacked ``prepare`` outputs -> unit rows."""
        expected = (self._size, self._size, 3)
        if batch.ndim != 4 or batch.shape[1:] != expected:
            raise ValueError(f"expected (n, {self._size}, {self._size}, 3), got {batch.shape}")
        colour = self._colour_async(batch)
        out = np.empty((len(batch), FEATURE_DIM), dtype=np.float32)
        for start in range(0, len(batch), self._batch_size):
            chunk = batch[start : start + self._batch_size]
            out[start : start + len(chunk)] = self._run(chunk)
        if colour:
            parts = [future.result() for future in colour]
            return mix_colour(out, np.concatenate(parts), self._colour_weight)
        return l2_normalise(out)

    def _colour_async(self, batch: NDArray[Any]) -> list[Future[NDArray[np.float32]]]:
        """Colour descriptors of ``batch`` in slices on the colour threads (none without)."""
        if self._colour_pool is None or not len(batch):
            return []
        step = math.ceil(len(batch) / self._colour_workers)
        return [self._colour_pool.submit(colour_descriptors, batch[i : i + step])
                for i in range(0, len(batch), step)]

    def warm_up(self) -> float:
        """Run every bucket shape once so no batch pays for tracing/compiling; returns seconds.

        On TF the first shapes cost ~1 s each to trace; on JAX/XLA every shape compiles. Ingest
        calls this on a background thread while the consumer joins its group.
        """
        started = time.perf_counter()
        for size in self._buckets:
            self._run(np.zeros((size, self._size, self._size, 3), dtype=np.uint8))
        return time.perf_counter() - started

    def _run(self, x: NDArray[Any]) -> NDArray[np.float32]:
        """Run at most one batch as bucket-sized pieces, so compiled shapes are reused.

        A batch is split into buckets (104 images -> 64 + 32 + 8) rather than zero-padded up to
        the next one (128): padding wasted up to half the compute, while on CPU the throughput
        per image barely depends on the batch size (2 cores, Lite0: 72-74 images/s from 8 to
        128).
        """
        out = np.empty((len(x), FEATURE_DIM), dtype=np.float32)
        start = 0
        for size in split_into_buckets(len(x), self._buckets):
            chunk = np.asarray(x[start : start + size], dtype=np.float32)
            with self._lock:
                out[start : start + size] = self._predict(chunk)
            start += size
        return out


def _build_predict(
    variant: Variant, weights: StateDict | None, model: Any = None
) -> Callable[[NDArray[np.float32]], NDArray[np.float32]]:
    """The model's compiled predict step (``predict_on_batch``), behind a numpy interface.

    Measured on 2 CPU cores with TF: ``predict_on_batch`` ~80 images/s, ``model.predict``
    ~45-60 (per-call loop and callback overhead), eager ``model(x, training=False)`` ~30-50.
    Keras leaves XLA off on CPU-only TF, which matters: with ``jit_compile=True`` the
    depthwise convolutions drop to ~4 images/s.
    """
    from embedding.efficientnet_lite import build_feature_model  # imports keras

    if model is None:
        model = build_feature_model(variant, weights)

    def predict(x: NDArray[np.float32]) -> NDArray[np.float32]:
        return np.asarray(model.predict_on_batch(x), dtype=np.float32)

    return predict


def describe_device() -> str:
    """'GPU (...)' when the Keras backend sees an accelerator, else 'CPU'; never raises."""
    import keras

    backend = keras.config.backend()
    try:
        return f"{_DEVICE_PROBES[backend]()} (keras backend {backend})"
    except Exception as exc:  # a probe failing must not stop the service from starting
        return f"unknown device (keras backend {backend}: {exc})"


def _tf_device() -> str:
    tf: Any = importlib.import_module("tensorflow")
    gpus = tf.config.list_physical_devices("GPU")
    return f"GPU ({', '.join(g.name for g in gpus)})" if gpus else "CPU"


def _jax_device() -> str:
    jax: Any = importlib.import_module("jax")
    platform = str(jax.default_backend())
    return "CPU" if platform == "cpu" else f"GPU ({platform}: {jax.devices()[0]})"


def _torch_device() -> str:
    torch: Any = importlib.import_module("torch")
    if torch.cuda.is_available():
        return f"GPU ({torch.cuda.get_device_name(0)})"
    return "CPU"


_DEVICE_PROBES: dict[str, Callable[[], str]] = {
    "tensorflow": _tf_device,
    "jax": _jax_device,
    "torch": _torch_device,
}


def create_embedder(
    variant: str | Variant,
    square: str | SquareMode,
    batch_size: int,
    colour_weight: float,
    path: str | os.PathLike[str] | None = None,
) -> Embedder:
    """The embedder the settings name (``lookalike.app.build_embedder``; the defaults live in
    ``lookalike/settings.py``); unknown variant or square mode is a ValueError.

    ``path``: a directory written by ``lookalike train``; its own variant and square mode
    replace the arguments (see :mod:`embedding.trained`).
    """
    if path is not None:
        from embedding.trained import load_trained_model

        model, config, version = load_trained_model(Path(path), colour_weight)
        log.info("trained model %s from %s", version, path)
        return EfficientNetLiteEmbedder(config.variant, config.square, batch_size,
                                        colour_weight=colour_weight,
                                        model=model, version=version)
    return EfficientNetLiteEmbedder(Variant.parse(variant), SquareMode.parse(square), batch_size,
                                    colour_weight=colour_weight)
