"""Our top-level packages have generic names (``schema`` and ``evaluation`` are also unrelated
PyPI distributions): every one must import from this tree, and nothing installed may claim it.
"""

from __future__ import annotations

import importlib
import importlib.metadata
from pathlib import Path

import pytest
import tomllib

REPO = Path(__file__).resolve().parent.parent


def top_level_packages() -> list[str]:
    """The packages pyproject.toml ships (``include = ["schema*", ...]``)."""
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["packages"]["find"]["include"]
    return [p.rstrip("*") for p in patterns]


def test_every_shipped_package_exists_here() -> None:
    names = top_level_packages()
    assert {"schema", "evaluation", "ingest", "search", "lookalike"} <= set(names)
    for name in names:
        assert (REPO / name / "__init__.py").is_file(), name


@pytest.mark.parametrize("name", top_level_packages())
def test_package_imports_from_this_tree(name: str) -> None:
    module = importlib.import_module(name)
    origin = Path(module.__file__ or "").resolve()
    assert origin.is_relative_to(REPO), f"{name} imports from {origin}, not from {REPO}"


@pytest.mark.parametrize("name", top_level_packages())
def test_no_other_installed_distribution_claims_the_name(name: str) -> None:
    """``pip install schema`` next to us would put a second ``schema`` on the path; whichever
    comes first wins silently, so an installed distribution with our name is an error."""
    owners = set(importlib.metadata.packages_distributions().get(name, []))
    assert owners <= {"lookalike"}, f"{name} is also provided by {sorted(owners - {'lookalike'})}"

