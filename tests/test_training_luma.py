"""``lookalike train`` with the real EfficientNet-Lite0 on a small Luma subset (CI-sized).

Checks what a user relies on: validation recall does not drop, the model directory loads back
through ``create_embedder(path=...)`` (what ``LOOKALIKE_MODEL__PATH`` does) to the very vectors
the trained network gives, and its version names its content.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from embedding.decode import load_image
from embedding.efficientnet_lite import build_feature_model, copy_weights
from embedding.embedder import EfficientNetLiteEmbedder
from embedding.preprocess import preprocess_image
from embedding.trained import CONFIG_FILE, TrainedModelError
from training.backbone import EfficientNetBackbone, ProjectionBackbone
from training.trainer import TrainOptions, train

pytestmark = [pytest.mark.model, pytest.mark.luma]


def _subset(luma_dir: Path, out: Path, n_styles: int = 12) -> Path:
    """The first ``n_styles`` styles of Luma, image paths made absolute."""
    rows, styles = [], []
    for line in (luma_dir / "catalog.jsonl").read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        if row["group_id"] not in styles:
            if len(styles) == n_styles:
                break
            styles.append(row["group_id"])
        row["images"] = [str(luma_dir / im["path"]) for im in row["images"]]
        rows.append(row)
    catalog = out / "catalog.jsonl"
    catalog.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return catalog


def test_train_on_luma_subset_and_load_back(luma_dir: Path, tmp_path: Path) -> None:
    from embedding.embedder import create_embedder

    catalog = _subset(luma_dir, tmp_path)
    backbone = EfficientNetBackbone("lite0", "pad", train_blocks=1)
    options = TrainOptions(group_key="group_id", epochs=2, views=1, seed=0, val_fraction=0.34)
    out = tmp_path / "model"
    result = train(catalog, out, backbone, options)

    for task in ("item", "group_similar"):
        assert result.after[task]["R@1"] >= result.before[task]["R@1"]
    report = json.loads((out / "report.json").read_text())
    assert report["model_version"] == result.model_version
    assert "-ft" in result.model_version and result.model_version.endswith("-w0.5")
    assert report["best_epoch"] == result.best_epoch

    photos = [load_image(p, 10**8) for p in sorted(luma_dir.glob("images/mh01-*"))[:4]]
    loaded = create_embedder("lite0", "pad", 8, colour_weight=0.5, path=out)
    assert loaded.model_version == result.model_version
    full = build_feature_model("lite0")
    copy_weights(backbone.top(), full)
    in_memory = EfficientNetLiteEmbedder("lite0", "pad", 8, colour_weight=0.5, model=full,
                                         version="in-memory")
    vectors = loaded.embed(photos)
    assert np.array_equal(vectors, in_memory.embed(photos))

    # what training scored: float16 bottom features through the trained top
    batch = np.stack([preprocess_image(p, 224) for p in photos])
    trained = np.asarray(backbone.top().predict_on_batch(
        backbone.features(batch).astype(np.float32)))
    cnn_only = create_embedder("lite0", "pad", 8, colour_weight=0.0, path=out).embed(photos)
    expected = trained / np.linalg.norm(trained, axis=1, keepdims=True)
    np.testing.assert_allclose(cnn_only, expected, atol=2e-3)

    config = json.loads((out / CONFIG_FILE).read_text())
    config["content_sha256"] = "0" * 64
    (out / CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(TrainedModelError, match="differs from the recorded"):
        create_embedder("lite0", "pad", 8, 0.5, path=out)


def test_projection_on_luma_subset_loads_back(luma_dir: Path, tmp_path: Path) -> None:
    """The default cut (``--tune projection``): the saved directory holds the frozen network
    plus the projection, loads through ``create_embedder(path=...)`` to the vectors the
    trained projection gives on the frozen features."""
    from embedding.embedder import create_embedder

    catalog = _subset(luma_dir, tmp_path)
    backbone = ProjectionBackbone("lite0", "pad")
    options = TrainOptions(group_key="group_id", epochs=3, views=1, seed=0, val_fraction=0.34,
                           loss="proxy", learning_rate=1e-3, keep_best=False)
    out = tmp_path / "model"
    result = train(catalog, out, backbone, options)
    assert json.loads((out / CONFIG_FILE).read_text())["projection"] is True
    weights = backbone.top().get_layer("projection").get_weights()[0]
    assert np.abs(weights).max() > 0  # it trained (keep_best off: the last epoch is kept)

    photos = [load_image(p, 10**8) for p in sorted(luma_dir.glob("images/mh01-*"))[:4]]
    loaded = create_embedder("lite0", "pad", 8, colour_weight=0.0, path=out)
    assert loaded.model_version == result.model_version.split("+")[0]
    batch = np.stack([preprocess_image(p, 224) for p in photos])
    trained = np.asarray(backbone.top().predict_on_batch(
        backbone.features(batch).astype(np.float32)))
    expected = trained / np.linalg.norm(trained, axis=1, keepdims=True)
    np.testing.assert_allclose(loaded.embed(photos), expected, atol=2e-3)
