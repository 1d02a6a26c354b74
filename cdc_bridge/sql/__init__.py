"""Runtime SQL, kept in `.sql` files of this package and used by name.

A file holds blocks headed `-- name: <query_name>`. `{schema}` and other `{placeholders}`
are filled with `psycopg.sql` objects (identifiers are quoted, never interpolated); values
are bound as `%(param)s` parameters. Literal braces in SQL text are written `{{` and `}}`.
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources
from typing import Any

from psycopg import sql

_HEADER = re.compile(r"^-- name: ([a-z_][a-z0-9_]*)\s*$", re.MULTILINE)
_DOLLAR_TAG = re.compile(r"\$[A-Za-z_][A-Za-z0-9_]*\$")


@cache
def _all_queries() -> dict[str, str]:
    found: dict[str, str] = {}
    for entry in sorted(resources.files(__package__).iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".sql"):
            continue
        for name, text in _split(entry.read_text(encoding="utf-8")).items():
            if name in found:
                raise RuntimeError(f"query {name!r} is defined twice (second in {entry.name})")
            found[name] = text
    return found


def _split(text: str) -> dict[str, str]:
    blocks: dict[str, str] = {}
    matches = list(_HEADER.finditer(text))
    for i, match in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        blocks[match.group(1)] = text[match.end() : end].strip() + "\n"
    return blocks


def raw(name: str) -> str:
    """The text of a query, placeholders unfilled."""
    try:
        return _all_queries()[name]
    except KeyError:
        raise KeyError(f"no SQL block named {name!r} in cdc_bridge/sql/*.sql") from None


def query(name: str, schema: str | None = None, **parts: Any) -> sql.Composed:
    """A query with `{schema}` (and any other placeholder) filled in safely.

    Strings in `parts` become identifiers; pass psycopg.sql objects for anything else.
    """
    return _format(name, raw(name), schema, parts)


def compact_query(name: str, schema: str | None = None, **parts: Any) -> sql.Composed:
    """`query`, from the block without its comment lines and indentation.

    For statements composed of many blocks and run often: psycopg parses the placeholders
    of a statement longer than 4 KiB again at every execution. The template is compacted
    before values are filled in, so a literal keeps its line breaks and spaces.
    """
    return _format(name, _compact_template(name), schema, parts)


@cache
def _compact_template(name: str) -> str:
    lines = (line.strip() for line in raw(name).splitlines())
    return "\n".join(line for line in lines if line and not line.startswith("--"))


def _format(
    name: str, template: str, schema: str | None, parts: dict[str, Any]
) -> sql.Composed:
    fill: dict[str, sql.Composable] = {}
    if schema is not None:
        fill["schema"] = sql.Identifier(schema)
    for key, value in parts.items():
        fill[key] = value if isinstance(value, sql.Composable) else sql.Identifier(value)
    for tag in _dollar_tags(name):
        template = _unused_tag(template, tag, fill)
    return sql.SQL(template).format(**fill)


@cache
def _dollar_tags(name: str) -> tuple[str, ...]:
    """The dollar-quote tags (`$body$`) a block uses around function or DO bodies."""
    return tuple(sorted(set(_DOLLAR_TAG.findall(raw(name)))))


def _unused_tag(template: str, tag: str, fill: dict[str, sql.Composable]) -> str:
    """`template` with `tag` renamed if a filled-in name or value contains it.

    A quoted identifier or literal inside a dollar-quoted body is still plain text to the
    dollar quote: a table named `x$body$y` would end the body early and run the rest as
    SQL. Such names are legal, so the tag moves out of their way instead.
    """
    rendered = sql.SQL(template).format(**fill).as_string(None)
    if rendered.count(tag) == template.count(tag):
        return template
    suffix = 1
    while (renamed := f"{tag[:-1]}_{suffix}$") in rendered:
        suffix += 1
    return template.replace(tag, renamed)


def names() -> list[str]:
    return sorted(_all_queries())
