"""Strings built to break out of a quoted Milvus literal, shared by the pure escaping tests
(tests/test_filters.py) and the same values stored and filtered on both engines
(tests/test_filters_engines.py), so the two always cover the same attacks."""

from __future__ import annotations

HOSTILE_STRINGS = [
    'x" or 1==1',
    'x" or category != "',
    'x\\" or 1==1 or \\"',
    "') or true or ('",
    "' or ''=='",
    '" || true || "',
    "\\",
    "\\\\",
    'a\\"b',
    "trailing\\",
    "ünïcødé ß 日本語 🙂",
    "\u2028line\u2029sep",
    "{p0}",
    "%s $1 ?",
    "x) or (1==1",
    "L" * 512,  # store/expressions.py: MAX_LITERAL_LENGTH, the longest accepted
]
