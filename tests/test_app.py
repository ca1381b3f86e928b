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
                     serving_check=guard.check)
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


def test_a_database_that_cannot_be_created_is_one_line(tmp_path: Path) -> None:
    """Under a regular file (and on a read-only disk) the folder could not be made:
    a ``NotADirectoryError`` (``OSError``) traceback."""
    from lookalike.errors import ExitCode, UserError

    (tmp_path / "notes.txt").write_text("mine")
    settings = make_settings("127.0.0.1:1", "x", tmp_path / "notes.txt" / "sub" / "m.db", [])
    with pytest.raises(UserError, match="cannot create the Milvus Lite database") as refused:
        open_versions(settings, create=True)
    assert refused.value.code == ExitCode.USAGE
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_an_image_root_that_is_no_folder_is_refused(tmp_path: Path) -> None:
    """A typo in a root made every local photo a dead letter, one by one (``path_not_allowed``,
    or ``not_found``), while ingest committed their offsets."""
    from lookalike.app import build_fetcher
    from lookalike.errors import UserError
    from lookalike.settings import ImageSettings

    assert build_fetcher(ImageSettings(roots=[tmp_path])) is not None
    for root in (tmp_path / "typo", tmp_path / "file.txt"):
        (tmp_path / "file.txt").write_text("x")
        with pytest.raises(UserError, match=f"image root {root} is not a folder"):
            build_fetcher(ImageSettings(roots=[tmp_path, root]))
    with pytest.raises(ValueError, match="an image root must be a folder, not an empty path"):
        ImageSettings.model_validate({"roots": [""]})


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
