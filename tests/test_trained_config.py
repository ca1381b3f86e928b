"""A trained model directory is read strictly: ``config.json`` as ``lookalike train`` writes
it, and weights that fit it, or one line (:class:`TrainedModelError`) that says what is wrong.

Found by trying damaged directories as a user would: ``first_block`` out of range ended in a
``ValueError`` traceback from the model builder, ``16.7`` was read as 16 and ``"false"`` as
true, and weights of another layout printed ~200 lines of Keras warnings and weight arrays.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import pytest

from embedding.trained import (
    CONFIG_FILE,
    TrainedConfig,
    TrainedModelError,
    load_trained_model,
    read_config,
    save_trained,
    trained_model_parts,
)

GOOD = {"variant": "lite0", "square": "pad", "first_block": 16, "format": 1,
        "projection": True, "content_sha256": "0" * 64}


def _written(folder: Path, **changes: Any) -> Path:
    folder.mkdir(exist_ok=True)
    (folder / CONFIG_FILE).write_text(json.dumps({**GOOD, **changes}))
    return folder


def test_a_config_as_train_writes_it_is_read(tmp_path: Path) -> None:
    config, sha = read_config(_written(tmp_path))
    assert config == TrainedConfig("lite0", "pad", 16, 1, True) and sha == "0" * 64
    old = tmp_path / "old"  # written before the field existed
    old.mkdir()
    (old / CONFIG_FILE).write_text(json.dumps({k: v for k, v in GOOD.items()
                                               if k != "projection"}))
    assert read_config(old)[0].projection is False


@pytest.mark.parametrize(("changes", "message"), [
    ({"first_block": -1}, "first_block -1 is not a block of lite0 (1..16)"),
    ({"first_block": 1_000_000}, "first_block 1000000 is not a block of lite0"),
    ({"first_block": 16.7}, "first_block must be an integer, not 16.7"),
    ({"first_block": True}, "first_block must be an integer, not True"),
    ({"first_block": "16"}, "first_block must be an integer, not '16'"),
    ({"format": 1.0}, "format must be an integer"),
    ({"projection": "false"}, "projection must be true or false, not 'false'"),
    ({"projection": 0}, "projection must be true or false"),
])
def test_a_damaged_config_is_one_line(tmp_path: Path, changes: dict[str, Any],
                                      message: str) -> None:
    with pytest.raises(TrainedModelError) as refused:
        read_config(_written(tmp_path, **changes))
    assert message in str(refused.value) and "\n" not in str(refused.value)


@pytest.mark.model
def test_weights_of_another_layout_are_one_line(tmp_path: Path) -> None:
    """The last block's weights under a config that says the top starts at block 1: Keras
    warns per layer that does not fit, then raises with its weight arrays in the message."""
    config = TrainedConfig("lite0", "pad", 16)
    _, top = trained_model_parts(config)
    save_trained(tmp_path, config, top, {}, 0.5)
    meta = json.loads((tmp_path / CONFIG_FILE).read_text())
    (tmp_path / CONFIG_FILE).write_text(json.dumps({**meta, "first_block": 1}))
    with warnings.catch_warnings(record=True) as warned:
        warnings.simplefilter("always")
        with pytest.raises(TrainedModelError) as refused:
            load_trained_model(tmp_path, 0.5)
    assert not warned
    text = str(refused.value)
    assert "cannot load" in text and "weights of another config.json?" in text
    assert "\n" not in text and len(text) < 400


def _fifo(path: Path) -> Path:
    import os

    os.mkfifo(path)
    return path


@pytest.mark.parametrize("kind", ["dev-zero", "fifo", "folder", "too-large"])
def test_a_config_that_is_no_small_regular_file_is_one_line(tmp_path: Path, kind: str) -> None:
    """A tampered directory: config.json a link to /dev/zero was read for ever (3.5 GB in
    6 s), a FIFO waited for ever for a writer; also ``train --out`` of that folder."""
    import threading

    folder = tmp_path / "model"
    folder.mkdir()
    config = folder / CONFIG_FILE
    if kind == "dev-zero":
        config.symlink_to("/dev/zero")
    elif kind == "fifo":
        _fifo(config)
    elif kind == "folder":
        config.mkdir()
    else:
        config.write_text(json.dumps({**GOOD, "pad": "x" * (2 << 20)}))
    outcome: list[BaseException] = []
    reader = threading.Thread(target=lambda: _refused(folder, outcome), daemon=True)
    reader.start()
    reader.join(10)
    assert not reader.is_alive(), "read_config hangs"
    assert len(outcome) == 1 and isinstance(outcome[0], TrainedModelError)
    text = str(outcome[0])
    expected = "larger than 1048576 bytes" if kind == "too-large" else "not a regular file"
    assert f"{config}: cannot read: {expected}" in text and "\n" not in text


def _refused(folder: Path, outcome: list[BaseException]) -> None:
    try:
        read_config(folder)
    except BaseException as exc:  # the test inspects it
        outcome.append(exc)


@pytest.mark.parametrize("kind", ["dev-zero", "fifo"])
def test_weights_that_are_no_regular_file_are_one_line(tmp_path: Path, kind: str) -> None:
    """top.weights.h5 a FIFO hung in h5py's open; refused before the model is built."""
    folder = _written(tmp_path / "model")
    weights = folder / "top.weights.h5"
    if kind == "fifo":
        _fifo(weights)
    else:
        weights.symlink_to("/dev/zero")
    with pytest.raises(TrainedModelError, match=f"{weights}: cannot read: not a regular file"):
        load_trained_model(folder, 0.5)
