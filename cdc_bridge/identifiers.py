"""SQL identifiers from configuration: checked up front, always quoted, never interpolated."""

from __future__ import annotations

from psycopg import sql
from pydantic import BaseModel, ConfigDict

from cdc_bridge.errors import IdentifierError

MAX_IDENTIFIER_BYTES = 63  # PostgreSQL's NAMEDATALEN - 1: longer names are silently truncated


def check_identifier(name: str) -> str:
    """Return `name` if PostgreSQL can hold it exactly; raise IdentifierError otherwise.

    Quotes, semicolons and spaces are fine: every identifier is quoted. A NUL byte is not
    (psycopg.sql.Identifier would silently cut the name there), nor is a name PostgreSQL
    would truncate.
    """
    if not name:
        raise IdentifierError("an empty name cannot be used; fix: give the name")
    if "\x00" in name:
        raise IdentifierError(f"{name!r} contains a NUL byte; fix: remove it")
    size = len(name.encode("utf-8"))
    if size > MAX_IDENTIFIER_BYTES:
        raise IdentifierError(
            f"{name[:20]!r}... is {size} bytes long; PostgreSQL keeps only "
            f"{MAX_IDENTIFIER_BYTES}; fix: use a shorter name"
        )
    return name


class QualifiedName(BaseModel):
    """schema.table, each part an exact (case-sensitive) PostgreSQL identifier."""

    model_config = ConfigDict(frozen=True)

    schema_name: str
    table: str

    @property
    def dotted(self) -> str:
        return f"{self.schema_name}.{self.table}"

    @property
    def identifier(self) -> sql.Identifier:
        return sql.Identifier(self.schema_name, self.table)

    @property
    def quoted(self) -> str:
        """The name as text that `::regclass` (or `to_regclass`) resolves exactly."""
        return ".".join('"' + p.replace('"', '""') + '"' for p in (self.schema_name, self.table))

    @property
    def regclass_literal(self) -> sql.Literal:
        """The name as a quoted text literal that `::regclass` resolves exactly."""
        return sql.Literal(self.quoted)


def parse_qualified_name(label: str) -> QualifiedName:
    """Split `schema.table` (or `table`, meaning public). Double quotes protect dots.

    `"we.ird"."na""me"` names schema `we.ird` and table `na"me`.
    """
    parts = _split_dotted(label)
    if len(parts) == 1:
        parts = ["public", parts[0]]
    if len(parts) != 2:
        raise IdentifierError(
            f"table {label!r} has {len(parts)} dot-separated parts; fix: write schema.table, "
            'and put a name that holds a dot in double quotes ("my.schema".table)'
        )
    return QualifiedName(schema_name=check_identifier(parts[0]), table=check_identifier(parts[1]))


def _split_dotted(label: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    i, quoted = 0, False
    while i < len(label):
        char = label[i]
        if quoted:
            if char == '"' and label[i + 1 : i + 2] == '"':
                current.append('"')
                i += 1
            elif char == '"':
                quoted = False
            else:
                current.append(char)
        elif char == '"':
            quoted = True
        elif char == ".":
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
        i += 1
    if quoted:
        raise IdentifierError(f"table {label!r} has an unclosed double quote; fix: close it")
    parts.append("".join(current))
    return parts
