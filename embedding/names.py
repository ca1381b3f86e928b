"""User-given names (settings, CLI, stored model versions) parsed into one of a closed set.

Variants and square modes both take a member or a string, ignore case and surrounding space,
and refuse anything else with a ValueError that lists what is known (the CLI prints it)."""

from __future__ import annotations

from enum import Enum
from typing import TypeVar

E = TypeVar("E", bound=Enum)


def parse_member(cls: type[E], value: str | E, key: str, what: str) -> E:
    """The member of ``cls`` whose value is ``key`` (``value`` normalised by the caller);
    ``value`` itself when it already is one."""
    if isinstance(value, cls):
        return value
    try:
        return cls(key)
    except ValueError:
        known = ", ".join(str(m.value) for m in cls)
        raise ValueError(f"unknown {what} {value!r}; known: {known}") from None
