"""Measure retrieval levers on a protocol, outside Milvus (exact cosine in numpy).

``lookalike eval`` measures the product as configured; this script measures *candidate*
settings on the same protocol files, from one pass of the network per image and scale, so
each lever costs seconds to try. It produced the "levers" table in docs/quality.md:

    PYTHONPATH=. python bench/levers.py --gallery var/protocols/luma-views/gallery.jsonl \\
        --queries var/protocols/luma-views/queries.jsonl [--sizes 224,320] [--variant lite0] \\
        [--head-split]

Descriptors per image, from EfficientNet-Lite's head activations (1280 channels) and the
output of its stride-16 stage (112 channels), at each size, plain and mirrored:

* ``gap`` average pooling (the product's CNN part), ``gem`` generalised mean (p = 3),
  ``mac`` max pooling, ``fgap`` average over the foreground cells only (foreground as in
  embedding/colour.py, at the feature map's resolution), ``s5`` stage-5 foreground average;
* the colour descriptor of embedding/colour.py (from the ``pad`` square at the first size).

Rankings are one hit per product (its best image), as ProductSearch returns them, and scored
with evaluation/metrics.py. ``--head-split`` (galleries with ``group_id``, such as Luma) trains
a linear projection head with a normalised-softmax loss on half of the groups and scores the
other half, with and without colour: a frozen-backbone version of the "train" lever.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageOps

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from embedding.colour import colour_descriptor, foreground_weights  # noqa: E402
from embedding.decode import load_image  # noqa: E402
from embedding.embedder import l2_normalise  # noqa: E402
from embedding.preprocess import pad_to_square  # noqa: E402
from evaluation.metrics import average_precision_at_r, recall_at_k  # noqa: E402
from evaluation.protocol import GalleryProduct, Query, load_gallery, load_queries  # noqa: E402

F32 = NDArray[np.float32]
MAX_PIXELS = 40_000_000


def build_model(variant: str) -> Any:
    """Lite backbone of any input size with two outputs: stage-5 map and head map."""
    import keras
    from keras import layers

    from embedding import efficientnet_lite as eff
    from embedding.variants import Variant
    from embedding.weights import load_variant_weights

    v = Variant.parse(variant)
    inputs = keras.Input(shape=(None, None, 3), dtype="float32")
    x = layers.Rescaling(1.0 / eff.INPUT_STD, offset=-eff.INPUT_MEAN / eff.INPUT_STD,
                         name="normalise")(inputs)
    x = eff._conv_bn(x, eff.STEM_FILTERS, 3, 2, "stem", act=True)
    plan = eff.block_plan(v.spec)
    stage_ends = []
    for i, block in enumerate(plan):
        x = eff._mbconv(x, block)
        if i == len(plan) - 1 or plan[i + 1].stride == 2:
            stage_ends.append(x)
    head = eff._conv_bn(x, eff.HEAD_FILTERS, 1, 1, "head", act=True)
    model = keras.Model(inputs, [stage_ends[-3], head])  # stride 16 (112 ch), head (1280)
    eff.load_into(model, load_variant_weights(v), head=False)
    return model


def _cell_weights(square: NDArray[np.uint8], grid: int) -> F32:
    mask = Image.fromarray((foreground_weights(square) * 255).astype(np.uint8), "L")
    return np.asarray(mask.resize((grid, grid), Image.Resampling.BOX), np.float32) / 255.0


def _pool(fmap: F32, weights: F32) -> dict[str, F32]:
    w = weights[..., None]
    wsum = np.maximum(w.sum(axis=(1, 2)), 1e-6)
    return {
        "gap": fmap.mean(axis=(1, 2)),
        "gem": (np.clip(fmap, 1e-6, None) ** 3).mean(axis=(1, 2)) ** (1 / 3),
        "mac": fmap.max(axis=(1, 2)),
        "fgap": (fmap * w).sum(axis=(1, 2)) / wsum,
    }


def describe(paths: list[Path], variant: str, sizes: list[int]) -> dict[str, F32]:
    """Every descriptor of every image, keyed ``<name>@<size>[f]`` (f: mirrored)."""
    model = build_model(variant)
    photos = [load_image(p, MAX_PIXELS) for p in paths]
    out: dict[str, list[F32]] = {}
    out["colour"] = [np.stack([colour_descriptor(np.asarray(pad_to_square(im, sizes[0])))
                               for im in photos])]
    for size in sizes:
        for mirrored in (False, True):
            tag = f"@{size}{'f' if mirrored else ''}"
            for start in range(0, len(photos), 32):
                chunk = photos[start : start + 32]
                squares = np.stack([np.asarray(pad_to_square(
                    ImageOps.mirror(im) if mirrored else im, size)) for im in chunk])
                s5, head = (np.asarray(o, np.float32)
                            for o in model.predict_on_batch(squares.astype(np.float32)))
                cells = np.stack([_cell_weights(sq, head.shape[1]) for sq in squares])
                cells5 = np.stack([_cell_weights(sq, s5.shape[1]) for sq in squares])
                for name, value in _pool(head, cells).items():
                    out.setdefault(name + tag, []).append(value)
                out.setdefault("s5" + tag, []).append(_pool(s5, cells5)["fgap"])
            print(f"  described {len(photos)} images at {size}px{' mirrored' if mirrored else ''}",
                  flush=True)
    return {k: np.concatenate(v).astype(np.float32) for k, v in out.items()}


class Scorer:
    """Exact cosine ranking, one hit per product, scored like ``lookalike eval``."""

    def __init__(self, gallery_pids: list[str], queries: list[Query]) -> None:
        self.pids = np.array(gallery_pids)
        self.queries = queries

    def __call__(self, gallery: F32, queries: F32) -> tuple[float, float, float, float]:
        sims = l2_normalise(queries) @ l2_normalise(gallery).T
        totals = np.zeros(4)
        for row, query in zip(sims, self.queries, strict=True):
            ranked: list[str] = []
            seen: set[str] = set()
            want = max(10, len(query.relevant))
            for j in np.argsort(-row, kind="stable"):
                pid = str(self.pids[j])
                if pid not in seen:
                    seen.add(pid)
                    ranked.append(pid)
                    if len(ranked) >= want:
                        break
            rel = set(query.relevant)
            totals += [recall_at_k(ranked, rel, 1), recall_at_k(ranked, rel, 5),
                       recall_at_k(ranked, rel, 10), average_precision_at_r(ranked, rel)]
        r1, r5, r10, ap = totals / max(1, len(self.queries))
        return float(r1), float(r5), float(r10), float(ap)


def pca_whiten(x: F32, fit_rows: list[int], dim: int, shrink: float) -> F32:
    """PCA-whitening learned on ``fit_rows`` (no labels), eigenvalues shrunk towards the mean."""
    x = l2_normalise(x)
    fit = x[fit_rows]
    mean = fit.mean(axis=0)
    values, vectors = np.linalg.eigh(np.cov((fit - mean).T))
    order = np.argsort(-values)[:dim]
    values, vectors = values[order], vectors[:, order]
    return l2_normalise(((x - mean) @ vectors / np.sqrt(values + shrink * values.mean()))
                        .astype(np.float32))


def mix(cnn: F32, colour: F32, weight: float) -> F32:
    return l2_normalise(np.hstack([l2_normalise(cnn), weight * colour]).astype(np.float32))


def alpha_qe(gallery: F32, queries: F32, k: int, alpha: float = 3.0) -> F32:
    sims = queries @ gallery.T
    top = np.argsort(-sims, axis=1)[:, :k]
    expanded = queries.copy()
    for i in range(k):
        weight = np.take_along_axis(sims, top[:, [i]], axis=1).clip(0) ** alpha
        expanded += weight * gallery[top[:, i]]
    return l2_normalise(expanded)


def dba(gallery: F32, k: int, alpha: float = 3.0) -> F32:
    sims = gallery @ gallery.T
    top = np.argsort(-sims, axis=1)[:, :k]  # includes the row itself
    out = np.zeros_like(gallery)
    for i in range(k):
        out += np.take_along_axis(sims, top[:, [i]], axis=1).clip(0) ** alpha * gallery[top[:, i]]
    return l2_normalise(out)


def train_head(x: F32, labels: NDArray[np.int64], temperature: float = 0.1,
               steps: int = 300, seed: int = 0) -> F32:
    """A 1280x1280 linear head (from identity, pulled back to it) with normalised softmax over
    one learned proxy per label."""
    import tensorflow as tf

    tf.random.set_seed(seed)
    dim = x.shape[1]
    eye = np.eye(dim, dtype=np.float32)
    w = tf.Variable(eye)
    proxies = tf.Variable(l2_normalise(np.stack(
        [x[labels == c].mean(axis=0) for c in range(int(labels.max()) + 1)]).astype(np.float32)))
    opt = tf.keras.optimizers.Adam(1e-3)
    xt, yt = tf.constant(x), tf.constant(labels)
    for _ in range(steps):
        with tf.GradientTape() as tape:
            e = tf.math.l2_normalize(xt @ w, axis=1)
            logits = e @ tf.transpose(tf.math.l2_normalize(proxies, axis=1)) / temperature
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(yt, logits))
            loss += 1e-2 * tf.reduce_sum((w - eye) ** 2)
        grads = tape.gradient(loss, [w, proxies])
        opt.apply_gradients(zip(grads, [w, proxies], strict=True))
    out: F32 = w.numpy()
    return out


def _row(name: str, scores: tuple[float, float, float, float]) -> None:
    print(f"{name:<52} " + " ".join(f"{s:6.3f}" for s in scores), flush=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--gallery", type=Path, required=True)
    p.add_argument("--queries", type=Path, required=True)
    p.add_argument("--variant", default="lite0")
    p.add_argument("--sizes", default="224,320", help="input sizes; the first is the base")
    p.add_argument("--head-split", action="store_true",
                   help="also train a head on half of the group_ids, score the other half")
    args = p.parse_args()

    products: list[GalleryProduct] = load_gallery(args.gallery)
    queries = load_queries(args.queries, products)
    sizes = [int(s) for s in args.sizes.split(",")]
    gallery_paths = [(prod.product_id, path) for prod in products for path in prod.images]
    paths = sorted({path for _, path in gallery_paths} | {q.image for q in queries})
    row_of = {path: i for i, path in enumerate(paths)}
    g_rows = [row_of[path] for _, path in gallery_paths]
    q_rows = [row_of[q.image] for q in queries]
    print(f"{len(products)} products, {len(gallery_paths)} gallery images, {len(queries)} "
          f"queries, {len(paths)} distinct images, {args.variant} at {sizes}")
    d = describe(paths, args.variant, sizes)
    score = Scorer([pid for pid, _ in gallery_paths], queries)

    def run(x: F32, q: F32 | None = None) -> tuple[float, float, float, float]:
        return score(x[g_rows], (x if q is None else q)[q_rows])

    base_key, s0 = f"gap@{sizes[0]}", sizes[0]
    base, colour = d[base_key], d["colour"]
    print(f"{'lever':<52} {'R@1':>6} {'R@5':>6} {'R@10':>6} {'mAP@R':>6}")
    _row(f"baseline: average pooling, {s0}px", run(base))
    levers: dict[str, Callable[[], F32]] = {
        "GeM (p=3)": lambda: d[f"gem@{s0}"],
        "max pooling": lambda: d[f"mac@{s0}"],
        "foreground average": lambda: d[f"fgap@{s0}"],
        "flip TTA (plain + mirrored)": lambda: l2_normalise(base) + l2_normalise(d[f"gap@{s0}f"]),
        "stage-5 (stride 16) foreground average": lambda: d[f"s5@{s0}"],
    }
    if len(sizes) > 1:
        levers[f"two scales ({s0} + {sizes[1]})"] = (
            lambda: l2_normalise(base) + l2_normalise(d[f"gap@{sizes[1]}"]))
    for name, make in levers.items():
        _row(name, run(make()))
    for dim in (64, 128, 256, 512):
        for shrink in (0.1, 1.0):
            if dim < len(g_rows):
                _row(f"PCA-whitening on the gallery, {dim} dims, shrink {shrink}",
                     run(pca_whiten(base, g_rows, dim, shrink)))
    for weight in (0.3, 0.5, 0.7):
        _row(f"+ colour, weight {weight}", run(mix(base, colour, weight)))
    mixed = mix(base, colour, 0.5)
    for k in (1, 2, 3):
        _row(f"colour 0.5 + alpha-QE top {k}",
             score(mixed[g_rows], alpha_qe(mixed[g_rows], mixed[q_rows], k)))
    for k in (2, 3):
        _row(f"colour 0.5 + DBA top {k}", score(dba(mixed[g_rows], k), mixed[q_rows]))
    if args.head_split:
        _head_split(args.gallery, products, queries, paths, d, s0, sizes)
    return 0


def _head_split(gallery_file: Path, products: list[GalleryProduct], queries: list[Query],
                paths: list[Path], d: dict[str, F32], s0: int, sizes: list[int]) -> None:
    group_of = {}
    for line in gallery_file.read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            group_of[row["product_id"]] = row.get("group_id") or row["product_id"]
    groups = sorted(set(group_of.values()))
    np.random.default_rng(0).shuffle(groups)
    train_groups = set(groups[: len(groups) // 2])
    row_of = {path: i for i, path in enumerate(paths)}
    trained = {prod.product_id for prod in products if group_of[prod.product_id] in train_groups}
    # training images: the gallery and query views of the training products (never a test one)
    images: list[tuple[str, Path]] = [(prod.product_id, path) for prod in products
                                      if prod.product_id in trained for path in prod.images]
    images += [(next(iter(q.relevant)), q.image) for q in queries
               if len(q.relevant) == 1 and next(iter(q.relevant)) in trained]
    label_of = {pid: i for i, pid in enumerate(sorted({pid for pid, _ in images}))}
    views = [f"gap@{s0}", f"gap@{s0}f"] + [f"gap@{s}{m}" for s in sizes[1:] for m in ("", "f")]
    x = np.concatenate([l2_normalise(d[v])[[row_of[p] for _, p in images]] for v in views])
    y = np.tile(np.array([label_of[pid] for pid, _ in images]), len(views))
    test_products = [prod for prod in products if prod.product_id not in trained]
    test_gallery = [(prod.product_id, path) for prod in test_products for path in prod.images]
    test_queries = [q for q in queries if not (set(q.relevant) & trained)]
    score = Scorer([pid for pid, _ in test_gallery], test_queries)
    g_rows = [row_of[p] for _, p in test_gallery]
    q_rows = [row_of[q.image] for q in test_queries]
    print(f"head split: train on {len(train_groups)} groups ({len(label_of)} products, "
          f"{len(x)} augmented images); test on {len(test_products)} products, "
          f"{len(test_queries)} queries")
    base, colour = d[f"gap@{s0}"], d["colour"]
    head = train_head(x, y)
    for name, cnn in (("no head", base), ("trained head", base @ head)):
        _row(f"split, {name}", score(cnn[g_rows], cnn[q_rows]))
        both = mix(cnn, colour, 0.5)
        _row(f"split, {name} + colour 0.5", score(both[g_rows], both[q_rows]))


if __name__ == "__main__":
    sys.exit(main())
