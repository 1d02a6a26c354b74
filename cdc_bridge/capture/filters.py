"""`where` row filters: parsed with sqlglot, checked against an allowlist, rewritten for triggers.

A filter becomes part of a trigger's WHEN clause, so it may only hold plain comparisons
of the row's own columns: no subqueries, no second statement, and only a few functions.
"""

from __future__ import annotations

from typing import Any, Literal

import sqlglot
from sqlglot import exp

from cdc_bridge.errors import FilterError
from cdc_bridge.identifiers import check_identifier

ALLOWED_FUNCTIONS: tuple[type[exp.Expression], ...] = (
    exp.Lower,
    exp.Upper,
    exp.Coalesce,
    exp.Length,
    exp.Trim,
    exp.Abs,
)

_ALLOWED_NODES: tuple[type[exp.Expression], ...] = (
    exp.Column,
    exp.Identifier,
    exp.Literal,
    exp.Boolean,
    exp.Null,
    exp.Paren,
    exp.And,
    exp.Or,
    exp.Not,
    exp.EQ,
    exp.NEQ,
    exp.GT,
    exp.GTE,
    exp.LT,
    exp.LTE,
    exp.Is,
    exp.In,
    exp.Between,
    exp.Like,
    exp.ILike,
    exp.Add,
    exp.Sub,
    exp.Mul,
    exp.Div,
    exp.Mod,
    exp.Neg,
    exp.Cast,
    exp.DataType,
    exp.DPipe,
    exp.NullSafeEQ,
    exp.NullSafeNEQ,
    *ALLOWED_FUNCTIONS,
)


def parse_where(text: str) -> Any:
    """Parse and check a filter; raise FilterError naming what is not allowed."""
    if "\x00" in text:
        raise FilterError("the filter contains a NUL byte; fix: remove it")
    try:
        statements = sqlglot.parse(text, read="postgres")
    except sqlglot.errors.ParseError as exc:
        raise FilterError(
            f"cannot parse the filter ({_first_error(exc)}); fix: correct the SQL"
        ) from None
    statements = [s for s in statements if s is not None]
    if len(statements) != 1:
        raise FilterError(
            f"the filter holds {len(statements)} statements; fix: write one boolean expression"
        )
    tree: Any = statements[0]
    for node in tree.walk():
        if not isinstance(node, _ALLOWED_NODES):
            raise FilterError(
                f"{_describe(node)} is not allowed in a filter; fix: compare the row's own "
                "columns with constants (functions allowed: lower, upper, coalesce, length, "
                "trim, abs)"
            )
        if isinstance(node, exp.Column) and node.table:
            raise FilterError(
                f"column {node.sql(dialect='postgres')} is qualified; fix: name the column alone"
            )
        if isinstance(node, exp.In) and node.args.get("query") is not None:
            raise FilterError("a subquery is not allowed in a filter; fix: list the values")
    if isinstance(tree, exp.Column | exp.Literal):
        raise FilterError("the filter is not a condition; fix: compare a column, e.g. a = 1")
    return tree


# Computed fields (config `fields.<name>.expr`) may also round, join text and pick.
_EXPRESSION_NODES: tuple[type[exp.Expression], ...] = (
    *_ALLOWED_NODES,
    exp.Round,
    exp.Concat,
    exp.Greatest,
    exp.Least,
    exp.Case,
    exp.If,
    exp.Nullif,
    exp.Floor,
    exp.Ceil,
)


def parse_expression(text: str) -> Any:
    """Parse and check a computed field's expression over the row's own columns."""
    try:
        statements = [s for s in sqlglot.parse(text, read="postgres") if s is not None]
    except sqlglot.errors.ParseError as exc:
        raise FilterError(
            f"cannot parse the expression ({_first_error(exc)}); fix: correct the SQL"
        ) from None
    if "\x00" in text or len(statements) != 1:
        raise FilterError("write one expression over the row's columns, e.g. round(price * 1.2, 2)")
    tree: Any = statements[0]
    for node in tree.walk():
        if not isinstance(node, _EXPRESSION_NODES) or (
            isinstance(node, exp.Column) and node.table
        ):
            raise FilterError(
                f"{_describe(node)} is not allowed in an expression; fix: use the row's own "
                "columns, constants, arithmetic, round, concat, coalesce, case, "
                "greatest and least"
            )
    return tree


def expression_for_row(text: str, row: str) -> str:
    """A computed field's expression with each column bound to `row`, as SQL text."""
    return _bound(parse_expression(text).copy(), row)


def referenced_columns(tree: Any) -> list[str]:
    return sorted({check_identifier(col.name) for col in tree.find_all(exp.Column)})


def for_trigger(text: str, row: Literal["NEW", "OLD", "n", "o"]) -> str:
    """The filter with each column bound to a row (NEW, OLD, or an alias), as SQL text."""
    return _bound(parse_where(text).copy(), row)


def _bound(tree: Any, row: str) -> str:
    def bind(node: exp.Expression) -> exp.Expression:
        if isinstance(node, exp.Column):
            return exp.Column(
                this=exp.Identifier(this=node.name, quoted=True),
                table=exp.Identifier(this=row, quoted=False),
            )
        return node

    bound = tree.transform(bind)
    return str(bound.sql(dialect="postgres", normalize_functions=False))


def _describe(node: Any) -> str:
    if isinstance(node, exp.Anonymous):
        return f"function {node.name}()"
    if isinstance(node, exp.Func):
        return f"function {node.sql_name().lower()}()"
    if isinstance(node, exp.Query | exp.Subquery):
        return "a subquery"
    return f"{node.key.upper()} ({node.sql(dialect='postgres')[:40]})"


def _first_error(exc: sqlglot.errors.ParseError) -> str:
    errors = getattr(exc, "errors", None)
    if errors:
        return str(errors[0].get("description", exc))
    return str(exc).splitlines()[0]
