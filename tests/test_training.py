"""``lookalike train`` on fakes: split, augmentation, losses and a tiny training run.

The fake backbone stands in for EfficientNet: its "bottom" averages 8x8 pixel cells and its
top is a 1x1 conv and average pooling, so a run takes seconds. The real network is trained in
tests/test_training_luma.py.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from numpy.typing import NDArray
from PIL import Image, ImageDraw

from embedding.preprocess import SquareMode
from training.augment import AugmentConfig, display, views, work_image
from training.data import TrainingDataError, load_training_images, split
from training.trainer import TrainOptions, train, tune_options

SIZE = 32


class FakeBackbone:
    image_size = SIZE
    square = SquareMode.PAD

    def __init__(self) -> None:
        import keras

        keras.utils.set_random_seed(0)
        fmap = keras.Input(shape=(4, 4, 3))
        x = keras.layers.Conv2D(16, 1, name="mix")(fmap)
        x = keras.layers.BatchNormalization(name="mix_bn")(x)
        self._top = keras.Model(fmap, keras.layers.GlobalAveragePooling2D()(x))
        self.saved: list[Path] = []

    def features(self, batch: NDArray[np.uint8]) -> NDArray[np.float16]:
        cells = batch.reshape(len(batch), 4, 8, 4, 8, 3).mean(axis=(2, 4)) / 255.0
        return cells.astype(np.float16)

    def top(self) -> Any:
        return self._top

    def save(self, directory: Path, top: Any, colour_weight: float,
             report: dict[str, Any]) -> str:
        directory.mkdir(parents=True, exist_ok=True)
        top.save_weights(str(directory / "top.weights.h5"))
        (directory / "report.json").write_text(json.dumps(report))
        self.saved.append(directory)
        return "fake-v1"


class FakeProjectionBackbone(FakeBackbone):
    """The default cut: the frozen "network" gives pooled vectors and the projection of
    ``embedding.efficientnet_lite.add_projection`` is what trains. The vectors are the shape
    (8x8 cells of ink) and, louder, the mean colour of the ink: before training a product's
    nearest other product is whatever has its colour, so finding its style (the other
    colours of its shape) is something the projection has to learn."""

    def __init__(self) -> None:
        import keras

        from embedding.efficientnet_lite import add_projection

        super().__init__()
        pooled = keras.Input(shape=(67,))
        self._top = keras.Model(pooled, add_projection(pooled))

    def features(self, batch: NDArray[np.uint8]) -> NDArray[np.float16]:
        ink = 1.0 - batch.astype(np.float32) / 255.0
        shape = ink.mean(axis=3).reshape(len(batch), 8, 4, 8, 4).mean(axis=(2, 4))
        colour = ink.reshape(len(batch), -1, 3).mean(axis=1)
        return np.hstack([shape.reshape(len(batch), -1), 12.0 * colour]).astype(np.float16)


def _catalog(tmp_path: Path, n_styles: int = 6, colours: int = 2) -> Path:
    """Styles are shapes (a square, a disc, ...at a size), variants are their colours."""
    rng = np.random.default_rng(1)
    lines = []
    for s in range(n_styles):
        for c in range(colours):
            colour = tuple(int(v) for v in rng.integers(0, 200, 3))
            paths = []
            for view in range(2):
                image = Image.new("RGB", (64, 48 + 8 * view), (255, 255, 255))
                box = (8 + 2 * s, 8, 40 + 3 * s, 40)
                draw = ImageDraw.Draw(image)
                (draw.ellipse if s % 2 else draw.rectangle)(box, fill=colour)
                path = tmp_path / f"s{s}c{c}v{view}.png"
                image.save(path)
                paths.append(path.name)
            lines.append({"product_id": f"s{s}-c{c}", "group_id": f"s{s}", "title": "t",
                          "category": f"Cat/{s % 3}", "price": 1.0, "currency": "EUR",
                          "images": paths})
    catalog = tmp_path / "catalog.jsonl"
    catalog.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    return catalog


def test_labels_come_from_the_catalog(tmp_path: Path) -> None:
    catalog = _catalog(tmp_path)
    plain = load_training_images(catalog, None)
    assert len(plain) == 24 and {im.group for im in plain} == {im.product_id for im in plain}
    by_style = load_training_images(catalog, "group_id")
    assert {im.group for im in by_style} == {f"s{s}" for s in range(6)}
    assert {im.group for im in load_training_images(catalog, "category")} == {
        "Cat/0", "Cat/1", "Cat/2"}
    with pytest.raises(TrainingDataError, match="no product has 'colour'"):
        load_training_images(catalog, "colour")


@pytest.mark.parametrize("by_group", [False, True])
def test_split_is_disjoint_and_seeded(tmp_path: Path, by_group: bool) -> None:
    images = load_training_images(_catalog(tmp_path), "group_id")
    parts = split(images, 0.3, seed=3, by_group=by_group)
    key = "group" if by_group else "product_id"
    train_units = {getattr(im, key) for im in parts.train}
    val_units = {getattr(im, key) for im in parts.val}
    assert train_units and val_units and not train_units & val_units
    assert len(parts.train) + len(parts.val) == len(images)
    assert split(images, 0.3, seed=3, by_group=by_group) == parts
    assert split(images, 0.3, seed=4, by_group=by_group) != parts


def test_views_are_seeded_and_altered(tmp_path: Path) -> None:
    catalog = _catalog(tmp_path)
    photos = [work_image(Image.open(im.path)) for im in load_training_images(catalog, None)]
    config = AugmentConfig(views=4, colour_jitter=0.5)
    a = views(photos[0], photos[1:4], (0, 0), config, SIZE, SquareMode.PAD)
    b = views(photos[0], photos[1:4], (0, 0), config, SIZE, SquareMode.PAD)
    c = views(photos[0], photos[1:4], (1, 0), config, SIZE, SquareMode.PAD)
    assert a.shape == (5, SIZE, SIZE, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b) and not np.array_equal(a[1:], c[1:])
    assert np.array_equal(a[0], c[0])  # the clean view is the model input itself
    assert all(not np.array_equal(a[0], a[v]) for v in range(1, 5))


def test_the_last_views_show_the_product_on_display(tmp_path: Path) -> None:
    """``display_views`` turns the last altered views (never the first) into displays; the
    others stay as they were."""
    catalog = _catalog(tmp_path)
    photos = [work_image(Image.open(im.path)) for im in load_training_images(catalog, None)]
    plain = views(photos[0], photos[1:4], (0, 0), AugmentConfig(views=4, display_views=0),
                  SIZE, SquareMode.PAD)
    shown = views(photos[0], photos[1:4], (0, 0), AugmentConfig(views=4, display_views=1),
                  SIZE, SquareMode.PAD)
    assert np.array_equal(plain[:4], shown[:4])
    assert not np.array_equal(plain[4], shown[4])
    one = [views(photos[0], photos[1:4], (0, 0), AugmentConfig(views=1, display_views=d),
                 SIZE, SquareMode.PAD) for d in (0, 1)]
    assert np.array_equal(*one)  # never the first altered view


def test_a_display_shows_several_copies() -> None:
    """Rows or a heap: the red disc of the catalog photo is there several times."""
    photo = Image.new("RGB", (200, 200), (255, 255, 255))
    ImageDraw.Draw(photo).ellipse((50, 50, 150, 150), fill=(220, 20, 20))
    others = [Image.new("RGB", (120, 90), (g, g, g)) for g in (90, 140, 200)]
    counts = []
    for seed in range(12):
        rgb = np.asarray(display(photo, others, np.random.default_rng(seed))).astype(np.int16)
        red = ((rgb[..., 0] - rgb[..., 1] > 60) & (rgb[..., 0] - rgb[..., 2] > 60))
        _, _, stats, _ = cv2.connectedComponentsWithStats(red.astype(np.uint8))
        counts.append(int((stats[1:, cv2.CC_STAT_AREA] > 40).sum()))
    assert min(counts) >= 2 and np.median(counts) >= 4, counts


def test_batch_hard_triplet_matches_numpy() -> None:
    from keras import ops

    from training.losses import TRIPLET_MARGIN, batch_hard_triplet

    rng = np.random.default_rng(0)
    e = rng.normal(size=(8, 5)).astype(np.float32)
    labels = np.array([0, 0, 1, 1, 2, 2, 3, 4], np.int32)  # 3 and 4: no positive
    u = e / np.linalg.norm(e, axis=1, keepdims=True)
    sim = u @ u.T
    expected = []
    for i in range(6):
        pos = [sim[i, j] for j in range(8) if labels[j] == labels[i] and j != i]
        neg = [sim[i, j] for j in range(8) if labels[j] != labels[i]]
        expected.append(max(0.0, max(neg) - min(pos) + TRIPLET_MARGIN))
    got = float(ops.convert_to_numpy(batch_hard_triplet(labels, e)))
    assert got == pytest.approx(np.mean(expected), abs=1e-5)


@pytest.mark.parametrize(("loss", "colour_in_loss"),
                         [("proxy", True), ("triplet", True), ("triplet", False)])
def test_tiny_training_run(tmp_path: Path, loss: str, colour_in_loss: bool) -> None:
    catalog = _catalog(tmp_path)
    options = TrainOptions(group_key="group_id", epochs=3, seed=5, loss=loss,  # type: ignore[arg-type]
                           views=2, val_fraction=0.34, labels_per_batch=4, samples_per_label=2,
                           colour_in_loss=colour_in_loss, val_by_group=True)
    backbone = FakeBackbone()
    result = train(catalog, tmp_path / "model", backbone, options)
    report = json.loads((tmp_path / "model" / "report.json").read_text())
    assert result.model_version == "fake-v1" and backbone.saved == [tmp_path / "model"]
    assert report["validation"]["groups"] == 2 and report["train"]["groups"] == 4
    assert len(report["history"]) == 3 and all(np.isfinite(h["loss"]) for h in report["history"])
    # the kept epoch is the best one on validation, the untrained top included
    for task in ("item", "group_similar"):
        assert result.after[task]["R@1"] >= result.before[task]["R@1"]
    assert report["seconds"]["total"] > 0 and report["views_per_s"] > 0

    again = train(catalog, tmp_path / "again", FakeBackbone(), options)
    assert again.report["history"] == report["history"]  # a seed reproduces a run


def test_supervised_contrastive_matches_numpy() -> None:
    from keras import ops

    from training.losses import SUPCON_TEMPERATURE, supervised_contrastive

    rng = np.random.default_rng(1)
    e = rng.normal(size=(7, 4)).astype(np.float32)
    labels = np.array([0, 0, 0, 1, 1, 2, 3], np.int32)  # 2 and 3: no positive
    u = e / np.linalg.norm(e, axis=1, keepdims=True)
    logits = u @ u.T / SUPCON_TEMPERATURE
    expected = []
    for i in range(5):
        others = [j for j in range(7) if j != i]
        log_z = np.log(np.sum(np.exp(logits[i, others])))
        expected.append(-np.mean([logits[i, j] - log_z for j in others
                                  if labels[j] == labels[i]]))
    got = float(ops.convert_to_numpy(supervised_contrastive(labels, e)))
    assert got == pytest.approx(np.mean(expected), rel=1e-4)


def test_projection_learns_its_training_groups(tmp_path: Path) -> None:
    """The default cut on the fakes: the projection starts as the identity (so "before" is the
    frozen features), the loss falls, and the training photos find their style (similar) and
    their own product among altered views (exact) clearly better. Without display views: on
    8x8-pixel cells a display of many copies is another picture altogether (its fit reads 0.8)."""
    catalog = _catalog(tmp_path, n_styles=8)
    options = TrainOptions(group_key="group_id", epochs=12, seed=2, loss="supcon", views=2,
                           display_views=0,
                           val_fraction=0.25, labels_per_batch=6, samples_per_label=4,
                           learning_rate=1e-2, steps_per_epoch=10, keep_best=False)
    result = train(catalog, tmp_path / "model", FakeProjectionBackbone(), options)
    losses = [h["loss"] for h in result.report["history"]]
    assert losses[-1] < 0.7 * losses[0]
    fit = result.report["training_photos"]
    assert fit["before"]["group_similar"]["R@1"] <= 0.5  # colour misleads the frozen vectors
    assert fit["last_epoch"]["group_similar"]["R@1"] >= 0.9
    assert fit["last_epoch"]["item"]["R@1"] >= fit["before"]["item"]["R@1"] + 0.2


def test_validation_is_by_product_unless_asked(tmp_path: Path) -> None:
    """By default a held-out product's style may keep its other colours in training (a new
    colour of a known style), and the group task finds them there; ``val_by_group`` holds
    whole styles out."""
    catalog = _catalog(tmp_path, n_styles=8)
    images = load_training_images(catalog, "group_id")
    # a seed whose product split leaves some held-out product's other colour in training
    seed = next(s for s in range(20)
                if (parts := split(images, 0.25, s, by_group=False))
                and {im.group for im in parts.val} & {im.group for im in parts.train})
    base = TrainOptions(group_key="group_id", epochs=1, views=1, val_fraction=0.25, seed=seed,
                        labels_per_batch=4, samples_per_label=2)
    by_product = train(catalog, tmp_path / "a", FakeProjectionBackbone(), base).report
    # every held-out photo has its style's other colour to find: 4 products x 2 photos
    assert by_product["before"]["group_similar"]["queries"] == 8
    assert by_product["validation"]["groups"] + by_product["train"]["groups"] > 8
    by_group = train(catalog, tmp_path / "b", FakeProjectionBackbone(),
                     TrainOptions(**{**base.__dict__, "val_by_group": True})).report
    assert by_group["validation"]["groups"] + by_group["train"]["groups"] == 8


def test_single_photo_products_without_groups_are_not_trained(tmp_path: Path) -> None:
    """One photo per product and no group key: only altered copies would be positives, so the
    untrained map is kept, and the report says why."""
    catalog = _catalog(tmp_path, n_styles=4)
    lines = [json.loads(line) for line in catalog.read_text().splitlines()]
    catalog.write_text("".join(json.dumps(dict(r, images=r["images"][:1])) + "\n"
                               for r in lines))
    options = TrainOptions(epochs=2, views=1, labels_per_batch=4, samples_per_label=2)
    backbone = FakeProjectionBackbone()
    result = train(catalog, tmp_path / "model", backbone, options)
    assert result.best_epoch == 0 and result.report["history"] == []
    assert "one photo" in result.report["not_trained"]
    assert not np.any(backbone.top().get_layer("projection").get_weights()[0])
    grouped = train(catalog, tmp_path / "g", FakeProjectionBackbone(),
                    TrainOptions(**{**options.__dict__, "group_key": "group_id"}))
    assert grouped.report["not_trained"] is None and len(grouped.report["history"]) == 2


def _train_cli(*args: str, timeout: float = 120) -> Any:
    """``python -m lookalike train ARGS`` in a process of its own, as a user runs it."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    return subprocess.run([sys.executable, "-m", "lookalike", "train", *args], env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_cli_reports_a_missing_catalog(tmp_path: Path) -> None:
    done = _train_cli("--catalog", str(tmp_path / "nope.jsonl"), "--out", str(tmp_path / "model"))
    assert done.returncode == 2 and "no such catalog file" in done.stderr


