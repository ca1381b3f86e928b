"""Typed search filters: the contract callers fill in. :func:`add_filter` compiles one onto the
store's :class:`store.expressions.ExpressionBuilder` (which alone turns values into expression
text or template parameters).
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Sequence
from decimal import Decimal
from typing import Annotated

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from schema.events import normalize_category
from store.expressions import MAX_LIST_LENGTH, ExpressionBuilder, check_string

_CURRENCY = re.compile(r"^[A-Z]{3}$")


def refuse_non_numbers(value: object) -> object:
    """A number field's check before pydantic reads it: a boolean or a text is refused
    rather than read as one (``True`` was a price bound of 1, ``"50"`` one of 50), and NaN
    or an infinity as not finite (behind this validator pydantic checks the bounds first:
    ``max_price=nan`` was "greater than or equal to 0")."""
    if isinstance(value, bool):
        raise ValueError(f"must be a number, not a boolean ({value})")
    if isinstance(value, str | bytes | bytearray):
        raise ValueError(f"must be a number, not text ({value!r:.40})")
    if isinstance(value, int) and not _fits_a_float(value):
        raise ValueError(f"must be a finite number, not an integer of {_digits(value)} digits "
                         "(beyond a 64-bit float)")
    if (isinstance(value, numbers.Real) and not math.isfinite(value)) or (
            isinstance(value, Decimal) and not value.is_finite()):
        raise ValueError(f"must be a finite number, not {value}")
    return value


def _fits_a_float(value: int) -> bool:
    """Whether ``float(value)`` is a number (an integer of 309 digits or more overflows:
    ``math.isfinite`` raised OverflowError on it, a 500 in the HTTP API)."""
    try:
        float(value)
    except OverflowError:
        return False
    return True


def _digits(value: int) -> str:
    """How many digits ``value`` has, without printing it (Python refuses to print an
    integer of more than 4,300 digits)."""
    magnitude = abs(value)
    digits = math.floor(magnitude.bit_length() * math.log10(2)) + 1 if magnitude else 1
    if digits > 1 and magnitude < 10 ** (digits - 1):  # the estimate is one high below 10**n
        digits -= 1
    return f"{digits:,}"


Number = Annotated[float, BeforeValidator(refuse_non_numbers)]
"""A float that only a number (an int included) gives: the price bounds here, the HTTP API's
prices and threshold."""
Price = Annotated[Number, Field(ge=0, allow_inf_nan=False)]


class SearchFilter(BaseModel):
    """Typed search filter; every field is optional and the given ones are ``AND``-ed.

    * ``categories``: a product matches when its category is one of these or below one of
      them (``Men/Tops`` matches ``Men/Tops/Tees`` but not ``Men/Topsy``).
    * ``min_price`` / ``max_price``: inclusive bounds, in the listing's own currency.
    * ``currency``: ISO-4217 code; combine with a price range to compare like with like.
    * ``exclude_product_ids``: listings to leave out.

    Frozen, lists included: they are kept as tuples (a list could be appended to after the
    checks ran). Numbers must be numbers: ``max_price=True`` or ``"50"`` is refused.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    categories: Sequence[str] = Field(default=(), max_length=64)
    min_price: Price | None = None
    max_price: Price | None = None
    currency: str | None = None
    exclude_product_ids: Sequence[str] = Field(default=(), max_length=MAX_LIST_LENGTH)

    @field_validator("categories", "exclude_product_ids", mode="before")
    @classmethod
    def _a_list(cls, values: object) -> object:
        if isinstance(values, str | bytes):
            raise ValueError(f"must be a list of strings, not one ({values!r:.40})")
        return values

    @field_validator("categories")
    @classmethod
    def _categories(cls, values: Sequence[str]) -> tuple[str, ...]:
        out: list[str] = []
        for value in values:
            check_string(value, "category")
            normalized = normalize_category(value)
            if normalized not in out:
                out.append(normalized)
        return tuple(out)

    @field_validator("currency")
    @classmethod
    def _currency(cls, value: str | None) -> str | None:
        if value is not None and not _CURRENCY.match(value):
            raise ValueError("currency must be an ISO-4217 code of three capital letters")
        return value

    @field_validator("exclude_product_ids")
    @classmethod
    def _product_ids(cls, values: Sequence[str]) -> tuple[str, ...]:
        for value in values:
            check_string(value, "product id")
            if not value:
                raise ValueError("product ids must not be empty")
        return tuple(dict.fromkeys(values))

    @property
    def narrows(self) -> bool:
        """Whether it keeps only part of the catalog (a category, a price bound, a currency),
        rather than leaving out a few listed products: a server index searches such a
        filter exhaustively (store.engine.search_params)."""
        return bool(self.categories) or self.currency is not None or (
            self.min_price is not None or self.max_price is not None)

    @model_validator(mode="after")
    def _range(self) -> SearchFilter:
        if (
            self.min_price is not None
            and self.max_price is not None
            and self.min_price > self.max_price
        ):
            raise ValueError(
                f"min_price ({self.min_price}) must not be greater than max_price "
                f"({self.max_price})"
            )
        return self


def add_filter(builder: ExpressionBuilder, search_filter: SearchFilter | None) -> ExpressionBuilder:
    """Add the clauses of a :class:`SearchFilter` to ``builder`` (nothing for ``None``)."""
    if search_filter is None:
        return builder
    if search_filter.categories:
        builder.in_categories(search_filter.categories)
    if search_filter.min_price is not None:
        builder.compare("price", ">=", float(search_filter.min_price))
    if search_filter.max_price is not None:
        builder.compare("price", "<=", float(search_filter.max_price))
    if search_filter.currency is not None:
        builder.eq("currency", search_filter.currency)
    builder.not_in("product_id", search_filter.exclude_product_ids)
    return builder
