"""The README's search snippet and ``lookalike serve``, run as a new user would: on a catalog
that ``lookalike ingest`` built in another process (whose Milvus Lite collection a fresh client
sees released). Separate processes: publish, ingest, then the snippet, then the server."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO

pytestmark = [pytest.mark.kafka, pytest.mark.model, pytest.mark.luma]


def readme_snippet() -> str:
    """The README's first Python block that opens search, up to its multi-view examples
    (those name files the reader supplies), then a line printing its ``hits``."""
    text = (REPO / "README.md").read_text()
    block = next(b for b in re.findall(r"```python\n(.*?)```", text, re.S) if "build_search(" in b)
    return block.split("\nsearch.by_images(")[0] + "\nfor h in hits: print(h.score, h.product_id)\n"


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


@pytest.fixture(scope="module")
def ingested(bootstrap: str, luma_dir: Path,
             tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A catalog published and ingested by `lookalike publish` / `lookalike ingest` processes."""
    tmp = tmp_path_factory.mktemp("readme")
    unique = tmp.name[-8:].replace("-", "")
    catalog, query = small_catalog(luma_dir)
    (tmp / "catalog.jsonl").write_text("".join(json.dumps(r) + "\n" for r in catalog))
    back = next(i for i in query["images"] if i["view"] == "back")
    shutil.copy(luma_dir / back["path"], tmp / "snapshot.jpg")
    env = {**os.environ, "PYTHONPATH": str(REPO),
           "LOOKALIKE_KAFKA__BOOTSTRAP_SERVERS": bootstrap,
           "LOOKALIKE_KAFKA__TOPIC": f"readme-{unique}",
           "LOOKALIKE_KAFKA__DLQ_TOPIC": f"readme-dlq-{unique}",
           "LOOKALIKE_KAFKA__GROUP_ID": f"readme-{unique}",
           "LOOKALIKE_MILVUS__URI": str(tmp / "readme.db"),
           "LOOKALIKE_MILVUS__COLLECTION": f"readme_{unique}",
           "LOOKALIKE_IMAGES__ROOTS": json.dumps([str(luma_dir)])}
    for args in (["publish", str(tmp / "catalog.jsonl")], ["ingest", "--until-caught-up"]):
        done = subprocess.run(CLI + args, env=env, cwd=tmp, capture_output=True, text=True,
                              timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
    return {"env": env, "tmp": tmp, "catalog": catalog, "query": query}


CLI = [sys.executable, "-m", "lookalike"]


def test_readme_snippet_on_a_catalog_ingested_by_another_process(
        ingested: dict[str, Any]) -> None:
    done = subprocess.run([sys.executable, "-c", readme_snippet()], env=ingested["env"],
                          cwd=ingested["tmp"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    printed = [line.split() for line in done.stdout.splitlines() if line.strip()]
    admitted = {r["product_id"] for r in ingested["catalog"]
                if r["category"].startswith("Women/Tops") and r["price"] <= 60}
    found = [fields[1] for fields in printed]
    assert found and set(found) <= admitted
    assert ingested["query"]["product_id"] in found


def test_lookalike_serve_answers_on_that_catalog(ingested: dict[str, Any]) -> None:
    import requests

    from tests.test_serve_run import free_port, wait_for

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = ingested["tmp"] / "serve.log"
    server = subprocess.Popen([*CLI, "serve", "--port", str(port)], env=ingested["env"],
                              cwd=ingested["tmp"], stdout=log.open("w"),
                              stderr=subprocess.STDOUT)
    try:
        def ready() -> bool:
            try:
                return requests.get(f"{url}/readyz", timeout=5).status_code == 200
            except requests.RequestException:
                return server.poll() is not None  # stop waiting: it died

        wait_for(ready, 300, "lookalike serve ready")
        assert server.poll() is None
        query = ingested["query"]["product_id"]
        photo = (ingested["tmp"] / "snapshot.jpg").read_bytes()
        hits = requests.post(f"{url}/v1/search", files={"image": ("q.jpg", photo)},
                             data={"k": "5"}, timeout=60).json()["hits"]
        assert query in [h["product_id"] for h in hits]
        similar = requests.get(f"{url}/v1/products/{query}/similar", timeout=60).json()
        assert similar["hits"] and query not in [h["product_id"] for h in similar["hits"]]
        compare = requests.post(f"{url}/v1/compare-prices",
                                json={"product_id": query, "threshold": 0.3}, timeout=60)
        prices = [m["price"] for m in compare.json()["matches"]]
        assert prices == sorted(prices)
        bad = requests.post(f"{url}/v1/search", files={"image": ("q.jpg", b"nope")}, timeout=60)
        assert bad.status_code == 422 and bad.json()["error"]["code"] == "not_an_image"
        metrics = requests.get(f"{url}/metrics", timeout=10).text
        assert 'lookalike_http_requests_total{endpoint="/v1/search",status="200"}' in metrics
        assert 'lookalike_search_stage_duration_seconds_count{stage="embed"}' in metrics
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
    assert server.returncode == 0, log.read_text()[-2000:]