def test_cli_refuses_an_out_it_cannot_write_before_any_work(tmp_path: Path) -> None:
    """``--out`` is created first: a path under a file (or a folder it may not write) fails in
    one line, exit 2, before the model is built, not after the training."""
    catalog = _catalog(tmp_path, n_styles=4)
    (tmp_path / "a-file").write_text("not a folder")
    done = _train_cli("--catalog", str(catalog), "--out", str(tmp_path / "a-file" / "model"))
    assert done.returncode == 2, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("lookalike train: error: cannot create --out")
    assert "Traceback" not in done.stderr
    assert "views" not in done.stderr  # refused before any view was cached
    # a catalog it cannot train on leaves no empty folder behind
    done = _train_cli("--catalog", str(tmp_path / "a-file"), "--out", str(tmp_path / "model"),
                      timeout=300)
    assert done.returncode == 2, done.stderr
    assert not (tmp_path / "model").exists()


def test_cli_names_the_images_it_could_not_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """A corrupt photo in the catalog is left out of the training, not raised, and the command
    says so in its output as well as in the report: it must not vanish silently."""
    import training.backbone
    from lookalike.cli import build_parser
    from lookalike.commands_train import train as train_command
    from lookalike.settings import Settings

    catalog = _catalog(tmp_path, n_styles=4)
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 not a photo")
    extra = {"product_id": "BROKEN-1", "group_id": "G9", "title": "Broken",
             "category": "Shapes/Broken", "price": 1.0, "currency": "USD",
             "images": ["broken.jpg"]}
    catalog.write_text(catalog.read_text() + json.dumps(extra) + "\n")
    monkeypatch.setattr(training.backbone, "ProjectionBackbone",
                        lambda *args: FakeProjectionBackbone())
    args = build_parser().parse_args(
        ["train", "--catalog", str(catalog), "--out", str(tmp_path / "model"),
         "--group-key", "group_id", "--epochs", "1", "--views", "1"])
    assert train_command(Settings(), args) == 0
    out = capsys.readouterr().out
    assert "skipped 1 image(s) that could not be read" in out and "broken.jpg" in out
    report = json.loads((tmp_path / "model" / "report.json").read_text())
    assert [Path(s["image"]).name for s in report["skipped"]] == ["broken.jpg"]


