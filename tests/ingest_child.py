"""A consumer process for the kill/stop tests: the tiny embedder, slowed down so that a
signal lands while a batch is in flight. Usage: ingest_child.py BOOTSTRAP UNIQUE DB ROOT"""

from __future__ import annotations

import logging
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from pymilvus import MilvusClient

from lookalike.app import build_runner, create_topics, stop_on_signals
from schema.collection import CollectionSpec
from store import MilvusStore, ensure_collections
from tests.fakes import TinyEmbedder
from tests.pipeline_support import make_settings


class SlowEmbedder(TinyEmbedder):
    def embed_prepared(self, batch: np.ndarray) -> np.ndarray:
        time.sleep(0.4)
        return super().embed_prepared(batch)


def main() -> int:
    bootstrap, unique, db, root = sys.argv[1:5]
    until_caught_up = "--until-caught-up" in sys.argv
    logging.basicConfig(level=logging.INFO, stream=sys.stdout,
                        format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("kafka").setLevel(logging.WARNING)
    settings = make_settings(bootstrap, unique, Path(db), [Path(root)], batch_events=4)
    embedder = SlowEmbedder()
    client = MilvusClient(db)
    spec = CollectionSpec(name=settings.milvus.collection, dim=embedder.dim)
    store = MilvusStore(client)
    ensure_collections(store, spec)
    create_topics(settings)
    with ThreadPoolExecutor(2) as pool:
        runner = build_runner(settings, embedder, store, spec, pool)
        with stop_on_signals(runner):
            report = runner.run(until_caught_up=until_caught_up)
    print(f"EXIT stopped_by={report.stopped_by} applied={report.totals.applied}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
