"""Fine-tune the top of the embedding network on a catalog: the loop behind ``lookalike train``.

Steps: read the catalog and split it (product- or group-disjoint); decode every photo and
cache the frozen bottom's output for its clean and altered views (:mod:`training.features`);
score the held-out products with the untrained top; train the top on P x K batches of cached
views with the chosen loss (plus, for the projection, a penalty that keeps the vectors as
spread as the untrained model's), scoring after every epoch and keeping the last epoch (the
projection's default) or the best one (``keep_best``: the untrained top counts as epoch 0, so
the validation figures never get worse); write the model directory (:mod:`embedding.trained`)
with a report of what was measured.

Keeping the best epoch uses the validation products to choose, so the "after" figures are a
little optimistic; the held-out protocols of docs/training.md are what to quote.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray
from tqdm import tqdm

from embedding.colour import COLOUR_DIM
from embedding.embedder import mix_colour
from lookalike import signals
from lookalike.settings import ImageSettings, ModelSettings
from training.augment import AugmentConfig
from training.backbone import Backbone
from training.data import TrainImage, load_training_images, split
from training.features import CachedViews, cache_views, decode_all
from training.validate import Gallery, ValSet, group_recall, item_recall

log = logging.getLogger(__name__)

Loss = Literal["triplet", "proxy", "supcon"]


_MODEL = ModelSettings()
_IMAGES = ImageSettings()
"""The served model's colour weight and the image size limit default to the settings'."""


@dataclass(frozen=True)
class TrainOptions:
    group_key: str | None = None
    epochs: int = 8
    seed: int = 0
    loss: Loss = "triplet"
    """Batch-hard triplet won the comparison with normalised softmax (docs/training.md)."""
    views: int = 4
    """Altered views cached per training photo (besides the clean one)."""
    colour_jitter: float | None = None
    """Share of altered views with shifted colours; default 0.5 with a group key, else 0."""
    display_views: int = 1
    """Altered views per photo (the last ones, never the first) that show several copies of
    the product, as a shelf or a bin does (docs/training.md, "Stock on display")."""
    val_fraction: float = 0.2
    val_by_group: bool = False
    """Hold out whole groups (a style-disjoint split: does training carry to new styles?)
    rather than products (the held-out products' groups have other products in training, as
    a catalog's new colour or new article does; the default)."""
    labels_per_batch: int = 16
    samples_per_label: int = 4
    learning_rate: float = 1e-4
    colour_weight: float = _MODEL.colour_weight
    max_pixels: int = _IMAGES.max_pixels
    max_bytes: int = _IMAGES.max_bytes
    """A photo larger than this is skipped unread (``LOOKALIKE_IMAGES__MAX_BYTES``)."""
    group_weight: float = 1.0
    """Weight of the group loss next to the product loss (with a group key)."""
    item_within_group: bool = False
    """With a group key, whether the product loss also pushes apart products of one group
    (triplet, supcon). Off: it ignores those pairs, so it does not fight the group loss that
    pulls them together; the colour block still tells a style's colours apart for exact
    search."""
    colour_in_loss: bool = True
    """The product loss sees the served vector (CNN + colour histogram at ``colour_weight``),
    so training spends itself on what the colour does not already tell apart."""
    weight_decay: float = 0.0
    """Decoupled weight decay (AdamW): on the projection it pulls the map back towards the
    identity, i.e. towards the ImageNet vectors."""
    steps_per_epoch: int | None = None
    """Optimiser steps between two validations; default: one batch per training photo
    divided by the batch size."""
    clean_share: float | None = None
    """Share of training samples drawn from the clean photo rather than an altered view;
    default: uniform over the clean and altered views."""
    spread_weight: float = 0.0
    """Weight of the spread penalty (:class:`training.losses.SpreadPenalty`): the mean cosine
    of a batch's CNN vectors held at the untrained model's over the training photos. 0: off."""
    keep_best: bool = True
    """Keep the best epoch on validation, else the last one. ``lookalike train``'s default comes
    from :data:`TUNE_DEFAULTS` (docs/training.md, "Keeping the spread")."""

    def augment(self) -> AugmentConfig:
        jitter = self.colour_jitter
        if jitter is None:
            jitter = 0.5 if self.group_key else 0.0
        return AugmentConfig(views=self.views, colour_jitter=jitter,
                             display_views=self.display_views)


TUNE_DEFAULTS: dict[str, dict[str, Any]] = {
    "projection": {"loss": "triplet", "learning_rate": 1e-4, "epochs": 20,
                   "spread_weight": 10.0, "keep_best": False},
    "blocks": {"loss": "triplet", "learning_rate": 1e-4, "epochs": 8},
}
"""Per ``--tune``, the settings docs/training.md chose on held-out splits (the rest of
:class:`TrainOptions` is shared)."""
LOSS_SETTINGS: dict[tuple[str, str], dict[str, Any]] = {
    ("projection", "proxy"): {"learning_rate": 1e-3, "spread_weight": 0.0, "keep_best": True},
}
"""(``--tune``, ``--loss``) -> the settings that loss was measured with where they are not the
tune's defaults (docs/training.md: the projection's proxy loss, the default two rounds ago, at
its learning rate, without the spread penalty, its best epoch kept)."""


def tune_options(tune: str, loss: str | None) -> dict[str, Any]:
    """The defaults of ``--tune`` with ``--loss`` (None: the tune's own) and the settings that
    loss was measured with."""
    chosen = dict(TUNE_DEFAULTS[tune])
    if loss is not None and loss != chosen["loss"]:
        chosen["loss"] = loss
        chosen.update(LOSS_SETTINGS.get((tune, loss), {}))
    return chosen


@dataclass
class TrainResult:
    model_version: str
    before: dict[str, Any]
    after: dict[str, Any]
    best_epoch: int
    report: dict[str, Any] = field(default_factory=dict)


def _progress(total: int) -> Any:
    """A tqdm bar over all training steps, as a Keras callback (built here: keras import)."""
    import keras

    class Progress(keras.callbacks.Callback):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.bar = tqdm(total=total, desc="train", unit="step")

        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            self.bar.update(1)
            if logs and "loss" in logs:
                self.bar.set_postfix(loss=f"{float(logs['loss']):.3f}")

    return Progress()


def _labels(images: list[TrainImage], key: str) -> NDArray[np.int32]:
    values = [getattr(im, key) for im in images]
    index = {v: i for i, v in enumerate(sorted(set(values)))}
    return np.array([index[v] for v in values], np.int32)


def _batches(cached: CachedViews, units: NDArray[np.int32], labels: dict[str, NDArray[np.int32]],
             options: TrainOptions, steps: int) -> Any:
    """P labels x K (photo, view) samples per batch, drawn per unit (product, or group with a
    group key, so a batch holds other products of the same group as positives for it)."""
    import keras

    members = [np.flatnonzero(units == u) for u in range(int(units.max()) + 1)]
    n_views = cached.features.shape[1]
    p = min(options.labels_per_batch, len(members))

    class PKBatches(keras.utils.PyDataset):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.epoch = 0

        def __len__(self) -> int:
            return steps

        def __getitem__(self, index: int) -> tuple[Any, Any]:
            rng = np.random.default_rng([options.seed, self.epoch, index])
            chosen = rng.choice(len(members), size=p, replace=False)
            rows = np.concatenate([rng.choice(members[u], size=options.samples_per_label)
                                   for u in chosen])
            view = rng.integers(0, n_views, size=len(rows))
            if options.clean_share is not None:
                altered = rng.integers(1, max(2, n_views), size=len(rows)) % n_views
                view = np.where(rng.random(len(rows)) < options.clean_share, 0, altered)
            x: dict[str, Any] = {"fmap": cached.features[rows, view].astype(np.float32)}
            if _mixes_colour(options) and cached.colour is not None:
                x["colour"] = cached.colour[rows, view]
            return x, {name: values[rows] for name, values in labels.items()}

    return PKBatches()


def _embed(top: Any, maps: NDArray[np.float16], batch: int = 64) -> NDArray[np.float32]:
    out = [np.asarray(top.predict_on_batch(maps[i : i + batch].astype(np.float32)))
           for i in range(0, len(maps), batch)]
    return np.concatenate(out).astype(np.float32)


def _score(top: Any, val: CachedViews, options: TrainOptions,
           train: CachedViews | None = None) -> dict[str, Any]:
    """Exact and similar recall of the held-out photos; ``train``: the training photos join
    the group task's gallery (a product-disjoint split, where a held-out product's group has
    its other products in training)."""
    assert val.colour is not None
    products = [im.product_id for im in val.images]
    n_views = val.features.shape[1] - 1
    clean = _embed(top, val.features[:, 0])
    query = _embed(top, val.features[:, 1:].reshape(-1, *val.features.shape[2:]))
    vs = ValSet(products, [im.group for im in val.images],
                [p for p in products for _ in range(n_views)],
                val.colour[:, 0], val.colour[:, 1:].reshape(len(products) * n_views, -1))
    out: dict[str, Any] = {"item": item_recall(vs, clean, query, options.colour_weight),
                           "item_cnn_only": item_recall(vs, clean, query, 0.0)}
    if options.group_key:
        more = None
        if train is not None:
            more = Gallery(_embed(top, train.features[:, 0]),
                           [im.product_id for im in train.images],
                           [im.group for im in train.images])
        out["group_similar"] = group_recall(vs, clean, more)
    return out


TRAIN_PROBE = 300
"""Training photos scored before and after (a seeded subset): whether the fit learnt its own
labels at all, which tells a run that did not fit from one that did not carry over."""


def _score_train(top: Any, cache: CachedViews, options: TrainOptions) -> dict[str, Any]:
    n = len(cache.images)
    rows = np.sort(np.random.default_rng(options.seed).permutation(n)[:TRAIN_PROBE])
    assert cache.colour is not None
    probe = CachedViews([cache.images[i] for i in rows], cache.features[rows],
                        cache.colour[rows])
    return _score(top, probe, options)


def _r1(scores: dict[str, Any]) -> list[float]:
    """R@1 of the exact task, and of the similar task where there is one."""
    return [float(scores[task]["R@1"]) for task in ("item", "group_similar")
            if scores.get(task)]


def _better(scores: dict[str, Any], best: dict[str, Any], before: dict[str, Any]) -> bool:
    """An epoch is kept when no task's R@1 is below the untrained one's and their sum beats
    the best so far."""
    now = _r1(scores)
    return (all(n >= b for n, b in zip(now, _r1(before), strict=True))
            and sum(now) > sum(_r1(best)))


def _build(top: Any, options: TrainOptions, n_labels: dict[str, int],
           init: dict[str, NDArray[np.float32]], spread_target: float) -> Any:
    import keras

    from training.losses import (
        PROXY_LR_SCALE,
        CosineProxies,
        MixColour,
        SpreadPenalty,
        batch_hard_triplet,
        proxy_softmax,
        supervised_contrastive,
    )

    for layer in top.layers:  # BN statistics of small P x K batches would drift: keep ImageNet's
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False
    inputs = {"fmap": keras.Input(shape=tuple(top.inputs[0].shape[1:]), name="fmap")}
    pooled = top(inputs["fmap"])
    if options.spread_weight > 0:
        pooled = SpreadPenalty(spread_target, options.spread_weight)(pooled)
    # the product (exact) loss on what exact search compares; the group (similar) loss on the
    # CNN part alone, as a similar search compares
    embedded = {name: pooled for name in n_labels}
    if _mixes_colour(options):
        inputs["colour"] = keras.Input(shape=(COLOUR_DIM,), name="colour")
        embedded["item"] = MixColour(options.colour_weight)([pooled, inputs["colour"]])
    outputs: dict[str, Any] = {}
    losses: dict[str, Any] = {}
    for name in n_labels:
        if options.loss == "proxy":
            layer = CosineProxies(n_labels[name], name=name)
            outputs[name] = layer(embedded[name])
            layer.proxies.assign((init[name] / PROXY_LR_SCALE).T)
            losses[name] = proxy_softmax
        else:
            outputs[name] = keras.layers.Identity(name=name)(embedded[name])
            losses[name] = (supervised_contrastive if options.loss == "supcon"
                            else batch_hard_triplet)
    model = keras.Model(inputs, outputs)
    optimizer = keras.optimizers.AdamW(options.learning_rate, weight_decay=options.weight_decay)
    optimizer.exclude_from_weight_decay(var_names=["proxies"])  # they are no part of the model
    model.compile(optimizer=optimizer, loss=losses,
                  loss_weights={n: (options.group_weight if n == "group" else 1.0)
                                for n in n_labels})
    return model


def _mean_pair_cosine(x: NDArray[np.float32]) -> float:
    """:func:`training.losses.mean_pair_cosine` of ``x`` as a float (the CNN vectors' spread:
    what :class:`training.losses.SpreadPenalty` holds); 0 with fewer than two rows."""
    from keras import ops

    from training.losses import mean_pair_cosine

    return float(ops.convert_to_numpy(mean_pair_cosine(x))) if len(x) >= 2 else 0.0


@contextmanager
def _stop_between_steps(model: Any) -> Iterator[None]:
    """A SIGINT or SIGTERM during ``model.fit`` lets the step finish (``stop_training``) and is
    then delivered to the handler that was there before. Raised mid-step, the interrupt
    unwinds through Keras while TensorFlow's input pipeline runs the batches' Python code on
    its own thread: once in about ten Ctrl-Cs during a fit here the process then aborted
    (``malloc(): unsorted double linked list corrupted``, exit 134, the folder left behind)."""
    with signals.held(lambda _sig: setattr(model, "stop_training", True)) as received:
        yield
    if received:
        signal.raise_signal(received[0])


def _mixes_colour(options: TrainOptions) -> bool:
    return options.colour_in_loss and options.colour_weight > 0


def _class_means(x: NDArray[np.float32], labels: NDArray[np.int32]) -> NDArray[np.float32]:
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    sums = np.zeros((int(labels.max()) + 1, x.shape[1]), np.float32)
    np.add.at(sums, labels, x)
    out: NDArray[np.float32] = sums / np.maximum(np.linalg.norm(sums, axis=1, keepdims=True),
                                                1e-12)
    return out


@dataclass
class Prepared:
    """Everything computed before the first step: the split and the cached views."""

    catalog: Path
    train: CachedViews
    val: CachedViews
    augment: AugmentConfig
    initial: list[Any]
    """The top's weights before training, so several fits can start from the same point."""
    seconds: dict[str, float]
    skipped: list[tuple[TrainImage, str]] = field(default_factory=list)
    """Photos that could not be decoded, with the reason: left out, and listed in the report."""


VAL_VIEWS = 2
"""Altered views per held-out photo, each one query."""


def prepare(catalog: Path, backbone: Backbone, options: TrainOptions) -> Prepared:
    """Decode every photo, split the readable ones (a product whose photos all failed to
    decode does not count towards the split's minimum) and cache their views."""
    images = load_training_images(catalog, options.group_key)
    by_group = options.val_by_group and options.group_key is not None
    augment = options.augment()
    # not ``with``: its shutdown would wait for every queued decode after a Ctrl-C
    pool = ThreadPoolExecutor(max(1, min(4, os.cpu_count() or 1)))
    try:
        t0 = time.perf_counter()
        readable, photos, skipped = decode_all(images, options.max_pixels, pool,
                                               options.max_bytes)
        decode_s = time.perf_counter() - t0
        parts = split(readable, options.val_fraction, options.seed, by_group=by_group,
                      unreadable=skipped)
        photo = dict(zip(readable, photos, strict=True))
        train_cache = cache_views(parts.train, [photo[im] for im in parts.train], backbone,
                                  augment, options.seed, colour=True, pool=pool,
                                  desc="views (train)")
        val_cache = cache_views(parts.val, [photo[im] for im in parts.val], backbone,
                                AugmentConfig(views=VAL_VIEWS, colour_jitter=0.0,
                                              display_views=options.display_views),
                                options.seed + 1_000_003, colour=True, pool=pool,
                                desc="views (validation)")
    finally:
        pool.shutdown(cancel_futures=True)
    return Prepared(catalog, train_cache, val_cache, augment, backbone.top().get_weights(),
                    {"decode": round(decode_s, 1), "cache_train": round(train_cache.seconds, 1),
                     "cache_validation": round(val_cache.seconds, 1)}, skipped)


def train(catalog: Path, out: Path, backbone: Backbone, options: TrainOptions) -> TrainResult:
    """Prepare, fit and write ``out``: what ``lookalike train`` runs."""
    import keras

    started = time.perf_counter()
    keras.utils.set_random_seed(options.seed)
    prepared = prepare(catalog, backbone, options)
    result = fit(prepared, backbone, options)
    result.report["seconds"]["total"] = round(time.perf_counter() - started, 1)
    result.model_version = backbone.save(out, backbone.top(), options.colour_weight,
                                         result.report)
    return result


def nothing_to_learn(images: list[TrainImage], options: TrainOptions) -> str | None:
    """Why a catalog gives nothing to train on, or None. Without a group key and with one photo
    per product, the only positives are altered copies of each photo: learning to ignore those
    alterations lowered recall on real other views of the same product (luma-views, exact
    R@1 0.63 -> 0.57, docs/training.md), and the validation, whose queries are such copies,
    cannot see it. So the untrained map is kept and the run says why."""
    if options.group_key:
        return None
    counts: dict[str, int] = {}
    for image in images:
        counts[image.product_id] = counts.get(image.product_id, 0) + 1
    if max(counts.values(), default=0) >= 2:
        return None
    return ("every product has one photo and there is no --group-key: altered copies alone "
            "are no evidence that training helps real queries (docs/training.md)")


def fit(prepared: Prepared, backbone: Backbone, options: TrainOptions) -> TrainResult:
    """Train the top from its initial weights and leave the best epoch's weights in it.

    ``options`` may differ from those ``prepared`` was made with in the loss, the epochs and
    the learning rate (a sweep over those reuses the cached views), not in what the cache
    depends on (group key, views, seed).
    """
    import keras

    keras.utils.set_random_seed(options.seed)
    train_cache, val_cache = prepared.train, prepared.val
    train_images, val_images = train_cache.images, val_cache.images
    top = backbone.top()
    top.set_weights(prepared.initial)
    group_gallery = None if options.val_by_group else train_cache
    before = _score(top, val_cache, options, group_gallery)
    train_before = _score_train(top, train_cache, options)
    log.info("validation before training: %s", before)
    label_sets = {"item": _labels(train_images, "product_id")}
    if options.group_key:
        label_sets["group"] = _labels(train_images, "group")
    units = label_sets["group" if options.group_key else "item"]
    clean = _embed(top, train_cache.features[:, 0])
    init = {name: _class_means(clean, labels) for name, labels in label_sets.items()}
    if _mixes_colour(options):
        assert train_cache.colour is not None
        mixed = mix_colour(clean, train_cache.colour[:, 0], options.colour_weight)
        init["item"] = _class_means(mixed, label_sets["item"])
    spread_before = _mean_pair_cosine(clean)
    model = _build(top, options, {n: int(v.max()) + 1 for n, v in label_sets.items()}, init,
                   spread_before)
    batch = min(options.labels_per_batch, int(units.max()) + 1) * options.samples_per_label
    steps = options.steps_per_epoch or max(1, -(-len(train_images) // batch))
    best = (0, top.get_weights(), before)
    history: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    skip = nothing_to_learn(train_images, options)
    epochs = 0 if skip else options.epochs
    if skip:
        log.warning("not training: %s", skip)
    progress = _progress(steps * epochs)
    targets = dict(label_sets)
    if options.group_key and not options.item_within_group:
        targets["item"] = np.stack([label_sets["item"], label_sets["group"]], axis=1)
    data = _batches(train_cache, units, targets, options, steps)
    try:
        for epoch in range(1, epochs + 1):
            data.epoch = epoch  # the batches of an epoch depend on (seed, epoch) only
            with _stop_between_steps(model):
                fit = model.fit(data, epochs=1, verbose=0, callbacks=[progress], shuffle=False)
            scores = _score(top, val_cache, options, group_gallery)
            history.append({"epoch": epoch, "loss": round(float(fit.history["loss"][-1]), 4),
                            "val": scores})
            log.info("epoch %d: loss %.4f, validation %s", epoch, fit.history["loss"][-1], scores)
            if _better(scores, best[2], before) or not options.keep_best:
                best = (epoch, top.get_weights(), scores)
    finally:  # also when stopped: the error line then starts on a line of its own
        progress.bar.close()
    fit_s = time.perf_counter() - t0
    best_epoch, weights, after = best
    train_after = _score_train(top, train_cache, options)  # the last epoch: did the fit learn?
    top.set_weights(weights)
    spread_after = _mean_pair_cosine(_embed(top, train_cache.features[:, 0]))
    n_views = train_cache.features.shape[0] * train_cache.features.shape[1]
    report = {
        "catalog": str(prepared.catalog),
        "options": {**asdict(options), "augment": asdict(prepared.augment)},
        "train": {"images": len(train_images), "products": len(set(label_sets["item"])),
                  "groups": int(units.max()) + 1, "views": n_views},
        "validation": {"images": len(val_images),
                       "products": len({im.product_id for im in val_images}),
                       "groups": len({im.group for im in val_images})},
        "skipped": [{"image": str(im.path), "reason": r} for im, r in prepared.skipped],
        "before": before, "after": after, "best_epoch": best_epoch, "history": history,
        "training_photos": {"before": train_before, "last_epoch": train_after},
        "mean_pair_cosine": {"before": round(spread_before, 4),
                             "after": round(spread_after, 4)},
        "seconds": {**prepared.seconds, "fit": round(fit_s, 1)},
        "not_trained": skip,
        "views_per_s": round((n_views + (1 + VAL_VIEWS) * len(val_images)) /
                             max(train_cache.seconds + val_cache.seconds, 1e-9), 1),
        "samples_per_s": round(steps * batch * options.epochs / max(fit_s, 1e-9), 1),
        "conditions": {"cpus": os.cpu_count(), "load_avg_1m": round(os.getloadavg()[0], 2),
                       "keras_backend": keras.config.backend()},
    }
    return TrainResult("", before, after, best_epoch, report)
