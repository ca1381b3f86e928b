"""Pure unit tests of search.filters: validation, literal escaping and templates."""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from search.filters import SearchFilter, add_filter
from store.expressions import (
    MAX_LITERAL_LENGTH,
    ExpressionBuilder,
    in_expression,
    quote_string,
    render_literal,
)
from tests.hostile import HOSTILE_STRINGS


def to_expression(
    search_filter: SearchFilter | None, templates: bool
) -> tuple[str, dict[str, Any]]:
    """``(expression, filter_params)`` for a filter, as the store builds it."""
    return add_filter(ExpressionBuilder(templates=templates), search_filter).build()


def _unquote(literal: str) -> str:
    """The reading that Milvus' grammar (and milvus-lite's tokenizer) gives a literal."""
    assert literal[0] == literal[-1] == '"'
    out, i, body = [], 0, literal[1:-1]
    while i < len(body):
        ch = body[i]
        if ch == "\\":
            out.append(body[i + 1])
            i += 2
            continue
        assert ch != '"', f"unescaped quote in {literal!r}"
        out.append(ch)
        i += 1
    return "".join(out)


@pytest.mark.parametrize("value", HOSTILE_STRINGS)
def test_quote_string_round_trips_hostile_values(value: str) -> None:
    literal = quote_string(value)
    assert _unquote(literal) == value


def test_quote_string_escapes_backslash_before_quote() -> None:
    assert quote_string('a"b') == '"a\\"b"'
    assert quote_string("a\\") == '"a\\\\"'
    assert quote_string('\\"') == '"\\\\\\""'


@pytest.mark.parametrize("value", ["a\nb", "a\rb", "\x00", "tab\there", "\x7f", "\x85", "\x1b[0m"])
def test_control_characters_are_rejected(value: str) -> None:
    with pytest.raises(ValueError, match="control characters"):
        quote_string(value)


def test_lone_surrogates_are_rejected() -> None:
    with pytest.raises(ValueError, match="surrogates"):
        quote_string("a\ud800b")


def test_over_long_values_are_rejected() -> None:
    assert quote_string("a" * MAX_LITERAL_LENGTH)
    with pytest.raises(ValueError, match="at most 512"):
        quote_string("a" * (MAX_LITERAL_LENGTH + 1))


def test_render_literal_numbers_and_lists() -> None:
    assert render_literal(3) == "3"
    assert render_literal(2.5) == "2.5"
    assert render_literal(True) == "true"
    assert render_literal(["a", 'b"']) == '["a", "b\\""]'
    for bad in (math.inf, -math.inf, math.nan):
        with pytest.raises(ValueError, match="finite"):
            render_literal(bad)
    with pytest.raises(ValueError, match="INT64"):
        render_literal(2**63)
    with pytest.raises(ValueError, match="empty list"):
        render_literal([])


def test_search_filter_validation() -> None:
    SearchFilter(min_price=0, max_price=0)
    with pytest.raises(ValidationError, match="greater than"):
        SearchFilter(min_price=10, max_price=5)
    with pytest.raises(ValidationError):
        SearchFilter(min_price=-1)
    with pytest.raises(ValidationError):
        SearchFilter(max_price=math.inf)
    with pytest.raises(ValidationError):
        SearchFilter(min_price=math.nan)
    for bad in ("usd", "US", "USDX", "U$D", 'U"D'):
        with pytest.raises(ValidationError, match="ISO-4217"):
            SearchFilter(currency=bad)


def test_a_price_bound_must_be_a_finite_number() -> None:
    """``max_price=nan`` said "Input should be greater than or equal to 0"."""
    for bad in (math.nan, math.inf, -math.inf, np.float32("nan"), Decimal("NaN")):
        for field in ("min_price", "max_price"):
            with pytest.raises(ValidationError, match="must be a finite number") as raised:
                SearchFilter(**{field: bad})
            assert "greater than" not in str(raised.value)
    assert SearchFilter(max_price=Decimal("60"), min_price=np.float64(5)).max_price == 60.0
    for huge in (10**400, -(10**400), 10**5000):  # math.isfinite raised OverflowError on them
        with pytest.raises(ValidationError, match=r"not an integer of [\d,]+ digits"):
            SearchFilter(max_price=huge)
    assert SearchFilter(max_price=10**300).max_price == 1e300
    for huge, digits in ((10**400 - 1, "400"), (10**400, "401"), (10**309 - 1, "309"),
                         (-(10**5000), "5,001")):  # exact, also just below a power of ten
        with pytest.raises(ValidationError, match=f"not an integer of {digits} digits"):
            SearchFilter(min_price=huge)
    with pytest.raises(ValidationError, match="control"):
        SearchFilter(categories=["Men\n/Tops"])
    with pytest.raises(ValidationError):
        SearchFilter(categories=["Men//Tops"])
    with pytest.raises(ValidationError, match="at most 512"):
        SearchFilter(categories=["x" * 600])
    with pytest.raises(ValidationError, match="control"):
        SearchFilter(exclude_product_ids=["a\x00"])
    with pytest.raises(ValidationError):
        SearchFilter(unknown=1)  # type: ignore[call-arg]
    f = SearchFilter(categories=[" Men / Tops ", "Men/Tops"])
    assert f.categories == ("Men/Tops",)
    with pytest.raises(ValidationError):
        f.min_price = 3