def test_the_projection_trains_with_triplet_by_default_and_proxy_at_its_own_rate() -> None:
    """The projection's default is the batch-hard triplet loss at 1e-4: the proxy loss at 1e-3
    (the earlier default) lowered exact recall on other photos of trained products with a group
    key (luma-views R@1 0.63 -> 0.55, docs/training.md). ``--loss proxy`` keeps the learning
    rate measured for it; a loss without one keeps the tune's."""
    assert tune_options("projection", None) == {"loss": "triplet", "learning_rate": 1e-4,
                                                "epochs": 20, "spread_weight": 10.0,
                                                "keep_best": False}
    assert tune_options("projection", "triplet") == tune_options("projection", None)
    assert tune_options("projection", "proxy") == {"loss": "proxy", "learning_rate": 1e-3,
                                                   "epochs": 20, "spread_weight": 0.0,
                                                   "keep_best": True}
    assert tune_options("projection", "supcon") == {"loss": "supcon", "learning_rate": 1e-4,
                                                    "epochs": 20, "spread_weight": 10.0,
                                                    "keep_best": False}
    assert tune_options("blocks", "proxy") == {"loss": "proxy", "learning_rate": 1e-4,
                                               "epochs": 8}


def test_keep_last_or_best(tmp_path: Path) -> None:
    """``keep_best`` off (the projection's default) writes the last epoch, whatever the
    validation; on (``--keep best``) the best epoch on validation, never below the untrained
    model."""
    catalog = _catalog(tmp_path, n_styles=8)
    common = {"group_key": "group_id", "views": 2, "val_fraction": 0.25, "seed": 2,
              "labels_per_batch": 6, "samples_per_label": 4, "steps_per_epoch": 5, "epochs": 3}
    last = train(catalog, tmp_path / "last", FakeProjectionBackbone(),
                 TrainOptions(**{**tune_options("projection", None), **common,
                                 "keep_best": False}))
    assert last.best_epoch == 3 and last.after == last.report["history"][-1]["val"]
    best = train(catalog, tmp_path / "best", FakeProjectionBackbone(),
                 TrainOptions(**{**tune_options("projection", None), **common,
                                 "keep_best": True}))
    kept = best.report["history"][best.best_epoch - 1]["val"] if best.best_epoch else best.before
    assert best.after == kept
    for task in ("item", "group_similar"):
        assert best.after[task]["R@1"] >= best.before[task]["R@1"]


