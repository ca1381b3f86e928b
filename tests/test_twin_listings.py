"""bench/twin_listings.py: which wrong listings of a same-item evaluation are listings of
another item shown with the query item's own photo."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench.twin_listings import TWIN_SHARE, count, main, twins
from tests.fakes import textured_photo


def _protocol(root: Path) -> tuple[Path, Path]:
    """Items a, b (a's photo with a trim of another colour over 1 % of it: a twin) and c
    (another photo); a is listed twice, by its maker and a shop."""
    photo = textured_photo(1)
    photo.save(root / "a.png")
    trim = np.asarray(photo).copy()
    rows = max(1, int(trim.shape[0] * TWIN_SHARE / 3))
    trim[-rows:] = (20, 160, 40)
    Image.fromarray(trim).save(root / "b.png")
    textured_photo(2).save(root / "c.png")
    photo.resize((200, 240)).save(root / "a-shop.jpg")
    listings = [("a", "a", "a.png"), ("a~shop", "a", "a-shop.jpg"), ("b", "b", "b.png"),
                ("c", "c", "c.png")]
    gallery = root / "gallery.jsonl"
    gallery.write_text("".join(json.dumps({"product_id": pid, "item": item, "images": [path]})
                               + "\n" for pid, item, path in listings))
    details = root / "details.jsonl"
    details.write_text(json.dumps({"image": "q.jpg", "relevant": ["a", "a~shop"],
                                   "listed": [{"product_id": p} for p in ("a", "b", "c")],
                                   "missed": ["a~shop"], "wrong": ["b", "c"]}) + "\n")
    return gallery, details


def test_a_wrong_listing_is_a_twin_only_when_its_items_photo_is_the_querys(
        tmp_path: Path) -> None:
    gallery, details = _protocol(tmp_path)
    assert twins(tmp_path / "a.png", tmp_path / "b.png")
    assert not twins(tmp_path / "a.png", tmp_path / "c.png")
    assert not twins(tmp_path / "a.png", tmp_path / "a-shop.jpg")  # another size: not compared
    out = count(details, gallery)
    assert (out["listed"], out["wrong"], out["wrong_twins"]) == (3, 2, 1)
    assert out["precision"] == pytest.approx(1 / 3, abs=1e-4)
    assert out["precision_without_twins"] == pytest.approx(1 / 2)
    assert out["twin_items"] == ["a ~ b"]


def test_bad_inputs_are_one_line_and_exit_2(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    _, details = _protocol(tmp_path)
    assert main(["--protocol", str(tmp_path), "--details", str(tmp_path / "nope.jsonl")]) == 2
    assert "not found" in capsys.readouterr().err
    details.write_text("{not json\n")
    assert main(["--protocol", str(tmp_path), "--details", str(details)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is not what lookalike eval --details" in err[0]
    _protocol(tmp_path)
    assert main(["--protocol", str(tmp_path), "--details", str(details)]) == 0
    assert json.loads(capsys.readouterr().out)["wrong_twins"] == 1
