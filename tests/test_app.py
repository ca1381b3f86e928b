"""The wiring decides things once: one client, one engine probe, one write target."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from pymilvus import MilvusClient

from lookalike.app import (
    build_runner,
    build_search,
    create_topics,
    open_for_writing,
    open_versions,
)
from tests.fakes import TinyEmbedder
from tests.pipeline_support import make_settings


@pytest.mark.kafka
def test_ingest_and_search_wiring_ask_the_server_its_version_once(
    bootstrap: str, unique: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    probes: list[str] = []
    real = MilvusClient.get_server_version

    def counted(self: MilvusClient, *args: object, **kwargs: object) -> str:
        probes.append("probe")
        return str(real(self, *args, **kwargs))

    monkeypatch.setattr(MilvusClient, "get_server_version", counted)
    settings = make_settings(bootstrap, unique, tmp_path / "m.db", [tmp_path])
    embedder = TinyEmbedder()
    create_topics(settings)
    versions = open_versions(settings, create=True)
    target, guard = open_for_writing(versions, embedder)
    with ThreadPoolExecutor(1) as pool:
        build_runner(settings, embedder, versions.store, target, pool,
                     after_write=guard.check)
    build_search(settings, embedder, versions)
    assert probes == ["probe"]
    assert target.name != versions.base  # a physical collection; searches use the alias


def test_opening_a_missing_lite_database_creates_it_only_when_asked(tmp_path: Path) -> None:
    from lookalike.errors import UserError

    settings = make_settings("127.0.0.1:1", "x", tmp_path / "new.db", [])
    with pytest.raises(UserError, match="no Milvus Lite database"):
        open_versions(settings)
    assert not (tmp_path / "new.db").exists()
    assert open_versions(settings, create=True).store is not None
    assert (tmp_path / "new.db").exists()


def test_every_runner_limit_without_a_default_is_an_ingest_setting() -> None:
    """build_runner fills RunnerConfig from IngestSettings by name: a limit added to one and
    not the other would silently be missing."""
    from dataclasses import MISSING, fields

    from ingest.runner import RunnerConfig
    from lookalike.settings import IngestSettings

    required = {f.name for f in fields(RunnerConfig) if f.default is MISSING}
    assert required and required <= set(IngestSettings.model_fields)


def test_an_empty_model_path_setting_means_none_not_the_working_directory(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from lookalike.settings import Settings

    monkeypatch.setenv("LOOKALIKE_MODEL__PATH", "")
    monkeypatch.setenv("LOOKALIKE_MODEL__COMPILE_CACHE", " ")
    assert Settings().model.path is None and Settings().model.compile_cache is None
    monkeypatch.setenv("LOOKALIKE_MODEL__COMPILE_CACHE", "/srv/xla")
    assert Settings().model.compile_cache == Path("/srv/xla")
