"""The wire codec: JSON that keeps every value PostgreSQL can hold exactly as it was.

Values travel as PostgreSQL's `to_jsonb` writes them (those jsonb would change, as their
text: docs/protocol.md, "Values"), and jsonb numbers are `numeric`:
`1.10`, `12345678901234.123456` and `10**30` are exact there, and must stay so in
Python. A general-purpose parser would round them through a binary float (orjson, the
standard library without `parse_float`), silently turn integers past 64 bits into floats
(orjson), or refuse them when writing (orjson: "Integer exceeds 64-bit range"). jsonb
may also nest far deeper (thousands of levels) than recursive parsers allow.

So:
- `loads` gives `int` for integers of any size and `Decimal` for every other number
  (its text is kept: `Decimal("1.10")` prints `1.10`), and it has no depth limit.
- `dumps` writes `int` and `Decimal` as their exact number text, at any depth.

Both take orjson's fast path when nothing in the text or value needs more; the exact
path (the standard library's parser with `Decimal`, or ijson's iterative one past
Python's recursion limit; an iterative writer here) only when something does.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import date, datetime, time
from decimal import Decimal
from enum import Enum
from typing import Any

import ijson  # type: ignore[import-untyped]
import orjson
from psycopg.abc import AdaptContext
from psycopg.types.json import set_json_dumps, set_json_loads

from cdc_bridge.errors import CodecError


def use_exact_json(conn: AdaptContext) -> None:
    """json/jsonb read and written through this codec on `conn` (psycopg's default
    parser rounds decimals through float and stops at ~1000 levels)."""
    set_json_loads(loads, conn)
    set_json_dumps(dumps, conn)


def loads(data: bytes | str) -> Any:
    """Parse JSON exactly: integers of any size, `Decimal` for other numbers, any depth."""
    raw = data.encode() if isinstance(data, str) else bytes(data)
    try:
        fast = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return _exact_loads(raw)  # too deep for orjson, or not JSON: the exact path decides
    # orjson reads every non-integer, and every integer past 64 bits, as a float: where
    # one came out, the text is read again exactly.
    return _exact_loads(raw) if _holds_float(fast) else fast


def _holds_float(value: Any) -> bool:
    todo = [value]
    while todo:
        item = todo.pop()
        kind = type(item)
        if kind is float:
            return True
        if kind is dict:
            todo.extend(item.values())
        elif kind is list:
            todo.extend(item)
    return False


def _exact_loads(raw: bytes) -> Any:
    """The standard library's C parser with exact numbers; ijson's iterative one for
    nesting deeper than Python's recursion limit."""
    try:
        # As json.loads reads bytes, with decoders made once: json.loads(raw, parse_float=
        # ...) builds a decoder per call, which cost more than the parse of a small row.
        text = raw.decode(json.detect_encoding(raw), "surrogatepass")
        try:
            return _EXACT.decode(text)
        except ValueError:
            # Perhaps an integer longer than Python reads by default (int_max_str_digits):
            # numeric holds up to 131072 digits before the point. Decimal reads any length
            # (only then: a Python call per integer costs).
            return _EXACT_LONG_INTEGERS.decode(text)
    except RecursionError:
        pass
    except (ValueError, UnicodeDecodeError) as exc:
        raise CodecError(f"not valid JSON: {exc}") from None
    try:
        found = _build(ijson.basic_parse(raw, use_float=False, multiple_values=True))
    except (ijson.JSONError, ijson.IncompleteJSONError, ValueError, UnicodeDecodeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CodecError(f"not valid JSON: {first}") from None
    if len(found) != 1:
        raise CodecError(f"not valid JSON: {len(found)} values where one was expected")
    return found[0]


def _build(events: Iterator[tuple[str, Any]]) -> list[Any]:
    """Values from ijson's parse events, with a stack of open containers (no recursion;
    `ijson.items` would also track each value's path, which costs O(depth) per event)."""
    done: list[Any] = []
    open_: list[tuple[Any, str | None]] = []  # (container, pending key of an object)

    def put(value: Any) -> None:
        if not open_:
            done.append(value)
            return
        container, key = open_[-1]
        if key is None:
            container.append(value)
        else:
            container[key] = value

    for event, value in events:
        if event == "map_key":
            open_[-1] = (open_[-1][0], value)
        elif event in ("start_map", "start_array"):
            container: Any = {} if event == "start_map" else []
            put(container)
            open_.append((container, None))
        elif event in ("end_map", "end_array"):
            open_.pop()
        else:
            put(value)
    return done


def _integer(text: str) -> int | Decimal:
    return int(text) if len(text) <= 4000 else Decimal(text)


def _refuse(text: str) -> Any:
    raise ValueError(f"{text} is not JSON")


_EXACT = json.JSONDecoder(parse_float=Decimal, parse_constant=_refuse)
_EXACT_LONG_INTEGERS = json.JSONDecoder(
    parse_float=Decimal, parse_int=_integer, parse_constant=_refuse
)


def dumps(value: Any, *, sort_keys: bool = False, indent: bool = False) -> bytes:
    """JSON of `value`; `int` and `Decimal` exactly as they are, at any depth.

    `indent` indents by two spaces for people to read, where orjson can write the value
    (values too big or too deep for it are written compact).
    """
    option = (orjson.OPT_SORT_KEYS if sort_keys else 0) | (orjson.OPT_INDENT_2 if indent else 0)
    try:
        return orjson.dumps(value, default=_fragment, option=option)
    except orjson.JSONEncodeError:
        pass  # an integer past 64 bits, or deeper than orjson goes
    return b"".join(_exact_dumps(value, sort_keys))


def dumps_text(value: Any, *, sort_keys: bool = False, indent: bool = False) -> str:
    return dumps(value, sort_keys=sort_keys, indent=indent).decode()


def _fragment(value: Any) -> orjson.Fragment:
    if isinstance(value, Decimal) and value.is_finite():
        return orjson.Fragment(str(value))
    raise TypeError(f"{type(value).__name__} {value!r} has no JSON form")


class _Piece(bytes):
    """Punctuation and keys, written as they are (values are encoded)."""


def _exact_dumps(value: Any, sort_keys: bool) -> Iterator[bytes]:
    """Iterative writer: a stack of open containers instead of recursion."""
    stack: list[Iterator[Any]] = [iter((value,))]
    while stack:
        item = next(stack[-1], _END)
        if item is _END:
            stack.pop()
        elif isinstance(item, _Piece):
            yield item
        elif isinstance(item, dict):
            stack.append(_object_parts(item, sort_keys))
        elif isinstance(item, list | tuple):
            stack.append(_array_parts(item))
        else:
            yield _scalar(item)


_END = object()


def _object_parts(value: dict[Any, Any], sort_keys: bool) -> Iterator[Any]:
    yield _Piece(b"{")
    items = sorted(value.items(), key=lambda kv: kv[0]) if sort_keys else value.items()
    for n, (key, item) in enumerate(items):
        if not isinstance(key, str):
            raise CodecError(f"object key {key!r} is not a string")
        yield _Piece((b"," if n else b"") + orjson.dumps(key) + b":")
        yield item
    yield _Piece(b"}")


def _array_parts(value: list[Any] | tuple[Any, ...]) -> Iterator[Any]:
    yield _Piece(b"[")
    for n, item in enumerate(value):
        if n:
            yield _Piece(b",")
        yield item
    yield _Piece(b"]")


def _scalar(value: Any) -> bytes:
    if isinstance(value, bool) or value is None or isinstance(value, str | float | Enum):
        return orjson.dumps(value)
    if isinstance(value, int):
        return str(value).encode()
    if isinstance(value, Decimal) and value.is_finite():
        return str(value).encode()
    if isinstance(value, datetime | date | time):
        return orjson.dumps(value)
    if isinstance(value, orjson.Fragment):
        return orjson.dumps(value)
    raise CodecError(f"{type(value).__name__} {value!r} has no JSON form")