def test_keep_on_the_command_line() -> None:
    """``--keep`` and ``--spread`` override the tune's defaults: the projection writes its last
    epoch with the spread held, the blocks their best epoch without it."""
    from lookalike.cli import build_parser
    from lookalike.commands_train import train_options
    from lookalike.errors import UserError
    from lookalike.settings import Settings

    def options(*extra: str) -> TrainOptions:
        args = build_parser().parse_args(["train", "--catalog", "c.jsonl", "--out", "m", *extra])
        return train_options(Settings(), args)

    assert (options().keep_best, options().spread_weight) == (False, 10.0)
    assert (options("--tune", "blocks").keep_best,
            options("--tune", "blocks").spread_weight) == (True, 0.0)
    assert options("--keep", "best").keep_best is True
    assert options("--tune", "blocks", "--keep", "last").keep_best is False
    assert options("--spread", "0").spread_weight == 0.0
    proxy = options("--loss", "proxy")  # as measured: its own rate, no penalty, best epoch
    assert (proxy.learning_rate, proxy.spread_weight, proxy.keep_best) == (1e-3, 0.0, True)
    assert options("--loss", "proxy", "--spread", "5", "--keep", "last").spread_weight == 5.0
    for bad in ("-1", "nan", "inf"):
        with pytest.raises(UserError, match="--spread >= 0"):
            options("--spread", bad)


