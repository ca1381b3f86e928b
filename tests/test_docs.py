"""The README is what a newcomer reads in ten minutes; longer material lives in docs/."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_readme_has_at_most_200_lines() -> None:
    lines = (REPO / "README.md").read_text().count("\n")
    assert lines <= 200, f"README.md has {lines} lines: move detail into docs/"


def test_every_linked_doc_exists() -> None:
    for doc in ("README.md", *(str(p.relative_to(REPO)) for p in (REPO / "docs").glob("*.md"))):
        text = (REPO / doc).read_text()
        for target in re.findall(r"\]\(((?:\.\./)?docs/[^)#]+|[a-z_]+\.md)\)", text):
            base = (REPO / doc).parent
            assert (base / target).resolve().is_file(), f"{doc} links to missing {target}"
