"""A table of (nearly) every built-in PostgreSQL type, and Hypothesis strategies that write
values for it as PostgreSQL text, for round-trip tests between two databases.

Each column's strategy gives the value's text (or None for NULL); the row is inserted
as `%s::type` per column, so PostgreSQL parses every value itself.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any

from hypothesis import strategies as st

from cdc_bridge.peer import codec

# What the table's types need besides the built-ins: an enum, a domain, a composite.
TYPES_DDL = """
CREATE TYPE public.mood AS ENUM ('sad', 'ok', 'happy', 'ünïcødé ☃');
CREATE DOMAIN public.amount AS numeric(20, 6) CHECK (VALUE > -1000000000);
CREATE TYPE public.address AS (street text, zip integer, price numeric, tags text[]);
"""


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    values: st.SearchStrategy[str | None]

    def cast(self) -> str:
        return f"%s::{self.type}"


def _nullable(strategy: st.SearchStrategy[str]) -> st.SearchStrategy[str | None]:
    return st.none() | strategy


# ------------------------------------------------------------------ numbers

# Digits and scale drawn apart, so trailing zeros, 30-digit values and long fractions all come.
_numeric_finite = st.builds(
    lambda digits, scale: str(Decimal(digits).scaleb(-scale)),
    st.integers(min_value=-(10**40), max_value=10**40),
    st.integers(min_value=0, max_value=20),
)
numeric_text = _numeric_finite | st.sampled_from(["NaN", "Infinity", "-Infinity", "1.10", "0.000"])
numeric_20_6 = st.builds(
    lambda v: str(Decimal(v).scaleb(-6)),
    st.integers(min_value=-(10**14) + 1, max_value=10**20 - 1),
)
big_integer = st.integers(min_value=-(10**38), max_value=10**38).map(str)


def _float_text(value: float) -> str:
    return {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}.get(repr(value), repr(value))


# -0 is drawn now and then on purpose: jsonb numbers have no negative zero.
double_text = (st.floats(allow_nan=True, allow_infinity=True) | st.just(-0.0)).map(_float_text)
real_text = (st.floats(width=32, allow_nan=True, allow_infinity=True) | st.just(-0.0)).map(
    _float_text
)

# ------------------------------------------------------------------ text and bytes

# Every plane, no NUL (text cannot hold it) and no lone surrogates (not UTF-8).
unicode_text = st.text(st.characters(min_codepoint=1, blacklist_categories=("Cs",)), max_size=40)
bytea_text = st.binary(max_size=40).map(lambda b: "\\x" + b.hex())

# ------------------------------------------------------------------ date and time


def _bc(year: int, bc: bool) -> str:
    return " BC" if bc and year <= 4713 else ""  # PostgreSQL's dates begin in 4714 BC


def _date_text(d: date, bc: bool) -> str:
    return d.isoformat() + _bc(d.year, bc)


date_text = st.builds(_date_text, st.dates(), st.booleans()) | st.sampled_from(
    ["infinity", "-infinity", "294276-12-31", "4713-01-01 BC"]
)
_datetime = st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31))
timestamp_text = st.builds(
    lambda dt, bc: dt.isoformat(sep=" ") + _bc(dt.year, bc), _datetime, st.booleans()
) | st.sampled_from(["infinity", "-infinity"])
_offset = st.integers(min_value=-15 * 60, max_value=15 * 60).map(
    lambda m: f"{'-' if m < 0 else '+'}{abs(m) // 60:02d}:{abs(m) % 60:02d}"
)
timestamptz_text = st.builds(
    lambda dt, off: dt.isoformat(sep=" ") + off, _datetime, _offset
) | st.sampled_from(["infinity", "-infinity"])
time_text = st.times().map(time.isoformat)
timetz_text = st.builds(lambda t, off: t.isoformat() + off, st.times(), _offset)


def _clock(us: int) -> str:
    seconds, micro = divmod(abs(us), 10**6)
    sign = "-" if us < 0 else ""
    return f"{sign}{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}.{micro:06d}"


interval_text = st.builds(
    lambda y, mo, d, us: f"{y} years {mo} mons {d} days {_clock(us)}",
    st.integers(-10_000, 10_000),
    st.integers(-11, 11),
    st.integers(-40_000, 40_000),
    st.integers(-(10**14), 10**14),
)

# ------------------------------------------------------------------ json


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**40), max_value=10**40)
    | _numeric_finite.map(Decimal)
    | unicode_text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(unicode_text, inner, max_size=4),
    max_leaves=12,
)


def _nest(value: Any, depth: int) -> Any:
    for level in range(depth):
        value = [value] if level % 2 else {"d": value}
    return value


# Mostly small documents; now and then one nested far past Python's recursion limit,
# and the document `null` itself (not SQL NULL).
jsonb_text = st.builds(
    lambda v, depth: codec.dumps_text(_nest(v, depth)),
    json_values,
    st.sampled_from([0, 0, 0, 1, 3, 2000]),
)


def _spaced(text: str, gaps: list[str]) -> str:
    """`text` with spaces after each comma and colon: json keeps them, jsonb does not.

    Inside strings too (still valid JSON: a space, unlike a newline, may stand in one).
    """
    out, n = [], 0
    for char in text:
        out.append(char)
        if char in ",:":
            out.append(gaps[n % len(gaps)])
            n += 1
    return "".join(out)


# json keeps its exact text: spacing, key order and duplicate keys.
json_text = (
    st.builds(_spaced, jsonb_text, st.lists(st.sampled_from(["", " ", "   "]), min_size=1))
    | st.builds(
        lambda a, b: f'{{"b": {a},  "a": {b}, "a": {a}}}',
        st.integers(-(10**40), 10**40),
        st.integers(),
    )
    | st.sampled_from(
        ["null", " null ", '"x"', ' "x" ', "[1.10, 100000000000000000000000000000001]", "{}"]
    )
)

# ------------------------------------------------------------------ arrays


def _array_text(rows: list[list[int | None]], lower: tuple[int, int] | None) -> str:
    def element(v: int | None) -> str:
        return "NULL" if v is None else str(v)

    bounds = ""
    if lower is not None:  # explicit bounds: '[0:1][-3:-1]={...}'
        first, second = lower
        bounds = f"[{first}:{first + len(rows) - 1}][{second}:{second + len(rows[0]) - 1}]="
    return bounds + "{" + ",".join("{" + ",".join(map(element, row)) + "}" for row in rows) + "}"


_lower_bounds = st.none() | st.tuples(st.integers(-5, 5), st.integers(-5, 5))
int_matrix_text = st.builds(
    _array_text,
    st.integers(1, 3).flatmap(
        lambda width: st.lists(
            st.lists(st.none() | st.integers(-(2**31), 2**31 - 1), min_size=width, max_size=width),
            min_size=1,
            max_size=3,
        )
    ),
    _lower_bounds,
)


def _quoted(value: str | None) -> str:
    if value is None:
        return "NULL"
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


text_array_text = st.builds(
    lambda items, lower: (
        ("" if lower is None or not items else f"[{lower}:{lower + len(items) - 1}]=")
        + "{"
        + ",".join(map(_quoted, items))
        + "}"
    ),
    st.lists(st.none() | unicode_text, max_size=4),
    st.none() | st.integers(-3, 3),
)
numeric_array_text = st.lists(st.none() | _numeric_finite, max_size=4).map(
    lambda items: "{" + ",".join("NULL" if i is None else i for i in items) + "}"
)

# ------------------------------------------------------------------ network, bits, misc

inet_text = st.ip_addresses().map(str)
cidr_text = st.ip_addresses(v=4).flatmap(
    lambda a: st.integers(0, 32).map(lambda p: _network(str(a), p))
)


def _network(address: str, prefix: int) -> str:
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False))


macaddr_text = st.binary(min_size=6, max_size=6).map(lambda b: ":".join(f"{x:02x}" for x in b))
bit_text = st.text("01", min_size=8, max_size=8)
varbit_text = st.text("01", max_size=40)
money_text = st.integers(-(2**63) + 1, 2**63 - 1).map(lambda c: str(Decimal(c).scaleb(-2)))
_words = st.lists(st.text("abcdéfg", min_size=1, max_size=6), max_size=5)
xml_text = _words.map(lambda ws: "<doc>" + "".join(f"<w n='{w}'>{w}</w>" for w in ws) + "</doc>")
tsvector_text = _words.map(lambda ws: " ".join(f"'{w}':{i + 1}" for i, w in enumerate(ws)))
mood_text = st.sampled_from(["sad", "ok", "happy", "ünïcødé ☃"])
address_text = st.builds(
    lambda street, zip_, price, tags: (
        "("
        + ",".join(
            [
                _quoted(street),
                "" if zip_ is None else str(zip_),
                "" if price is None else price,
                _quoted(tags),
            ]
        )
        + ")"
    ),
    st.none() | unicode_text,
    st.none() | st.integers(0, 99999),
    st.none() | _numeric_finite,
    text_array_text,
)


def _range_text(low: int | None, high: int | None, bounds: str) -> str:
    return f"{bounds[0]}{'' if low is None else low},{'' if high is None else high}{bounds[1]}"


int_range_text = (
    st.builds(
        lambda a, b, bounds: _range_text(min(a, b), max(a, b) + 1, bounds),
        st.integers(-1000, 1000),
        st.integers(-1000, 1000),
        st.sampled_from(["[)", "(]", "[]", "()"]),
    )
    | st.just("empty")
    | st.just("(,5]")
)
num_range_text = st.builds(
    lambda a, b: f"[{min(a, b)},{max(a, b)})",
    _numeric_finite.map(Decimal),
    _numeric_finite.map(Decimal),
)
tstz_range_text = st.builds(
    lambda a, b, off: (
        f'["{min(a, b).isoformat(sep=" ")}{off}","{max(a, b).isoformat(sep=" ")}{off}"]'
    ),
    _datetime,
    _datetime,
    _offset,
)
multirange_text = st.lists(int_range_text, max_size=3).map(lambda rs: "{" + ",".join(rs) + "}")

COLUMNS: tuple[Column, ...] = (
    Column("n", "numeric", _nullable(numeric_text)),
    Column("n20_6", "numeric(20,6)", _nullable(numeric_20_6)),
    Column("big", "numeric", _nullable(big_integer)),
    Column("i2", "smallint", _nullable(st.integers(-(2**15), 2**15 - 1).map(str))),
    Column("i4", "integer", _nullable(st.integers(-(2**31), 2**31 - 1).map(str))),
    Column("i8", "bigint", _nullable(st.integers(-(2**63), 2**63 - 1).map(str))),
    Column("f4", "real", _nullable(real_text)),
    Column("f8", "double precision", _nullable(double_text)),
    Column("b", "boolean", _nullable(st.sampled_from(["true", "false"]))),
    Column("t", "text", _nullable(unicode_text)),
    Column("vc", "varchar(40)", _nullable(unicode_text)),
    Column("ch", "char(5)", _nullable(st.text("abc xyz", max_size=5))),
    Column("by", "bytea", _nullable(bytea_text)),
    Column("d", "date", _nullable(date_text)),
    Column("ts", "timestamp", _nullable(timestamp_text)),
    Column("tz", "timestamptz", _nullable(timestamptz_text)),
    Column("tm", "time", _nullable(time_text)),
    Column("ttz", "timetz", _nullable(timetz_text)),
    Column("iv", "interval", _nullable(interval_text)),
    Column("js", "json", _nullable(json_text)),
    Column("jb", "jsonb", _nullable(jsonb_text)),
    Column("im", "integer[]", _nullable(int_matrix_text)),
    Column("ta", "text[]", _nullable(text_array_text)),
    Column("na", "numeric[]", _nullable(numeric_array_text)),
    Column("u", "uuid", _nullable(st.uuids().map(str))),
    Column("ip", "inet", _nullable(inet_text)),
    Column("net", "cidr", _nullable(cidr_text)),
    Column("mac", "macaddr", _nullable(macaddr_text)),
    Column("bt", "bit(8)", _nullable(bit_text)),
    Column("vb", "varbit", _nullable(varbit_text)),
    Column("m", "money", _nullable(money_text)),
    Column("x", "xml", _nullable(xml_text)),
    Column("tv", "tsvector", _nullable(tsvector_text)),
    Column("mood", "public.mood", _nullable(mood_text)),
    Column("amt", "public.amount", _nullable(numeric_20_6)),
    Column("addr", "public.address", _nullable(address_text)),
    Column("ir", "int4range", _nullable(int_range_text)),
    Column("nr", "numrange", _nullable(num_range_text)),
    Column("tr", "tstzrange", _nullable(tstz_range_text)),
    Column("mr", "int4multirange", _nullable(multirange_text)),
)

NAMES = tuple(c.name for c in COLUMNS)


def table_ddl(name: str) -> str:
    columns = ", ".join(f"{c.name} {c.type}" for c in COLUMNS)
    return f"CREATE TABLE public.{name} (id bigint PRIMARY KEY, {columns});"


XML = "x"  # PostgreSQL built without libxml (the embedded one) cannot read xml values


def rows(xml: bool = True) -> st.SearchStrategy[dict[str, str | None]]:
    values = {c.name: c.values for c in COLUMNS}
    if not xml:
        values[XML] = st.none()
    return st.fixed_dictionaries(values)


def without_xml(row: dict[str, str | None], xml: bool) -> dict[str, str | None]:
    return row if xml else {**row, XML: None}


def insert_sql(table: str) -> str:
    casts = ", ".join(c.cast() for c in COLUMNS)
    return f"INSERT INTO public.{table} (id, {', '.join(NAMES)}) VALUES (%s, {casts})"  # noqa: S608


def update_sql(table: str) -> str:
    sets = ", ".join(f"{c.name} = {c.cast()}" for c in COLUMNS)
    return f"UPDATE public.{table} SET {sets} WHERE id = %s"  # noqa: S608


def params(row: dict[str, str | None]) -> list[str | None]:
    return [row[n] for n in NAMES]


# The values the issue names, always tried (Hypothesis may not draw them in a short run).
EDGES: dict[str, str | None] = {
    "n": "1234567.123456789012",
    "n20_6": "12345678901234.123456",
    "big": "123456789012345678901234567890",
    "i2": "-32768",
    "i4": "2147483647",
    "i8": "-9223372036854775808",
    "f4": "1e-45",
    "f8": "-5e-324",
    "b": "false",
    "t": "a\U0001f600\u4e2d\U000e0001\u00e9'\"\\",
    "vc": "\U0010fffd",
    "ch": "ab",
    "by": "\\x00ff10",
    "d": "4713-01-01 BC",
    "ts": "294276-12-31 23:59:59.999999",
    "tz": "-infinity",
    "tm": "24:00:00",
    "ttz": "23:59:59.999999-15:59",
    "iv": "-178000000 years 1 mons -3 days 01:02:03.000004",
    "js": '{"b": 1,  "a": 2, "a": [1.10, 100000000000000000000000000000001]}\n',
    "jb": codec.dumps_text(_nest({"n": 10**30, "p": Decimal("1.10")}, 2000)),
    "im": "[0:1][-2:0]={{1,NULL,3},{NULL,NULL,6}}",
    "ta": '[0:4]={"a,b","c\\"d",NULL,"NULL",""}',
    "na": "{1.10,NaN,Infinity,-Infinity,NULL,0.000}",
    "u": "00000000-0000-0000-0000-000000000000",
    "ip": "2001:db8::1/64",
    "net": "10.0.0.0/8",
    "mac": "08:00:2b:01:02:03",
    "bt": "10101010",
    "vb": "",
    "m": "-92233720368547758.08",
    "x": "<a b='1'>x &amp; y</a>",
    "tv": "'fat':2 'cat':3 'rat':1",
    "mood": "ünïcødé ☃",
    "amt": "-999999999.999999",
    "addr": '("x, y",12345,1.10,"{a,NULL}")',
    "ir": "empty",
    "nr": "(,1.10]",
    "tr": "[-infinity,2026-01-01 00:00:00+00)",
    "mr": "{[1,3),[5,7)}",
}
EDGES_NEGATED: dict[str, str | None] = {
    **dict.fromkeys(EDGES),
    "n": "NaN",
    "n20_6": "-0.000001",
    "big": "-123456789012345678901234567890",
    "f4": "-0",
    "f8": "-0",
    "js": " null ",
    "jb": "null",
    "im": "{1,2,3}",
    "d": "infinity",
    "na": "{{1.10,2.20},{NULL,3}}",
}