def test_a_photo_over_the_byte_limit_is_skipped_unread(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """train read a photo of any size whole (a 3 GB sparse file: 2.5 GB of memory in 8 s),
    where eval and search refuse it: it is skipped, unread, with their reason."""
    from concurrent.futures import ThreadPoolExecutor

    from lookalike.cli import build_parser
    from lookalike.commands_train import train_options
    from lookalike.settings import Settings
    from training.data import TrainImage
    from training.features import decode_all

    huge = tmp_path / "huge.jpg"
    with huge.open("wb") as fh:
        fh.truncate(64 << 20)  # sparse: costs no disk
    small = tmp_path / "small.png"
    Image.new("RGB", (40, 40), (200, 10, 10)).save(small)
    images = [TrainImage("a", "a", huge), TrainImage("b", "b", small)]
    with ThreadPoolExecutor(1) as pool:
        kept, _, skipped = decode_all(images, 10**7, pool, 1 << 20)
    assert kept == [images[1]]
    assert skipped == [(images[0], f"{64 << 20} bytes > limit {1 << 20} "
                                   "(LOOKALIKE_IMAGES__MAX_BYTES)")]
    monkeypatch.setenv("LOOKALIKE_IMAGES__MAX_BYTES", "12345")  # the command passes the setting
    args = build_parser().parse_args(["train", "--catalog", "c.jsonl", "--out", "m"])
    assert train_options(Settings(), args).max_bytes == 12345


def test_mean_pair_cosine_matches_numpy() -> None:
    from keras import ops

    from training.losses import mean_pair_cosine
    from training.trainer import _mean_pair_cosine

    rng = np.random.default_rng(3)
    x = rng.normal(size=(12, 7)).astype(np.float32) + 0.5
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    expected = np.mean([u[i] @ u[j] for i in range(12) for j in range(12) if i != j])
    got = float(ops.convert_to_numpy(mean_pair_cosine(ops.convert_to_tensor(x))))
    assert got == pytest.approx(expected, abs=1e-5)
    assert _mean_pair_cosine(x) == pytest.approx(expected, abs=1e-5)


def test_the_spread_penalty_holds_the_spread(tmp_path: Path) -> None:
    """Trained hard on the fakes, the projection pulls the vectors together; with the spread
    penalty their mean cosine stays near the untrained one (what the report records)."""
    catalog = _catalog(tmp_path, n_styles=8)
    base = {"group_key": "group_id", "epochs": 8, "seed": 2, "loss": "supcon", "views": 2,
            "val_fraction": 0.25, "labels_per_batch": 6, "samples_per_label": 4,
            "learning_rate": 1e-2, "steps_per_epoch": 10, "keep_best": False}
    free = train(catalog, tmp_path / "free", FakeProjectionBackbone(),
                 TrainOptions(**base)).report["mean_pair_cosine"]
    held = train(catalog, tmp_path / "held", FakeProjectionBackbone(),
                 TrainOptions(**base, spread_weight=10.0)).report["mean_pair_cosine"]
    assert free["before"] == held["before"]
    assert abs(held["after"] - held["before"]) < 0.5 * abs(free["after"] - free["before"])


def _rewrite(catalog: Path, change: Any) -> None:
    """Apply ``change(index, line)`` to every catalog line (a dict, changed in place)."""
    lines = [json.loads(line) for line in catalog.read_text().splitlines()]
    for i, line in enumerate(lines):
        change(i, line)
    catalog.write_text("".join(json.dumps(line) + "\n" for line in lines))


@pytest.mark.parametrize(("value", "shown"), [([0], "[0]"), ({"a": 1}, '{"a": 1}'),
                                              (True, "true"), (float("nan"), None)])
def test_a_group_value_that_is_no_string_or_number_is_refused(
    tmp_path: Path, value: Any, shown: str | None
) -> None:
    """``str()`` made a list into the group "[0]"; the product and its line are named. A
    NaN is no JSON: the line is refused as ingest refuses such an event."""
    catalog = _catalog(tmp_path, n_styles=4)
    _rewrite(catalog, lambda i, line: line.update(style=value if i == 2 else "s"))
    with pytest.raises(TrainingDataError) as refused:
        load_training_images(catalog, "style")
    if shown is None:
        assert str(refused.value) == f"{catalog}:3: invalid JSON: NaN is not valid JSON"
        return
    assert str(refused.value) == (f"{catalog}:3: product 's1-c0': style must be a string "
                                  f"or a number to group by, got {shown}")
    with pytest.raises(TrainingDataError, match=r":1: product 's0-c0': images must be"):
        load_training_images(catalog, "images")  # a list of photo objects


def test_numbers_group_by_their_value(tmp_path: Path) -> None:
    """1, 1.0 and "1" are one group; 1.5 is another."""
    catalog = _catalog(tmp_path, n_styles=4)
    values = [1, 1.0, "1", 1.5, 2, 2.0, 1.5, 10**20]
    _rewrite(catalog, lambda i, line: line.update(style=values[i]))
    groups = {im.product_id: im.group for im in load_training_images(catalog, "style")}
    assert [groups[p] for p in ("s0-c0", "s0-c1", "s1-c0", "s1-c1", "s2-c0", "s2-c1",
                                "s3-c0", "s3-c1")] == ["1", "1", "1", "1.5", "2", "2", "1.5",
                                                       "100000000000000000000"]


def test_train_reads_local_photos_only(tmp_path: Path) -> None:
    """A URL became the path ``<catalog folder>/http:/127.0.0.1:9/x.jpg`` ("not found")."""
    catalog = _catalog(tmp_path, n_styles=4)
    _rewrite(catalog, lambda i, line: line.update(images=["http://127.0.0.1:9/x.jpg"])
             if i == 1 else None)
    with pytest.raises(TrainingDataError) as refused:
        load_training_images(catalog, None)
    assert str(refused.value) == (f"{catalog}:2: image 'http://127.0.0.1:9/x.jpg' is a URL; "
                                  "this command reads local files only (download the photos "
                                  "and list their paths)")
    _rewrite(catalog, lambda i, line: line.update(images=[{"url": "https://x.test/a.jpg"}])
             if i == 1 else None)
    with pytest.raises(TrainingDataError, match=r":2: image 'https://x\.test/a\.jpg' is a URL"):
        load_training_images(catalog, None)


def test_the_minimum_counts_products_with_a_readable_photo(tmp_path: Path) -> None:
    """9 of 12 products with only a corrupt photo: the split was made before decoding, so
    the run trained and validated on 3 products (or found no photo to validate on)."""
    catalog = _catalog(tmp_path)
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 not a photo")
    _rewrite(catalog, lambda i, line: line.update(images=["broken.jpg"]) if i >= 3 else None)
    options = TrainOptions(epochs=1, views=1, labels_per_batch=4, samples_per_label=2)
    with pytest.raises(TrainingDataError) as refused:
        train(catalog, tmp_path / "model", FakeProjectionBackbone(), options)
    message = str(refused.value)
    assert message.startswith("need at least 4 products to train and validate, found 3 with "
                              "a readable photo: 9 other products had only photos that could "
                              f"not be read ({tmp_path / 'broken.jpg'}: ")
    assert message.endswith(" ...)")
    grouped = TrainOptions(**{**options.__dict__, "group_key": "group_id", "val_by_group": True})
    with pytest.raises(TrainingDataError, match="found 2 with a readable photo: 4 other groups"):
        train(catalog, tmp_path / "model", FakeProjectionBackbone(), grouped)
    assert not (tmp_path / "model").exists()


def test_an_earlier_model_directory_may_be_written_over(tmp_path: Path) -> None:
    """``--out``: a new or empty folder, or one holding only what train writes (with a trained
    model's config.json); anything else is refused and left as it was."""
    from embedding.trained import CONFIG_FILE, MODEL_FILES
    from lookalike.commands_train import _model_directory
    from lookalike.errors import UserError

    assert _model_directory(tmp_path / "a" / "b") == [tmp_path / "a" / "b", tmp_path / "a"]
    assert _model_directory(tmp_path / "a" / "b") == []  # empty: written into
    model = tmp_path / "a" / "b"
    config = {"variant": "lite0", "square": "pad", "first_block": 16, "format": 1,
              "projection": True, "content_sha256": "0" * 64}
    (model / CONFIG_FILE).write_text(json.dumps(config))
    for name in MODEL_FILES[1:]:
        (model / name).write_bytes(b"x")
    assert _model_directory(model) == []
    (model / ".notes").write_text("mine")
    with pytest.raises(UserError, match=r"earlier model directory \(nothing but config.json, "
                       r"top.weights.h5, report.json\); .* holds .notes$"):
        _model_directory(model)
    assert sorted(p.name for p in model.iterdir()) == [".notes", *sorted(MODEL_FILES)]


def test_a_mount_point_is_refused_as_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                        ) -> None:
    """The new model is renamed into place, which a mount point refuses (EBUSY): said before
    any work, not after the training."""
    import os

    from lookalike.commands_train import _model_directory
    from lookalike.errors import UserError

    mounted = tmp_path / "volume"
    mounted.mkdir()
    monkeypatch.setattr(os.path, "ismount", lambda path: Path(path) == mounted)
    with pytest.raises(UserError, match=r"is a mount point: .* give a folder inside it"):
        _model_directory(mounted)
    assert _model_directory(mounted / "model") == [mounted / "model"]


