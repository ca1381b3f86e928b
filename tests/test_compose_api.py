"""The compose file's API service: `lookalike serve` on the ingest image, settings it accepts,
a readiness healthcheck, and the catalog images read-only (the page shows them)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from tests.test_compose import compose, env, resolve, services

__all__ = ["compose", "services"]  # fixtures, found by pytest as module attributes


def test_api_serves_from_the_ingest_image(services: dict[str, dict[str, Any]]) -> None:
    api, ingest = services["api"], services["ingest"]
    assert api["image"] == ingest["image"] and api["build"] == ingest["build"]
    assert api["command"][0] == "serve" and "0.0.0.0" in api["command"]
    assert api["restart"] == "unless-stopped"
    assert api["depends_on"] == {"milvus": {"condition": "service_healthy"}}
    assert "/readyz" in " ".join(api["healthcheck"]["test"])
    (port,) = api["ports"]
    assert resolve(port).endswith(":8080") and resolve(port).startswith("127.0.0.1:")


def test_api_environment_is_accepted_by_the_settings(
    services: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    from lookalike.settings import Settings

    for key in list(os.environ):
        if key.startswith("LOOKALIKE_"):
            monkeypatch.delenv(key)
    for key, value in env(services["api"]).items():
        monkeypatch.setenv(key, value)
    settings = Settings()
    assert settings.milvus.uri == "http://milvus:19530"
    assert settings.serve.workers == 4
    (root,) = settings.images.roots
    (mount,) = [v for v in services["api"]["volumes"] if isinstance(v, dict)]
    assert mount["read_only"] is True and Path(resolve(mount["target"])) == root
