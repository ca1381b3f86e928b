"""The ONE place where values become Milvus filter expressions (the store's compiler).

Nothing else in the project pastes a value into an expression: the store, the sink, the search
API and the tests build theirs with :class:`ExpressionBuilder` (the public, typed
:class:`search.filters.SearchFilter` is compiled onto one by :func:`search.filters.add_filter`).

Two renderings, chosen per engine (see :class:`store.engine.EngineInfo`):

* ``templates=True`` (Milvus 2.5+): values go to the server as ``filter_params`` and the
  expression only holds ``{name}`` placeholders, so no value is ever parsed as expression text.
* ``templates=False`` (Milvus 2.3/2.4 and milvus-lite, which reject ``{...}``): values are
  rendered as literals. Strings are double-quoted with ``\\`` and ``"`` escaped, which both
  the server's grammar and milvus-lite's tokenizer read back as the original characters.
  Values that cannot be rendered safely are rejected with :class:`ValueError` instead:
  control characters (no engine agrees on how to escape them, and a raw newline ends a
  literal on some), lone surrogates (not encodable as UTF-8) and strings over
  :data:`MAX_LITERAL_LENGTH` characters. The same checks run in template mode, so both
  renderings accept exactly the same values.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

from schema.events import normalize_category
from schema.records import category_depth, category_level_field

MAX_LITERAL_LENGTH = 512
"""Longest string value accepted in an expression (characters)."""

MAX_LIST_LENGTH = 4096
"""Most values in one ``in [...]`` list; callers chunk above it."""

_FIELD = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

Scalar: TypeAlias = str | int | float | bool
Comparison: TypeAlias = Literal["==", "!=", ">", ">=", "<", "<="]
Operator: TypeAlias = Literal["==", "!=", ">", ">=", "<", "<=", "in", "not in"]


@dataclass(frozen=True)
class Term:
    """One comparison of a clause, as data: what :mod:`store.lite_index` evaluates in memory
    (the rendered text is what Milvus evaluates; both come from the same builder call)."""

    field: str
    op: Operator
    value: Scalar | tuple[Scalar, ...]


Clause: TypeAlias = tuple[Term, ...]
"""Terms ``OR``-ed together; a builder's clauses are ``AND``-ed."""


def check_string(value: str, what: str = "value") -> str:
    """Return ``value`` if it can go into an expression, else raise :class:`ValueError`."""
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a string, got {type(value).__name__}")
    if len(value) > MAX_LITERAL_LENGTH:
        raise ValueError(
            f"{what} is {len(value)} characters long; at most {MAX_LITERAL_LENGTH} are allowed"
        )
    for ch in value:
        category = unicodedata.category(ch)
        if category == "Cc":
            raise ValueError(f"{what} must not contain control characters (found {ch!r})")
        if category == "Cs":
            raise ValueError(f"{what} must not contain lone surrogates (found {ch!r})")
    return value


def quote_string(value: str, what: str = "value") -> str:
    """``value`` as a double-quoted expression literal (backslash and quote escaped)."""
    check_string(value, what)
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_literal(value: Scalar | Sequence[Scalar], what: str = "value") -> str:
    """A checked literal: string, bool, int, finite float, or a list of those."""
    if isinstance(value, str):
        return quote_string(value, what)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        if abs(value) >= 2**63:
            raise ValueError(f"{what} {value} does not fit in INT64")
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{what} must be a finite number, got {value!r}")
        return repr(value)
    if isinstance(value, Sequence):
        _check_list(value, what)
        return "[" + ", ".join(render_literal(v, what) for v in value) + "]"
    raise ValueError(f"{what} has unsupported type {type(value).__name__}")


def _check_value(value: Scalar | Sequence[Scalar], what: str) -> None:
    """Template mode: run the same checks as the literal rendering, render nothing."""
    render_literal(value, what)


def _check_list(values: Sequence[Any], what: str) -> None:
    if not values:
        raise ValueError(f"{what}: an empty list matches nothing; leave the clause out")
    if len(values) > MAX_LIST_LENGTH:
        raise ValueError(f"{what}: at most {MAX_LIST_LENGTH} values per list, got {len(values)}")


def _field(name: str) -> str:
    if not _FIELD.match(name):
        raise ValueError(f"invalid field name {name!r}")
    return name


