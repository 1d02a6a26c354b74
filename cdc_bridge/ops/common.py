"""What every operation needs: the database, the bridge schema, and who is acting."""

from __future__ import annotations

import getpass
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg

from cdc_bridge import db
from cdc_bridge.config import BridgeConfig
from cdc_bridge.errors import UserError
from cdc_bridge.peer import codec


@dataclass(frozen=True)
class Target:
    """The bridge database and schema an operation works on."""

    dsn: str
    schema: str
    system: str

    @classmethod
    def of(cls, config: BridgeConfig) -> Target:
        return cls(config.database.url.get_secret_value(), config.bridge_schema, config.system)

    @contextmanager
    def connect(self, *, autocommit: bool = False) -> Iterator[psycopg.Connection[Any]]:
        with db.connection(self.dsn, autocommit=autocommit) as conn:
            codec.use_exact_json(conn)  # values exact, nesting to any depth
            yield conn


def os_user() -> str:
    """The operator's OS login, recorded in the audits next to the database user."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid:{os.getuid()}"


def parse_change_id(text: str) -> int:
    if not text.isdigit():
        raise UserError(
            f"{text!r} is not a change id; fix: give the number shown by `batches show`"
        )
    return int(text)