def test_search_filter_numbers_must_be_numbers() -> None:
    """``max_price=True`` was a bound of 1 and ``"50"`` one of 50 (pydantic's lax mode)."""
    for field in ("min_price", "max_price"):
        with pytest.raises(ValueError, match="must be a number, not a boolean"):
            SearchFilter(**{field: True})
        for text in ("50", b"50", "abc"):
            with pytest.raises(ValueError, match="must be a number, not text"):
                SearchFilter(**{field: text})
    assert SearchFilter(min_price=1, max_price=2.5).max_price == 2.5  # ints are numbers
    with pytest.raises(ValueError, match="a list of strings, not one"):
        SearchFilter(categories="Men/Tops")


def test_search_filter_lists_cannot_change_after_their_checks() -> None:
    """The model was frozen but its lists were not: ``f.categories.append(...)`` added a
    category no check had seen (5,000 hostile ones, say)."""
    f = SearchFilter(categories=["Men"], exclude_product_ids=["p1", "p1"])
    assert f.categories == ("Men",) and f.exclude_product_ids == ("p1",)
    with pytest.raises(AttributeError):
        f.categories.append('x" or 1==1 or "')  # type: ignore[attr-defined]
    with pytest.raises(AttributeError):
        f.exclude_product_ids.append("p2")  # type: ignore[attr-defined]


def test_to_expression_literals() -> None:
    assert to_expression(None, templates=False) == ("", {})
    assert to_expression(SearchFilter(), templates=False) == ("", {})
    f = SearchFilter(
        categories=["Men/Tops", 'x" or 1==1'],
        min_price=5,
        max_price=20.5,
        currency="EUR",
        exclude_product_ids=["p1", 'p"2'],
    )
    expr, params = to_expression(f, templates=False)
    assert params == {}
    assert expr == (
        '(category_l1 == "x\\" or 1==1" or category_l2 == "Men/Tops") and price >= 5.0 '
        'and price <= 20.5 and currency == "EUR" and product_id not in ["p1", "p\\"2"]'
    )


def test_to_expression_templates_never_embed_values() -> None:
    f = SearchFilter(
        categories=['x" or 1==1'], min_price=1, currency="USD", exclude_product_ids=["') or ('"]
    )
    expr, params = to_expression(f, templates=True)
    assert expr == (
        "category_l1 == {p0} and price >= {p1} and currency == {p2} "
        "and product_id not in {p3}"
    )
    assert params == {
        "p0": 'x" or 1==1',
        "p1": 1.0,
        "p2": "USD",
        "p3": ["') or ('"],
    }
    for value in params.values():
        assert str(value) not in expr


def test_templates_apply_the_same_checks() -> None:
    with pytest.raises(ValueError, match="control"):
        ExpressionBuilder(templates=True).eq("product_id", "a\nb")
    with pytest.raises(ValueError, match="at most"):
        in_expression("pk", ["x" * 600], templates=True)


def test_builder_helpers() -> None:
    assert in_expression("pk", ["a#1", 'b"#2'], templates=False) == (
        'pk in ["a#1", "b\\"#2"]',
        {},
    )
    assert in_expression("product_id", ["a"], templates=True) == (
        "product_id in {p0}",
        {"p0": ["a"]},
    )
    expr, _ = ExpressionBuilder(templates=False).eq("model_version", "m").not_in("pk", []).build()
    assert expr == 'model_version == "m"'
    with pytest.raises(ValueError, match="empty list"):
        in_expression("pk", [], templates=False)
    with pytest.raises(ValueError, match="field name"):
        ExpressionBuilder(templates=False).eq("pk or 1==1", "x")
    with pytest.raises(ValueError, match="operator"):
        ExpressionBuilder(templates=False).compare("price", "or", 1)  # type: ignore[arg-type]


def test_categories_become_exact_comparisons_on_their_level() -> None:
    def expr(categories: list[str], templates: bool = False) -> tuple[str, dict[str, object]]:
        return ExpressionBuilder(templates=templates).in_categories(categories).build()

    assert expr(["Men/Tops"]) == ('category_l2 == "Men/Tops"', {})
    assert expr(["Men/Tops/Tees"]) == ('category_l3 == "Men/Tops/Tees"', {})
    # one depth: one `in`; several depths: OR-ed, grouped so that AND-ed clauses bind outside
    assert expr(["Men/Tops", "Women/Dresses", "Men/Tops"]) == (
        'category_l2 in ["Men/Tops", "Women/Dresses"]',
        {},
    )
    assert expr(["A/B/C", "Men", "Women/Dresses", "Kids"]) == (
        '(category_l1 in ["Men", "Kids"] or category_l2 == "Women/Dresses" '
        'or category_l3 == "A/B/C")',
        {},
    )
    assert expr(["A/B/C", "Men", "Kids"], templates=True) == (
        "(category_l1 in {p0} or category_l3 == {p1})",
        {"p0": ["Men", "Kids"], "p1": "A/B/C"},
    )
    # normalized like stored categories; a '/' inside a hostile value only changes its depth
    assert expr([" Men / Tops "]) == ('category_l2 == "Men/Tops"', {})
    assert expr(['x" or category_l1 != "/y']) == (
        'category_l2 == "x\\" or category_l1 != \\"/y"',
        {},
    )
    assert expr(["/".join("abcdefgh")])[0].startswith("category_l8 == ")
    with pytest.raises(ValueError, match="more than 8 levels"):
        expr(["/".join("abcdefghi")])
    with pytest.raises(ValueError, match="non-empty segments"):
        expr(["Men//Tops"])
    with pytest.raises(ValueError, match="control"):
        expr(["Men\n/Tops"])
    with pytest.raises(ValueError, match="empty list"):
        expr([])
    combined, _ = to_expression(
        SearchFilter(categories=["Men", "Women/Dresses"], currency="USD"), templates=False
    )
    assert combined == (
        '(category_l1 == "Men" or category_l2 == "Women/Dresses") and currency == "USD"'
    )