def test_a_failed_run_removes_only_the_folders_it_created(tmp_path: Path) -> None:
    from lookalike.commands_train import (
        _make_staging,
        _model_directory,
        _remove_created,
        _staging,
    )

    out = tmp_path / "new" / "model"
    created = _model_directory(out)
    staging = _staging(out)
    assert staging.parent == out.parent and staging.name.startswith(".model.train-")
    _make_staging(staging, out)
    (staging / "report.json").write_text("{}")  # written before the stop
    _remove_created(staging, created)
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "mine").mkdir()
    created = _model_directory(tmp_path / "mine")
    staging = _staging(tmp_path / "mine")
    _make_staging(staging, tmp_path / "mine")
    _remove_created(staging, created)
    assert [p.name for p in tmp_path.iterdir()] == ["mine"]  # it existed before


class _SavesThenFails(FakeProjectionBackbone):
    """Writes its weights, then fails before its report: a run stopped (or a disk that
    filled up) between two of the model's files."""

    def __init__(self, failure: BaseException) -> None:
        super().__init__()
        self.failure = failure

    def save(self, directory: Path, top: Any, colour_weight: float,
             report: dict[str, Any]) -> str:
        top.save_weights(str(directory / "top.weights.h5"))
        raise self.failure


@pytest.mark.parametrize("failure", ["SIGINT", "disk full"])
def test_an_earlier_model_is_replaced_whole_or_not_at_all(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failure: str
) -> None:
    """``--out`` over an earlier model directory: the new files replaced the old ones one by
    one, so a run stopped or failing while it wrote them left the new weights beside the old
    config.json. The new model is now written into a folder next to ``--out`` and swapped in
    once complete: a run that fails leaves the old model as it was, and no folder of its own;
    one that finishes leaves the new model alone (none of the old files)."""
    import errno

    import training.backbone
    from embedding.trained import CONFIG_FILE, MODEL_FILES
    from lookalike.cli import build_parser
    from lookalike.commands_train import _Stopped
    from lookalike.commands_train import train as train_command
    from lookalike.errors import UserError
    from lookalike.settings import Settings

    catalog = _catalog(tmp_path, n_styles=4)
    out = tmp_path / "model"
    out.mkdir()
    config = {"variant": "lite0", "square": "pad", "first_block": 16, "format": 1,
              "projection": True, "content_sha256": "0" * 64}
    old = {CONFIG_FILE: json.dumps(config).encode(), "top.weights.h5": b"old weights",
           "report.json": b"{}"}
    assert sorted(old) == sorted(MODEL_FILES)
    for name, data in old.items():
        (out / name).write_bytes(data)
    before = sorted(p.name for p in tmp_path.iterdir())
    args = build_parser().parse_args(
        ["train", "--catalog", str(catalog), "--out", str(out), "--group-key", "group_id",
         "--epochs", "1", "--views", "1"])
    stop = (_Stopped(signal.SIGINT) if failure == "SIGINT"
            else OSError(errno.ENOSPC, "No space left on device"))
    monkeypatch.setattr(training.backbone, "ProjectionBackbone",
                        lambda *args: _SavesThenFails(stop))
    with pytest.raises(UserError if failure == "SIGINT" else OSError):
        train_command(Settings(), args)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == old
    assert sorted(p.name for p in tmp_path.iterdir()) == before

    monkeypatch.setattr(training.backbone, "ProjectionBackbone",
                        lambda *args: FakeProjectionBackbone())
    assert train_command(Settings(), args) == 0
    assert sorted(p.name for p in out.iterdir()) == ["report.json", "top.weights.h5"]
    assert (out / "top.weights.h5").read_bytes() != old["top.weights.h5"]
    assert sorted(p.name for p in tmp_path.iterdir()) == before


