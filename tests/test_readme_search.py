"""The README's search snippet, run as a new user would: on a catalog that ``lookalike
ingest`` built in another process (whose Milvus Lite collection a fresh client sees released).
Three processes: publish, ingest, then the snippet itself."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO

pytestmark = [pytest.mark.kafka, pytest.mark.model, pytest.mark.luma]


def readme_snippet() -> str:
    """The README's first Python block that opens search, up to its multi-view examples
    (those name files and a vector the reader supplies)."""
    text = (REPO / "README.md").read_text()
    block = next(b for b in re.findall(r"```python\n(.*?)```", text, re.S) if "open_search(" in b)
    return block.split("\nsearch.by_images(")[0]


def small_catalog(luma_dir: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """A dozen Luma products (main views only); the query is a back view of a Women/Tops
    product under 60 USD, which the snippet's filter admits."""
    lines = [json.loads(line) for line in (luma_dir / "catalog.jsonl").read_text().splitlines()]
    query = next(r for r in lines if r["category"].startswith("Women/Tops") and r["price"] <= 60
                 and any(i["view"] == "back" for i in r["images"]))
    others = [r for r in lines if r is not query][::40][:11]
    catalog = []
    for r in [query, *others]:
        mains = [{"path": str(luma_dir / i["path"]), "view": "main"}
                 for i in r["images"] if i["view"] == "main"]
        catalog.append({**r, "images": mains})
    return catalog, query


def test_readme_snippet_on_a_catalog_ingested_by_another_process(
        bootstrap: str, unique: str, luma_dir: Path, tmp_path: Path) -> None:
    catalog, query = small_catalog(luma_dir)
    (tmp_path / "catalog.jsonl").write_text("".join(json.dumps(r) + "\n" for r in catalog))
    back = next(i for i in query["images"] if i["view"] == "back")
    shutil.copy(luma_dir / back["path"], tmp_path / "snapshot.jpg")
    env = {**os.environ, "PYTHONPATH": str(REPO),
           "LOOKALIKE_KAFKA__BOOTSTRAP_SERVERS": bootstrap,
           "LOOKALIKE_KAFKA__TOPIC": f"readme-{unique}",
           "LOOKALIKE_KAFKA__DLQ_TOPIC": f"readme-dlq-{unique}",
           "LOOKALIKE_KAFKA__GROUP_ID": f"readme-{unique}",
           "LOOKALIKE_MILVUS__URI": str(tmp_path / "readme.db"),
           "LOOKALIKE_MILVUS__COLLECTION": f"readme_{unique}",
           "LOOKALIKE_IMAGES__ROOTS": json.dumps([str(luma_dir)])}
    cli = [sys.executable, "-m", "lookalike"]
    for args in (["publish", str(tmp_path / "catalog.jsonl")], ["ingest", "--until-caught-up"]):
        done = subprocess.run(cli + args, env=env, cwd=tmp_path, capture_output=True,
                              text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]

    done = subprocess.run([sys.executable, "-c", readme_snippet()], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    printed = [line.split() for line in done.stdout.splitlines() if line.strip()]
    admitted = {r["product_id"] for r in catalog
                if r["category"].startswith("Women/Tops") and r["price"] <= 60}
    found = [fields[1] for fields in printed]
    assert found and set(found) <= admitted
    assert query["product_id"] in found
