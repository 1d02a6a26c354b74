"""The REST adapter's pieces that are not HTTP: request bodies, and the cross-reference.

- Bodies: `rest.body` maps JSON pointers of the request body to fields of the change,
  constants, or casts (`{field: price, cast: string, scale: 2}` sends "12.50"), building
  nested objects as needed. Without `rest.body`, the body is the change's fields, renamed.
- The cross-reference (`xref`): for an API that gives each record its own id on create,
  the bridge keeps (table, our key) -> the API's id in the bridge schema, and fills `{peer_id}`
  in the update, delete and read paths with it. It is written as soon as the API answered
  a create, before the change is acknowledged, so a relay that dies in between sends an
  update next time, not a second create.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation, localcontext
from typing import Any

import psycopg
from jsonpointer import JsonPointer, JsonPointerException, resolve_pointer

from cdc_bridge import sql as queries
from cdc_bridge.config import BodyValue, RestTableMapping
from cdc_bridge.errors import BodyError


def body_of(mapping: RestTableMapping, fields: Mapping[str, Any]) -> dict[str, Any]:
    """The request body for a change whose new values are `fields`."""
    if mapping.body is None:
        return {mapping.rename.get(k, k): v for k, v in fields.items()}
    body: dict[str, Any] = {}
    for pointer, value in mapping.body.items():
        if value.field is not None and value.field not in fields:
            continue  # a partial update: fields not in the change are left as they are
        _put(body, pointer, _value(value, fields))
    return body


def _value(spec: BodyValue, fields: Mapping[str, Any]) -> Any:
    if spec.field is None:
        return spec.const
    value = fields[spec.field]
    if value is None or spec.cast is None:
        return value
    try:
        if spec.cast == "integer":
            return int(Decimal(str(value)))
        if spec.cast == "number":
            return Decimal(str(value))
        if spec.scale is not None:
            number = Decimal(str(value))
            # Enough precision for every digit: money of 30 digits is not rounded away.
            with localcontext(prec=max(28, len(number.as_tuple().digits) + spec.scale + 2)):
                step = Decimal(1).scaleb(-spec.scale)
                return str(number.quantize(step, rounding=ROUND_HALF_EVEN))
        return str(value)
    except (InvalidOperation, ValueError):
        raise BodyError(f"{spec.field} = {value!r} cannot be cast to {spec.cast}") from None


def _put(document: dict[str, Any], pointer: str, value: Any) -> None:
    parts = JsonPointer(pointer).parts
    target = document
    for part in parts[:-1]:
        child = target.setdefault(part, {})
        if not isinstance(child, dict):
            raise BodyError(f"{pointer}: {part!r} is both a value and an object in rest.body")
        target = child
    target[parts[-1]] = value


def pointed_id(answer: Any, pointer: str) -> str | None:
    """The API's id at `pointer` in an answer, as text (None when it is not there)."""
    try:
        found = resolve_pointer(answer, pointer)
    except JsonPointerException:
        return None
    return None if found is None or isinstance(found, dict | list) else str(found)


class Xref:
    """(table, our key) -> the API's id, in the bridge schema (one connection, lazily)."""

    def __init__(self, dsn: str, schema: str) -> None:
        self._dsn, self._schema = dsn, schema
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._opening = asyncio.Lock()  # records are sent side by side: connect once

    async def _connection(self) -> psycopg.AsyncConnection[Any]:
        async with self._opening:
            if self._conn is None or self._conn.closed:
                self._conn = await psycopg.AsyncConnection.connect(
                    self._dsn, autocommit=True, application_name="cdc-bridge relay (xref)"
                )
            return self._conn

    async def get(self, table: str, key_text: str) -> str | None:
        conn = await self._connection()
        cursor = await conn.execute(
            queries.query("peer_xref_get", schema=self._schema), {"table": table, "key": key_text}
        )
        row = await cursor.fetchone()
        return None if row is None else str(row[0])

    async def save(self, table: str, key_text: str, peer_id: str) -> None:
        conn = await self._connection()
        await conn.execute(
            queries.query("peer_xref_save", schema=self._schema),
            {"table": table, "key": key_text, "peer_id": peer_id},
        )

    async def forget(self, table: str, key_text: str) -> None:
        conn = await self._connection()
        await conn.execute(
            queries.query("peer_xref_forget", schema=self._schema),
            {"table": table, "key": key_text},
        )

    async def aclose(self) -> None:
        if self._conn is not None:
            await self._conn.close()