STOPPABLE = """
import sys
import training.backbone
from tests.test_training import FakeProjectionBackbone
training.backbone.ProjectionBackbone = lambda *args: FakeProjectionBackbone()
from lookalike.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_stopped_run_ends_in_one_line_and_removes_its_folder(
    tmp_path: Path, sig: signal.Signals
) -> None:
    """Ctrl-C printed a KeyboardInterrupt traceback, SIGTERM ended the process at once; both
    left the empty --out folder. Now: one line, 128 + the signal, the folders it created gone
    (a folder that existed before stays). The fake backbone trains for ever from the start."""
    import os
    import subprocess
    import sys
    import time

    catalog = _catalog(tmp_path, n_styles=4)
    existing = tmp_path / "existing"
    existing.mkdir()
    out = tmp_path / "new" / "model" if sig == signal.SIGINT else existing
    log = tmp_path / "stderr.txt"
    repo = Path(__file__).resolve().parent.parent
    with open(log, "w") as err:
        child = subprocess.Popen(
            [sys.executable, "-c", STOPPABLE, "train", "--catalog", str(catalog),
             "--out", str(out), "--epochs", "1000000", "--views", "1"],
            cwd=repo, env={**os.environ, "PYTHONPATH": str(repo)}, stdout=subprocess.DEVNULL,
            stderr=err)
    try:
        deadline = time.monotonic() + 120
        while "train:" not in log.read_text() and time.monotonic() < deadline:
            assert child.poll() is None, log.read_text()
            time.sleep(0.1)
        assert out.is_dir()
        child.send_signal(sig)
        code = child.wait(60)
    finally:
        if child.poll() is None:
            child.kill()
    text = log.read_text()
    assert code == 128 + sig, text
    assert "Traceback" not in text
    errors = [line for line in text.splitlines() if "lookalike train: error:" in line]
    assert len(errors) == 1 and errors[0].startswith("lookalike train: error: "), text
    assert f"stopped by {sig.name}: training did not finish" in errors[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "catalog.jsonl", "existing", *sorted(p.name for p in tmp_path.glob("*.png")),
        "stderr.txt"]
    assert list(existing.iterdir()) == []


def test_a_second_train_into_the_same_out_is_refused_at_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two trains into one --out both ran and claimed success, the first model silently
    replaced by the second: the lock beside --out refuses the second, exit 4, at once."""
    import fcntl
    import os
    import time

    from lookalike.cli import main

    catalog = _catalog(tmp_path, n_styles=4)
    out = tmp_path / "model"
    lock = tmp_path / ".model.train.lock"
    fd = os.open(lock, os.O_RDWR | os.O_CREAT)  # what the first run holds
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        started = time.monotonic()
        assert main(["train", "--catalog", str(catalog), "--out", str(out)]) == 4
        assert time.monotonic() - started < 10  # before any model is built
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if "lookalike train: error:" in line]
        assert len(lines) == 1 and "Traceback" not in err, err
        assert f"--out {out} is being written by another lookalike train" in lines[0]
        assert lock.exists()  # the holder's file is left to it
    finally:
        os.close(fd)


