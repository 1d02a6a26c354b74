"""The ship loop's read and plan, when a batch in flight changes while the read runs.

A batch that keeps failing splits: it puts its later transactions back in the outbox and
frees their tokens. If that happens while the loop reads the outbox (an await on
PostgreSQL), the read has left those rows out as in flight; a later transaction of the
same record that the read found must still wait for them.
"""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
import pytest

from cdc_bridge import outbox
from cdc_bridge.peer import codec, kinds
from cdc_bridge.relay import daemon
from cdc_bridge.relay.daemon import InFlight, Part, Relay, Shipment, outgoing_of
from cdc_bridge.relay.transactions import group
from tests.helpers import install
from tests.relay_support import relay_config


async def _dispatch_while_a_batch_splits(dsn: str, patch: pytest.MonkeyPatch) -> set[int]:
    """Ids the loop started shipping, when the batch holding the first transaction of a
    record goes back to the outbox while the loop reads."""
    config = relay_config(dsn, "http://127.0.0.1:9")
    relay = Relay(config)
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        codec.use_exact_json(conn)
        rows = await outbox.fetch_pending(conn, relay.schema, 100, [], system="erp")
        first, later = group(rows, {}, 10_000)
        held = Shipment([Part([outgoing_of(r, "erp", r.fields, r.old) for r in first.rows],
                              first.tokens)])
        flight = InFlight()
        flight.hold(held)
        read = outbox.fetch_pending

        async def read_during_a_split(*args: Any, **kwargs: Any) -> list[outbox.OutboxRow]:
            found = await read(*args, **kwargs)
            flight.release(held)  # the batch split: its transaction is back in the outbox
            return found

        patch.setattr(daemon.outbox, "fetch_pending", read_during_a_split)
        client = kinds.endpoint(config)
        try:
            await relay._dispatch(conn, conn, client, flight)
            started = set(flight.ids)
        finally:
            await flight.cancel()
            await client.aclose()
    assert [r.id for r in later.rows] and not set(r.id for r in first.rows) & started
    return started


def test_a_later_change_of_a_record_waits_for_one_put_back_during_the_read(db: str) -> None:
    install(relay_config(db, "http://127.0.0.1:9"))
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("INSERT INTO customers VALUES (1, 'v1', NULL, NULL)")
        conn.execute("UPDATE customers SET name = 'v2' WHERE id = 1")
    with pytest.MonkeyPatch.context() as patch:
        started = asyncio.run(_dispatch_while_a_batch_splits(db, patch))
    # The read found only the update (the insert was in flight when it began); the update
    # must not go before the insert, which is back in the outbox now.
    assert started == set()
