"""Metric-learning losses in Keras ops (so they run on any Keras backend, GPU included).

* :func:`batch_hard_triplet`: for each anchor in the batch, its least similar positive and its
  most similar negative (Hermans et al., "In Defense of the Triplet Loss", 2017), hinge with a
  cosine margin. Needs batches of P labels x K samples (:class:`training.trainer.PKBatches`).
* :class:`CosineProxies`: normalised softmax over one learned proxy per label (Zhai & Wu,
  "Classification is a Strong Baseline for Deep Metric Learning", 2019): a cosine classifier
  with a temperature. Every sample is compared with every label's proxy, not only with the
  few negatives a batch holds, which is why it usually learns faster from small batches.
* :class:`SpreadPenalty`: keeps the mean cosine of a batch's pairs at the untrained model's.
  Without it the projection pulls every vector together (mean cosine 0.57 -> 0.83 on luma),
  which hands the ranking to the colour block mixed in beside it (docs/training.md, "Keeping
  the spread").
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

TRIPLET_MARGIN = 0.2
PROXY_TEMPERATURE = 0.05
PROXY_LR_SCALE = 100.0
"""Proxies are stored divided by this and multiplied back in the forward pass: with Adam, that
makes their steps this many times larger than the network's (proxy-anchor's practice), so they
keep up with the features they describe."""


def pair_masks(labels: Any) -> tuple[Any, Any]:
    """(positive, negative) boolean matrices of a batch. ``labels`` is (n,) or (n, 1): one
    label per sample; or (n, 2): the product and its group, where two products of one group
    are neither positives nor negatives of each other (the product loss then leaves telling
    a style's colours apart to the colour block, and the group loss can pull them together)."""
    labels = ops.cast(labels, "int32")
    if len(labels.shape) == 2 and labels.shape[1] == 2:
        item, group = labels[:, 0], labels[:, 1]
    else:
        item = group = ops.reshape(labels, (-1,))
    same = ops.equal(ops.expand_dims(item, 0), ops.expand_dims(item, 1))
    other_group = ops.not_equal(ops.expand_dims(group, 0), ops.expand_dims(group, 1))
    eye = ops.eye(ops.shape(item)[0], dtype="bool")
    return ops.logical_and(same, ops.logical_not(eye)), ops.logical_and(ops.logical_not(same),
                                                                        other_group)


def batch_hard_triplet(labels: Any, embeddings: Any) -> Any:
    """Mean over anchors of ``relu(max_neg cos - min_pos cos + margin)``; anchors without a
    positive or a negative in the batch are left out."""
    e = embeddings / ops.maximum(ops.norm(embeddings, axis=1, keepdims=True), 1e-12)
    sim = ops.matmul(e, ops.transpose(e))
    positive, negative = pair_masks(labels)
    hardest_pos = ops.min(ops.where(positive, sim, 2.0), axis=1)
    hardest_neg = ops.max(ops.where(negative, sim, -2.0), axis=1)
    valid = ops.cast(ops.logical_and(ops.any(positive, axis=1), ops.any(negative, axis=1)),
                     sim.dtype)
    hinge = ops.relu(hardest_neg - hardest_pos + TRIPLET_MARGIN) * valid
    return ops.sum(hinge) / ops.maximum(ops.sum(valid), 1.0)


SUPCON_TEMPERATURE = 0.1


def supervised_contrastive(labels: Any, embeddings: Any) -> Any:
    """Mean over anchors with a positive of ``-mean_p log softmax_j(cos(a, j) / T)[p]``, the
    softmax over the anchor's positives and negatives (:func:`pair_masks`)."""
    e = embeddings / ops.maximum(ops.norm(embeddings, axis=1, keepdims=True), 1e-12)
    logits = ops.matmul(e, ops.transpose(e)) / SUPCON_TEMPERATURE
    positive, negative = pair_masks(labels)
    logits = ops.where(ops.logical_or(positive, negative), logits, -1e9)
    log_prob = logits - ops.logsumexp(logits, axis=1, keepdims=True)
    n_pos = ops.sum(ops.cast(positive, logits.dtype), axis=1)
    per_anchor = -ops.sum(ops.where(positive, log_prob, 0.0), axis=1) / ops.maximum(n_pos, 1.0)
    valid = ops.cast(n_pos > 0, logits.dtype)
    return ops.sum(per_anchor * valid) / ops.maximum(ops.sum(valid), 1.0)


def proxy_softmax(labels: Any, logits: Any) -> Any:
    """Cross-entropy over the proxies; of (product, group) labels only the product counts."""
    labels = ops.cast(labels, "int32")
    if len(labels.shape) == 2:
        labels = labels[:, 0]
    return ops.mean(keras.losses.sparse_categorical_crossentropy(labels, logits,
                                                                 from_logits=True))


@keras.saving.register_keras_serializable(package="lookalike")
class CosineProxies(keras.layers.Layer):  # type: ignore[misc]
    """Embeddings -> cosine to each label's proxy, divided by the temperature (logits)."""

    def __init__(self, n_labels: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.n_labels = n_labels

    def build(self, input_shape: Any) -> None:
        self.proxies = self.add_weight(
            shape=(int(input_shape[-1]), self.n_labels),
            initializer=keras.initializers.RandomNormal(stddev=1.0 / PROXY_LR_SCALE),
            name="proxies")

    def call(self, embeddings: Any) -> Any:
        e = embeddings / ops.maximum(ops.norm(embeddings, axis=1, keepdims=True), 1e-12)
        p = self.proxies * PROXY_LR_SCALE
        p = p / ops.maximum(ops.norm(p, axis=0, keepdims=True), 1e-12)
        return ops.matmul(e, p) / PROXY_TEMPERATURE

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "n_labels": self.n_labels}


@keras.saving.register_keras_serializable(package="lookalike")
class MixColour(keras.layers.Layer):  # type: ignore[misc]
    """``[cnn, colour]`` -> unit ``[cnn / |cnn|, weight * colour]``, as
    :func:`embedding.embedder.mix_colour` builds the served vector (colour rows are unit)."""

    def __init__(self, weight: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.weight = weight

    def call(self, inputs: Any) -> Any:
        cnn, colour = inputs
        cnn = cnn / ops.maximum(ops.norm(cnn, axis=1, keepdims=True), 1e-12)
        both = ops.concatenate([cnn, self.weight * colour], axis=1)
        return both / ops.maximum(ops.norm(both, axis=1, keepdims=True), 1e-12)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "weight": self.weight}


def mean_pair_cosine(x: Any) -> Any:
    """Mean cosine over the pairs of distinct rows of ``x`` (at least two rows), from the sum
    of the unit rows (``|sum|^2`` is every pair's cosine plus each row's own), so a catalog's
    worth of rows costs no n x n matrix."""
    e = x / ops.maximum(ops.norm(x, axis=1, keepdims=True), 1e-12)
    total = ops.sum(e, axis=0)
    n = ops.cast(ops.shape(e)[0], e.dtype)
    return (ops.sum(total * total) - ops.sum(e * e)) / (n * (n - 1.0))


@keras.saving.register_keras_serializable(package="lookalike")
class SpreadPenalty(keras.layers.Layer):  # type: ignore[misc]
    """Identity on the CNN vectors that adds ``weight * (m - target)^2`` to the loss, ``m``
    being the mean cosine of the batch's pairs (:func:`mean_pair_cosine`) and ``target`` the
    untrained model's over the training photos: the vectors keep their spread, so the colour
    block keeps the share of the ranking its weight was chosen for."""

    def __init__(self, target: float, weight: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.target, self.weight = target, weight

    def call(self, x: Any) -> Any:
        self.add_loss(self.weight * ops.square(mean_pair_cosine(x) - self.target))
        return x

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "target": self.target, "weight": self.weight}
