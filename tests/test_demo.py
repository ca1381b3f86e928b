"""`lookalike demo` on the default Fashion-MNIST catalog (synthetic prices), small."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

from lookalike.cli import main
from lookalike.demo_catalog import DEBIAN_DIR, write_fashion_mnist_catalog

pytestmark = [pytest.mark.kafka, pytest.mark.model]


@pytest.fixture
def fmnist() -> None:
    if not (DEBIAN_DIR / "t10k-images-idx3-ubyte.gz").exists():
        pytest.skip("Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)")


def test_catalog_has_classes_synthetic_prices_and_resales(fmnist: None, tmp_path: Path) -> None:
    catalog = write_fashion_mnist_catalog(tmp_path, n_products=200)
    lines = [json.loads(x) for x in catalog.read_text().splitlines()]
    assert len({x["category"] for x in lines}) == 10
    assert all(x["price_source"] == "synthetic" for x in lines)
    resold = [x for x in lines if x["product_id"].endswith("-resale")]
    assert resold and all(x["images"] == [f"images/{x['product_id'][:-7]}.png"] for x in resold)
    assert all((tmp_path / x["images"][0]).exists() for x in lines)


def test_demo_runs_end_to_end(fmnist: None, bootstrap: str, unique: str, tmp_path: Path,
                              monkeypatch: pytest.MonkeyPatch,
                              capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LOOKALIKE_KAFKA__TOPIC", f"demo-{unique}")
    monkeypatch.setenv("LOOKALIKE_KAFKA__SESSION_TIMEOUT_MS", "6000")
    code = main(["demo", "--n-products", "40", "--bootstrap-servers", bootstrap,
                 "--milvus-uri", str(tmp_path / "demo.db")])
    out = capsys.readouterr().out
    assert code == 0
    assert "SYNTHETIC" in out and out.count("query:") == 3
    assert "price comparison for" in out and "filtered:" in out
    # A query image is in the catalog, so its own listing comes back first at similarity 1.
    first_hit = out.split("query:")[1].splitlines()[1]
    assert first_hit.split()[1] == "1.000"
    # Its closing hint, run as printed, repeats the price comparison by hand: the listing
    # photos are read under the roots it names (they are refused without them).
    hint = out.split("try it yourself")[1].splitlines()[1]
    words = shlex.split(hint)
    assert words[0].startswith("LOOKALIKE_IMAGES__ROOTS=") and words[1].endswith("lookalike")
    product_id = words[words.index("--product-id") + 1]
    assert main(words[2:]) == 2  # without the roots
    assert "LOOKALIKE_IMAGES__ROOTS" in capsys.readouterr().err
    monkeypatch.setenv("LOOKALIKE_IMAGES__ROOTS", words[0].split("=", 1)[1])
    assert main(words[2:]) == 0
    listed = capsys.readouterr().out
    assert product_id.removesuffix("-resale") in listed


def test_demo_with_nothing_indexed_says_why_in_one_line(
    bootstrap: str, unique: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str]
) -> None:
    """The demo reads photos under its catalog's folder. A catalog whose ``images`` is a link
    to a folder elsewhere resolves outside it, every event was dead-lettered, and the demo
    went on to search and ended in a ``ProductNotFound`` traceback. Now: one line with the
    reasons and the way out (``--image-root``), which then works."""
    from tests.pipeline_support import write_image

    photos = tmp_path / "photos"
    photos.mkdir()
    shop = tmp_path / "shop"
    shop.mkdir()
    (shop / "images").symlink_to(photos)
    lines = []
    for i in range(2):
        write_image(photos / f"p{i}.png", seed=40 + i)
        lines.append({"product_id": f"p{i}", "title": f"P{i}", "category": "Shop/Things",
                      "price": 10 + i, "currency": "USD", "images": [f"images/p{i}.png"]})
    catalog = shop / "catalog.jsonl"
    catalog.write_text("".join(json.dumps(line) + "\n" for line in lines))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LOOKALIKE_KAFKA__SESSION_TIMEOUT_MS", "6000")
    monkeypatch.setenv("LOOKALIKE_LOG_LEVEL", "ERROR")
    argv = ["demo", "--catalog", str(catalog), "--bootstrap-servers", bootstrap]

    monkeypatch.setenv("LOOKALIKE_KAFKA__TOPIC", f"demo-links-{unique}")
    assert main([*argv, "--milvus-uri", str(tmp_path / "a.db")]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    (line,) = [x for x in err.splitlines() if "lookalike demo: error:" in x]
    assert "no product of the catalog was indexed: 2 event(s) dead-lettered" in line
    assert "images: path_not_allowed x2" in line and "--image-root" in line

    monkeypatch.setenv("LOOKALIKE_KAFKA__TOPIC", f"demo-links2-{unique}")
    assert main([*argv, "--image-root", str(photos), "--milvus-uri", str(tmp_path / "b.db")]) == 0
    out = capsys.readouterr().out
    assert "price comparison for p0" in out and out.count("query:") == 1


@pytest.mark.parametrize(("signal_name", "code"), [("SIGINT", 130), ("SIGTERM", 143)])
def test_a_demo_stopped_by_the_user_says_so(signal_name: str, code: int,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C during the demo's ingest stopped it gracefully, and the demo then blamed the
    catalog ("no product of the catalog was indexed"), exit 1."""
    from types import SimpleNamespace

    from ingest.runner import RunReport
    from lookalike import commands
    from lookalike.errors import UserError
    from lookalike.settings import Settings

    monkeypatch.setattr(commands, "_publish", lambda settings, events: 0)
    monkeypatch.setattr(commands, "_ingest",
                        lambda *args, **kwargs: RunReport(stopped_by=signal_name))
    with pytest.raises(UserError) as stopped:
        commands._demo_steps(Settings(), [], False,
                             SimpleNamespace(base="b", serving_unloaded=lambda: None),
                             SimpleNamespace(model_version="m"))
    assert stopped.value.code == code
    assert str(stopped.value) == f"stopped by {signal_name} before it finished"
