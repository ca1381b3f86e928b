"""Import rules that keep the layers pointing one way (read from the source, not run)."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("schema", "ingest", "search", "store", "embedding", "evaluation", "lookalike",
            "bench", "training", "serve")


def _imports(path: Path) -> set[str]:
    """Top-level names of every module ``path`` imports (also inside functions)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _sources() -> list[Path]:
    return [p for pkg in PACKAGES if (REPO / pkg).is_dir() for p in (REPO / pkg).rglob("*.py")]


def test_only_the_store_imports_pymilvus() -> None:
    sources = _sources()
    assert any(p.parent.name == "store" for p in sources)
    offenders = sorted(
        str(p.relative_to(REPO)) for p in sources
        if p.relative_to(REPO).parts[0] != "store"
        and any(m == "pymilvus" or m.startswith("pymilvus.") for m in _imports(p))
    )
    assert offenders == [], f"import pymilvus only in store/: {offenders}"


def test_ingest_does_not_import_search_and_the_planner_no_io() -> None:
    ingest = sorted((REPO / "ingest").rglob("*.py"))
    assert ingest
    bad = sorted(str(p.relative_to(REPO)) for p in ingest
                 if any(m.split(".")[0] == "search" for m in _imports(p)))
    assert bad == [], f"ingest must not import search: {bad}"
    plan = _imports(REPO / "ingest" / "plan.py")
    assert not {m for m in plan if m.split(".")[0] in ("store", "pymilvus", "kafka")
                or m == "ingest.sink"}


def test_store_imports_no_caller() -> None:
    callers = ("ingest", "search", "evaluation", "lookalike")
    bad = sorted(str(p.relative_to(REPO)) for p in (REPO / "store").rglob("*.py")
                 if any(m.split(".")[0] in callers for m in _imports(p)))
    assert bad == [], f"store/ must not import its callers: {bad}"
