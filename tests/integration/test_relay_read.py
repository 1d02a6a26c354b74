"""The relay's read of whole transactions (`relay_fetch_pending`) against a real outbox.

A full head is probed once per transaction for rows past it; only the transactions that
go on past it (or wait behind a failed change) are counted. These tests interleave real
transactions (two sessions) so a transaction's rows lie on both sides of the head.
"""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg

from cdc_bridge import outbox
from cdc_bridge.peer import codec
from tests.helpers import install
from tests.relay_support import relay_config


def _customers(conn: psycopg.Connection[Any], *ids: int) -> None:
    for id_ in ids:
        conn.execute("INSERT INTO customers VALUES (%s, 'n', NULL, 'std')", (id_,))


def _interleaved(dsn: str) -> None:
    """Outbox ids 1..6: A writes 1, 2 and 6; B writes 3; C writes 4 and 5 (B, C commit
    before A)."""
    with (
        psycopg.connect(dsn) as a,
        psycopg.connect(dsn, autocommit=True) as b,
        psycopg.connect(dsn) as c,
    ):
        _customers(a, 1, 2)
        _customers(b, 3)
        _customers(c, 4, 5)
        c.commit()
        _customers(a, 6)
        a.commit()


async def _read(dsn: str, limit: int, in_flight: list[int] | None = None) -> Any:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        codec.use_exact_json(conn)
        return await outbox.fetch_pending(
            conn, "cdc_bridge", limit, in_flight or [], system="erp",
            whole_tables=["public.customers"],
        )


def _by_id(rows: list[outbox.OutboxRow]) -> dict[int, tuple[Any, ...]]:
    return {r.id: (r.txn_rows, r.txn_last_id, r.txn_parked) for r in rows}


def _ids(dsn: str) -> list[int]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return [r[0] for r in conn.execute("SELECT id FROM cdc_bridge.outbox ORDER BY id")]


def test_a_full_head_reads_the_rest_of_a_transaction_that_goes_on_past_it(db: str) -> None:
    install(relay_config(db, "http://127.0.0.1:9"))
    _interleaved(db)
    first = _ids(db)[0]
    rows = asyncio.run(_read(db, 3))
    # Head: 1, 2 (A) and 3 (B); A's row 6 lies past it and is read too; C is not read.
    assert [r.id - first for r in rows] == [0, 1, 2, 5]
    found = {r.id - first: v for r, v in zip(rows, _by_id(rows).values(), strict=True)}
    assert found[0] == found[1] == found[5] == (3, first + 5, False)
    assert found[2] == (1, first + 2, False)


def test_a_head_that_is_not_full_reads_every_row_and_counts_nothing(db: str) -> None:
    install(relay_config(db, "http://127.0.0.1:9"))
    _interleaved(db)
    rows = asyncio.run(_read(db, 100))
    assert len(rows) == 6
    assert {(r.txn_rows, r.txn_parked) for r in rows} == {(None, False)}


def test_rows_in_flight_are_neither_read_nor_counted(db: str) -> None:
    install(relay_config(db, "http://127.0.0.1:9"))
    _interleaved(db)
    ids = _ids(db)
    # A's first row in flight: the head is 2 (A), 3 (B), 4 (C); A's row 6 and C's row 5
    # are past it. A counts only its rows not in flight.
    rows = asyncio.run(_read(db, 3, in_flight=[ids[0]]))
    assert [r.id for r in rows] == ids[1:]
    found = _by_id(rows)
    assert found[ids[1]] == found[ids[5]] == (2, ids[5], False)
    assert found[ids[2]] == (1, ids[2], False)
    assert found[ids[3]] == found[ids[4]] == (2, ids[4], False)


def test_a_transaction_with_a_parked_row_comes_flagged_and_counted_whole(db: str) -> None:
    install(relay_config(db, "http://127.0.0.1:9"))
    _interleaved(db)
    ids = _ids(db)
    with psycopg.connect(db, autocommit=True) as conn:
        # Customer 2 (A's row 2) has a failed change: it parks, and all of A waits.
        conn.execute(
            "INSERT INTO cdc_bridge.failed (id, txid, table_name, op, key, origin, "
            "captured_at, reason) VALUES (0, '1', 'public.customers', 'I', '{\"id\": 2}', "
            "'erp', now(), 'refused')"
        )
    rows = asyncio.run(_read(db, 3))
    # Head: 1 (A), 3 (B), 4 (C); row 2 is parked (left out); A's row 6 and C's 5 are past it.
    assert [r.id for r in rows] == [ids[0], ids[2], ids[3], ids[4], ids[5]]
    found = _by_id(rows)
    assert found[ids[0]] == found[ids[5]] == (3, ids[5], True)
    assert found[ids[2]] == (1, ids[2], False)
    assert found[ids[3]] == found[ids[4]] == (2, ids[4], False)
