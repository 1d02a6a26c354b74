"""`where` filters: what is allowed, what is refused and why."""

from __future__ import annotations

import pytest

from cdc_bridge.capture.filters import for_trigger, parse_where, referenced_columns
from cdc_bridge.errors import FilterError

ALLOWED = [
    ("status <> 'draft'", ["status"]),
    ("qty > 0 AND (price BETWEEN 1 AND 10 OR note IS NULL)", ["note", "price", "qty"]),
    ("lower(email) LIKE '%@example.com'", ["email"]),
    ("coalesce(tier, 'basic') IN ('gold', 'silver')", ["tier"]),
    ("NOT archived", ["archived"]),
    ("length(trim(name)) > 0", ["name"]),
    ("abs(balance) < 100 AND kind IS DISTINCT FROM 'x'", ["balance", "kind"]),
    ("amount::numeric > 5", ["amount"]),
    ('"Mixed Case" = 1', ["Mixed Case"]),
]

REFUSED = [
    ("status = 'a'; DROP TABLE customers", "2 statements"),
    ("id IN (SELECT id FROM other)", "subquery"),
    ("EXISTS (SELECT 1)", "not allowed"),
    ("(SELECT count(*) FROM t) > 1", "not allowed"),
    ("pg_sleep(10) IS NULL", "function pg_sleep()"),
    ("now() > created_at", "not allowed"),
    ("random() > 0.5", "not allowed"),
    ("c.status = 'x'", "qualified"),
    ("public.c.status = 'x'", "qualified"),
    ("status = 'a\x00'", "NUL"),
    ("status", "not a condition"),
    ("status = ", "cannot parse"),
]


@pytest.mark.parametrize(("text", "columns"), ALLOWED)
def test_allowed_filters_and_their_columns(text: str, columns: list[str]) -> None:
    assert referenced_columns(parse_where(text)) == columns


@pytest.mark.parametrize(("text", "reason"), REFUSED)
def test_refused_filters_say_why(text: str, reason: str | None) -> None:
    with pytest.raises(FilterError) as refused:
        parse_where(text)
    message = str(refused.value)
    assert "fix:" in message
    if reason is not None:
        assert reason in message


def test_a_trailing_semicolon_alone_is_harmless() -> None:
    # Nothing follows it, so nothing else can run; the filter is still one expression.
    assert referenced_columns(parse_where("a = 1;")) == ["a"]
    with pytest.raises(FilterError, match="2 statements"):
        parse_where("a = 1; SELECT 1")


def test_for_trigger_binds_every_column_to_the_row_and_quotes_it() -> None:
    assert for_trigger("status <> 'draft' AND qty > 0", "NEW") == (
        'NEW."status" <> \'draft\' AND NEW."qty" > 0'
    )
    assert for_trigger('"we""ird" = 1', "OLD") == 'OLD."we""ird" = 1'


def test_for_trigger_leaves_function_names_unquoted() -> None:
    # Unquoted, so PostgreSQL resolves LOWER and lower to the same built-in.
    assert for_trigger("lower(email) = 'a'", "NEW").lower() == "lower(new.\"email\") = 'a'"
