"""The README is what a newcomer reads in ten minutes; longer material lives in docs/."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_readme_has_at_most_200_lines() -> None:
    lines = (REPO / "README.md").read_text().count("\n")
    assert lines <= 200, f"README.md has {lines} lines: move detail into docs/"


def test_readme_prose_lines_stay_short() -> None:
    """Prose is wrapped (tables and code blocks aside): a paragraph on one line would pass the
    line count and still not be read in ten minutes."""
    in_code = False
    for number, line in enumerate((REPO / "README.md").read_text().splitlines(), 1):
        if line.startswith("```"):
            in_code = not in_code
        elif not in_code and not line.startswith("|"):
            assert len(line) <= 110, f"README.md line {number} has {len(line)} characters"


def test_every_linked_doc_exists() -> None:
    for doc in ("README.md", *(str(p.relative_to(REPO)) for p in (REPO / "docs").glob("*.md"))):
        text = (REPO / doc).read_text()
        for target in re.findall(r"\]\(((?:\.\./)?docs/[^)#]+|[a-z_]+\.md)\)", text):
            base = (REPO / doc).parent
            assert (base / target).resolve().is_file(), f"{doc} links to missing {target}"



CONFIG_DOC = REPO / "docs" / "configuration.md"
CONFIG_HEADER = """# Configuration

Every setting of `lookalike/settings.py`, the only place defaults live. Environment variables
use the prefix `LOOKALIKE_` and `__` between a group and its field; lists are JSON
(`LOOKALIKE_IMAGES__ROOTS='["/data/images"]'`). Command-line options (`--milvus-uri`, `-k`, ...)
override them within the same bounds (the range column); a value outside them is refused at
start-up with one line and exit 2. This table is generated from the code (regenerate with
`PYTHONPATH=. python -c "from tests.test_docs import write_configuration_doc as w; w()"`);
`tests/test_docs.py` fails when it is out of date.

| variable | default | range | what |
|---|---|---|---|
"""


def settings_rows() -> list[str]:
    """One table row per setting: name, default and description, from the settings classes."""
    from pydantic import BaseModel
    from pydantic.fields import FieldInfo

    from lookalike.settings import Settings

    def bounds(info: FieldInfo) -> str:
        low = high = ""
        for limit in info.metadata:
            if hasattr(limit, "ge"):
                low = f"from {limit.ge:,}"
            elif hasattr(limit, "gt"):
                low = f"over {limit.gt:,}"
            elif hasattr(limit, "le"):
                high = f"to {limit.le:,}"
        return " ".join(part for part in (low, high) if part)

    def row(name: str, info: FieldInfo) -> str:
        default = info.get_default(call_default_factory=True)
        shown = "-" if default is None else f"`{default}`"
        what = (info.description or "").replace("|", "/")
        return f"| `{name}` | {shown} | {bounds(info)} | {what} |"

    rows = []
    for group, info in Settings.model_fields.items():
        model = info.annotation
        if isinstance(model, type) and issubclass(model, BaseModel):
            rows += [row(f"LOOKALIKE_{group}__{name}".upper(), sub)
                     for name, sub in model.model_fields.items()]
        else:
            rows.append(row(f"LOOKALIKE_{group}".upper(), info))
    return rows


def write_configuration_doc() -> None:
    CONFIG_DOC.write_text(CONFIG_HEADER + "\n".join(settings_rows()) + "\n")


def test_configuration_doc_is_generated_from_the_settings() -> None:
    assert CONFIG_DOC.read_text() == CONFIG_HEADER + "\n".join(settings_rows()) + "\n", (
        "docs/configuration.md is out of date: regenerate it (see its header)")
