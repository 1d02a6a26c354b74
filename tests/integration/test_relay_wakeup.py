"""The wake-up handshake: writers skip NOTIFY while the relay is busy, and a writer that
read "busy" but commits after the relay went idle is still delivered at once."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import psycopg
import pytest

from cdc_bridge.relay.wakeup import Wakeup
from tests.helpers import example_config, fetch, install
from tests.peer import PeerServer, record_of
from tests.pg import TestServer
from tests.relay_support import relay_config, running_relay, wait_drained, wait_until


@pytest.fixture
def peer() -> Iterator[PeerServer]:
    with PeerServer() as test_peer:
        yield test_peer


def listening(dsn: str) -> bool:
    value = fetch(dsn, "SELECT pg_sequence_last_value('cdc_bridge.relay_listening')")[0][0]
    return bool(value != 0)


def test_idle_waits_for_the_writers_that_were_running_when_it_flipped(db: str) -> None:
    install(example_config(db))

    async def scenario() -> list[float | None]:
        steps: list[float | None] = []
        async with await psycopg.AsyncConnection.connect(db, autocommit=True) as conn:
            wakeup = Wakeup("cdc_bridge")
            await wakeup.busy(conn)
            with psycopg.connect(db) as writer:
                writer.execute("INSERT INTO customers VALUES (1, 'a', NULL, NULL)")
                steps.append(await wakeup.idle(conn))  # flips: read once more
                steps.append(await wakeup.idle(conn))  # the writer still runs: in doubt
                writer.commit()
            steps.append(await wakeup.idle(conn))  # it ended: one last read
            steps.append(await wakeup.idle(conn))  # now NOTIFY alone will do
        return steps

    steps = asyncio.run(scenario())
    assert steps[0] == 0.0 and steps[1] is not None and steps[1] > 0
    assert steps[2:] == [0.0, None]
    assert listening(db)


def test_a_long_transaction_in_another_database_does_not_keep_the_relay_in_doubt(
    db: str, pg_server: TestServer
) -> None:
    install(example_config(db))

    async def scenario() -> list[float | None]:
        steps: list[float | None] = []
        async with await psycopg.AsyncConnection.connect(db, autocommit=True) as conn:
            wakeup = Wakeup("cdc_bridge")
            await wakeup.busy(conn)
            with pg_server.admin() as elsewhere, elsewhere.transaction():
                elsewhere.execute("SELECT pg_current_xact_id()")  # holds an xid, runs on
                steps.append(await wakeup.idle(conn))  # flips: read once more
                steps.append(await wakeup.idle(conn))  # nothing of this database runs
                steps.append(await wakeup.idle(conn))
        return steps

    assert asyncio.run(scenario()) == [0.0, 0.0, None]


def test_a_writer_that_saw_busy_and_commits_after_idle_is_delivered(
    db: str, peer: PeerServer
) -> None:
    # A poll interval far longer than the test: only the handshake can deliver in time.
    config = relay_config(db, peer.url, poll_interval_s=120)
    install(config)
    with running_relay(config):
        wait_until(lambda: listening(db), what="the idle relay to listen")
        peer.set_mode("slow", delay_s=1.5)
        with psycopg.connect(db, autocommit=True) as conn:
            conn.execute("INSERT INTO customers VALUES (1, 'first', NULL, NULL)")
        wait_until(lambda: not listening(db), what="the relay to say it is busy")
        with psycopg.connect(db) as writer:
            seen = writer.execute(
                "SELECT pg_sequence_last_value('cdc_bridge.relay_listening') <> 0"
            ).fetchone()
            writer.execute("INSERT INTO customers VALUES (2, 'saw busy', NULL, NULL)")
            peer.set_mode("ok")
            wait_until(lambda: peer.applied_count() == 1, what="the first change")
            wait_until(lambda: listening(db), what="the relay to listen again")
            writer.commit()  # no NOTIFY: it read "busy"
        wait_drained(db, timeout=20)
    assert seen == (False,)
    assert record_of("public.customers", {"id": 2}) in peer.applied_ids()