class ExpressionBuilder:
    """Collects ``AND``-ed clauses; :meth:`build` gives ``(expression, filter_params)``.

    >>> ExpressionBuilder(templates=False).eq("product_id", 'a"b').build()
    ('product_id == "a\\\\"b"', {})
    """

    def __init__(self, *, templates: bool) -> None:
        self.templates = templates
        self._clauses: list[str] = []
        self._terms: list[Clause] = []
        self._params: dict[str, Any] = {}

    def _value(self, value: Scalar | Sequence[Scalar], what: str) -> str:
        if not self.templates:
            return render_literal(value, what)
        _check_value(value, what)
        name = f"p{len(self._params)}"
        self._params[name] = list(value) if isinstance(value, (list, tuple)) else value
        return "{" + name + "}"

    def compare(self, field: str, op: Comparison, value: Scalar) -> ExpressionBuilder:
        if op not in ("==", "!=", ">", ">=", "<", "<="):
            raise ValueError(f"unsupported operator {op!r}")
        self._clauses.append(f"{_field(field)} {op} {self._value(value, field)}")
        self._terms.append((Term(field, op, value),))
        return self

    def eq(self, field: str, value: Scalar) -> ExpressionBuilder:
        return self.compare(field, "==", value)

    def in_(self, field: str, values: Iterable[Scalar]) -> ExpressionBuilder:
        """``field in [...]``; an empty list is an error (it would match nothing)."""
        items = list(values)
        _check_list(items, field)
        self._clauses.append(f"{_field(field)} in {self._value(items, field)}")
        self._terms.append((Term(field, "in", tuple(items)),))
        return self

    def not_in(self, field: str, values: Iterable[Scalar]) -> ExpressionBuilder:
        """``field not in [...]``; an empty list adds no clause."""
        items = list(values)
        if items:
            _check_list(items, field)
            self._clauses.append(f"{_field(field)} not in {self._value(items, field)}")
            self._terms.append((Term(field, "not in", tuple(items)),))
        return self

    def in_categories(self, categories: Iterable[str]) -> ExpressionBuilder:
        """Rows whose category is one of ``categories`` or below one of them.

        ``category_l<d>`` holds each row's ancestor of depth ``d`` (see
        :func:`schema.records.category_levels`), so a category ``C`` of depth ``d`` is the exact
        comparison ``category_l<d> == C``: ``Men/Tops`` matches ``Men/Tops/Tees`` but not
        ``Men/Topsy``. Several categories of one depth become ``category_l<d> in [...]``, and the
        depths are ``or``-ed in one parenthesised clause. Categories are normalized like stored
        ones (:func:`schema.events.normalize_category`; invalid ones raise ``ValueError``); an
        empty list is an error (it would match nothing).
        """
        by_depth: dict[int, list[str]] = {}
        for value in categories:
            check_string(value, "category")
            category = normalize_category(value)
            same_depth = by_depth.setdefault(category_depth(category), [])
            if category not in same_depth:
                same_depth.append(category)
        if not by_depth:
            raise ValueError("categories: an empty list matches nothing; leave the clause out")
        terms: list[str] = []
        structured: list[Term] = []
        for depth in sorted(by_depth):
            field, values = category_level_field(depth), by_depth[depth]
            if len(values) == 1:
                terms.append(f"{field} == {self._value(values[0], field)}")
                structured.append(Term(field, "==", values[0]))
            else:
                _check_list(values, field)
                terms.append(f"{field} in {self._value(values, field)}")
                structured.append(Term(field, "in", tuple(values)))
        self._clauses.append(terms[0] if len(terms) == 1 else "(" + " or ".join(terms) + ")")
        self._terms.append(tuple(structured))
        return self

    def build(self) -> tuple[str, dict[str, Any]]:
        """The ``AND`` of all clauses (``""`` when there are none) and the template params."""
        return " and ".join(self._clauses), dict(self._params)

    def clauses(self) -> tuple[Clause, ...]:
        """The same filter as data: ``AND`` of clauses, each an ``OR`` of :class:`Term` s."""
        return tuple(self._terms)


def in_expression(
    field: str, values: Iterable[Scalar], *, templates: bool
) -> tuple[str, dict[str, Any]]:
    """``field in [...]``, e.g. for ``pk`` or ``product_id`` lists in the sink."""
    return ExpressionBuilder(templates=templates).in_(field, values).build()
