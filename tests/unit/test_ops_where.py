"""The snapshot's `--where`: validated, and every column bound to the table alias."""

from __future__ import annotations

import pytest

from cdc_bridge.errors import FilterError
from cdc_bridge.ops.snapshot import bound_where


def test_columns_are_quoted_and_qualified_values_stay_literals() -> None:
    assert bound_where("lower(name) = 'o''neil' AND id > 3") == (
        'LOWER("t"."name") = \'o\'\'neil\' AND "t"."id" > 3'
    )


def test_a_quote_in_a_column_name_cannot_escape_the_identifier() -> None:
    assert bound_where('"a""b" = 1') == '"t"."a""b" = 1'


@pytest.mark.parametrize(
    "text", ["id = 1; DROP TABLE customers", "id IN (SELECT 1)", "pg_sleep(1) IS NULL"]
)
def test_anything_but_a_plain_condition_is_refused(text: str) -> None:
    with pytest.raises(FilterError):
        bound_where(text)
