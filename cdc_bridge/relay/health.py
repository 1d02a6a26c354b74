"""The relay's health as `/healthz` answers it, and the outbox probe behind it.

Healthy means changes can flow and do: the database answers, the peer has not been
unreachable for longer than `relay.peer_unreachable_grace_s`, and the oldest undelivered
change is not older than `relay.lag_threshold_s`. The age is read from the outbox at each
request (one primary-key probe), not remembered from the relay's last read: a relay whose
lanes are all busy retrying reads nothing new, yet its backlog keeps ageing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import psycopg

from cdc_bridge import outbox
from cdc_bridge.config import RelayConfig
from cdc_bridge.db import error_line

PROBE_TIMEOUT_S = 5.0

Connect = Callable[[], Awaitable[psycopg.AsyncConnection[Any]]]


@dataclass(frozen=True)
class Observed:
    """What the relay knows at one moment (the inputs of `report`)."""

    role: str
    database_error: str | None  # None: the database answers
    peer_unreachable_s: float | None  # None: the peer answered the last attempt
    oldest_pending_s: float | None  # None: nothing pending, or not known


def problems(observed: Observed, relay: RelayConfig) -> list[str]:
    """Why the relay is unhealthy (pure: no I/O); empty when it is healthy."""
    found = []
    if observed.database_error is not None:
        found.append(f"database unreachable: {observed.database_error}")
    grace = relay.peer_unreachable_grace_s
    if observed.peer_unreachable_s is not None and observed.peer_unreachable_s > grace:
        found.append(
            f"peer unreachable for {observed.peer_unreachable_s:.0f}s "
            f"(relay.peer_unreachable_grace_s: {grace:g}s)"
        )
    lag = relay.lag_threshold_s
    if observed.oldest_pending_s is not None and observed.oldest_pending_s > lag:
        found.append(
            f"oldest pending change is {observed.oldest_pending_s:.0f}s old "
            f"(relay.lag_threshold_s: {lag:g}s)"
        )
    return found


def report(observed: Observed, relay: RelayConfig) -> dict[str, object]:
    """The `/healthz` body: `healthy` is false exactly when there are problems."""
    found = problems(observed, relay)
    return {
        "healthy": not found,
        "role": observed.role,
        "database_reachable": observed.database_error is None,
        "peer_reachable": observed.peer_unreachable_s is None,
        "peer_unreachable_s": observed.peer_unreachable_s,
        "oldest_pending_s": observed.oldest_pending_s,
        "problems": found,
    }


class OutboxProbe:
    """Reads the oldest pending change's age on a connection of its own (opened lazily)."""

    def __init__(self, connect: Connect, schema: str) -> None:
        self._connect = connect
        self._schema = schema
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self.error: str | None = None

    async def oldest_pending_s(self) -> float | None:
        """The age, or None (empty outbox, or the probe failed: then `error` says why)."""
        try:
            age = await asyncio.wait_for(self._read(), PROBE_TIMEOUT_S)
        except (psycopg.Error, TimeoutError) as exc:
            self.error = error_line(exc)
            await self.aclose()
            return None
        self.error = None
        return age

    async def _read(self) -> float | None:
        if self._conn is None or self._conn.closed:
            self._conn = await self._connect()
        return await outbox.oldest_pending_age(self._conn, self._schema)

    async def aclose(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()