def test_a_run_removes_what_a_killed_run_of_its_out_left(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """kill -9 left ``.NAME.train-<id>`` staging folders beside --out, never cleaned: the
    next run of that --out (holding its lock: nobody else writes one) removes them, and
    only them; its own lock file goes as it ends."""
    import training.backbone
    from lookalike.cli import build_parser
    from lookalike.commands_train import train as train_command
    from lookalike.settings import Settings

    catalog = _catalog(tmp_path, n_styles=4)
    left = [tmp_path / ".model.train-0123456789ab", tmp_path / ".model.train-abcdefabcdef"]
    kept = [tmp_path / ".model.train-mine", tmp_path / ".model2.train-0123456789ab"]
    for folder in (*left, *kept):
        folder.mkdir()
        (folder / "top.weights.h5").write_bytes(b"half")
    monkeypatch.setattr(training.backbone, "ProjectionBackbone",
                        lambda *args: FakeProjectionBackbone())
    args = build_parser().parse_args(
        ["train", "--catalog", str(catalog), "--out", str(tmp_path / "model"),
         "--epochs", "1", "--views", "1"])
    assert train_command(Settings(), args) == 0
    hidden = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("."))
    assert hidden == sorted(p.name for p in kept)


def test_a_signal_during_a_fit_waits_for_the_step() -> None:
    """Inside ``model.fit`` a Ctrl-C only asks Keras to stop after the step; the previous
    handler gets it once the fit has returned."""
    import os
    import types

    from training.trainer import _stop_between_steps

    model = types.SimpleNamespace(stop_training=False)
    after_the_signal = []
    with pytest.raises(KeyboardInterrupt), _stop_between_steps(model):
        os.kill(os.getpid(), signal.SIGINT)
        for _ in range(1000):  # the handler runs between bytecodes: it must not raise here
            pass
        after_the_signal.append(model.stop_training)
    assert after_the_signal == [True]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_integer_ids_and_missing_categories_train(tmp_path: Path) -> None:
    """A catalog with integer product ids and no categories was refused (exit 2) by the
    gallery reader train shares with eval: the ids are read as their decimal strings (their
    ``group_id`` found by them), a missing category is the placeholder, and a tiny run
    trains."""
    catalog = _catalog(tmp_path)

    def change(i: int, line: dict[str, Any]) -> None:
        line["product_id"] = 100 + i
        line.pop("category") if i % 2 else line.update(category=None)
        line["type"] = "tee"  # an attribute, not an event type

    _rewrite(catalog, change)
    by_style = load_training_images(catalog, "group_id")
    assert {im.product_id for im in by_style} == {str(100 + i) for i in range(12)}
    assert {im.group for im in by_style} == {f"s{s}" for s in range(6)}
    assert {im.group for im in load_training_images(catalog, "category")} == {"uncategorized"}
    options = TrainOptions(group_key="group_id", epochs=1, seed=5, views=2, val_fraction=0.34,
                           labels_per_batch=4, samples_per_label=2, val_by_group=True)
    result = train(catalog, tmp_path / "model", FakeBackbone(), options)
    assert result.report["validation"]["groups"] == 2 and result.report["train"]["groups"] == 4


def test_a_product_without_the_group_key_is_a_group_of_its_own(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A catalog where some lines lack ``group_id`` trains (each such product alone, with a
    warning); a key that no line has is a mistyped name and refused."""
    catalog = _catalog(tmp_path, n_styles=4)
    _rewrite(catalog, lambda i, line: line.update(style=f"st{i // 2}") if i != 3 else None)
    with caplog.at_level("WARNING", logger="training.data"):
        groups = {im.product_id: im.group for im in load_training_images(catalog, "style")}
    assert groups["s0-c0"] == groups["s0-c1"] == "st0"
    assert groups["s1-c1"] == "\x1fproduct:s1-c1"
    assert groups["s1-c0"] == "st1"
    assert "1 of 8 products have no 'style'" in caplog.text
    with pytest.raises(TrainingDataError, match=r"no product has 'stlye' to group by"):
        load_training_images(catalog, "stlye")
