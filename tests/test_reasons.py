"""The reason table of docs/hardening.md is the Reason enum: same codes, none missing or extra."""

from __future__ import annotations

import re
from pathlib import Path

from schema.errors import ItemError, ItemFailure, Reason

DOC = Path(__file__).resolve().parent.parent / "docs" / "hardening.md"


def documented_reasons() -> list[str]:
    """The first column of the table under the first heading that mentions "Reasons"."""
    lines = DOC.read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines)
                 if line.startswith("#") and "Reasons" in line)
    codes: list[str] = []
    for line in lines[start + 1:]:
        if line.startswith("#"):
            break
        match = re.match(r"^\|\s*`([a-z_]+)`\s*\|", line)
        if match:
            codes.append(match.group(1))
    return codes


def test_reason_table_equals_the_enum() -> None:
    codes = documented_reasons()
    assert len(codes) == len(set(codes)), "a reason is listed twice"
    assert sorted(codes) == sorted(r.value for r in Reason)


def test_item_error_carries_its_reason() -> None:
    error = ItemError(Reason.TIMEOUT, "slow")
    assert (error.failure.reason, error.failure.detail) == (Reason.TIMEOUT, "slow")
    assert str(error) == "timeout: slow" and Reason.TIMEOUT == "timeout"


def test_details_have_their_control_characters_escaped() -> None:
    # A detail may quote a sender or a server; it goes into log lines and a Kafka header.
    raw = "host\x00.evil\r\nforged: 1\x1b[2J\x85\u2028é"
    for failure in (ItemError(Reason.BAD_REFERENCE, raw).failure,
                    ItemFailure(Reason.TIMEOUT, raw)):
        assert failure.detail.isprintable()
        assert failure.detail == "host\\x00.evil\\x0d\\x0aforged: 1\\x1b[2J\\x85\\u2028é"


def test_every_reason_is_a_dead_letter_an_image_failure_or_stale() -> None:
    """The metrics declare a series per dead-letter and image reason (serve/metrics.py): a
    reason added to the enum but to neither list would have no series until it happened."""
    from schema.errors import DEAD_LETTER_REASONS, IMAGE_REASONS

    groups = [*DEAD_LETTER_REASONS, *IMAGE_REASONS, Reason.STALE_VERSION]
    assert sorted(groups) == sorted(Reason)
