"""Connections. Driver errors are translated here, once, into cdc_bridge errors."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg.rows import dict_row

from cdc_bridge.errors import DatabaseError, DatabaseUnavailable

ORIGIN_SETTING = "cdc_bridge.origin"

_PASSWORD_IN_URL = re.compile(r"(://[^:/@]+:)([^@]*)(@)")
_PASSWORD_IN_KV = re.compile(r"(password\s*=\s*)('[^']*'|\S+)", re.IGNORECASE)


def mask_dsn(dsn: str) -> str:
    """The DSN with any password replaced, fit for logs and error messages."""
    masked = _PASSWORD_IN_URL.sub(r"\1***\3", dsn)
    return _PASSWORD_IN_KV.sub(r"\1***", masked)


# What the operator tools' sessions show in pg_stat_activity (the daemons name their own).
TOOLS_APPLICATION_NAME = "cdc-bridge tools"


def connect(dsn: str, *, autocommit: bool = False, **kwargs: Any) -> psycopg.Connection[Any]:
    kwargs.setdefault("application_name", TOOLS_APPLICATION_NAME)
    try:
        return psycopg.connect(dsn, autocommit=autocommit, **kwargs)
    except psycopg.OperationalError as exc:
        raise DatabaseUnavailable(f"cannot connect to {mask_dsn(dsn)}: {_first_line(exc)}") from exc


@contextmanager
def connection(dsn: str, *, autocommit: bool = False) -> Iterator[psycopg.Connection[Any]]:
    """A connection whose driver errors surface as DatabaseError."""
    conn = connect(dsn, autocommit=autocommit)
    try:
        with conn:
            yield conn
    except psycopg.OperationalError as exc:
        raise DatabaseUnavailable(f"lost {mask_dsn(dsn)}: {_first_line(exc)}") from exc
    except psycopg.Error as exc:
        raise DatabaseError(_first_line(exc)) from exc


def error_line(exc: BaseException) -> str:
    """The first line of an error, any password in it masked: fit for logs and health."""
    return mask_dsn(_first_line(exc))


def dict_cursor(conn: psycopg.Connection[Any]) -> psycopg.Cursor[dict[str, Any]]:
    return conn.cursor(row_factory=dict_row)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else exc.__class__.__name__
