"""The wake-up handshake: writers notify only while a relay is idle and listening.

With no relay connected (never started, stopped, or killed while idle) writers send no
NOTIFY at all; a relay that starts later still ships every change. A writer that wrote
while the relay was busy, and commits after the relay finished, is still delivered at once.
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import psycopg
import pytest

from cdc_bridge.capture.function import listening_key
from cdc_bridge.config import parse_config
from cdc_bridge.relay.wakeup import Wakeup
from tests.helpers import (
    example_config,
    fetch,
    install,
    listening_pid,
    notifications_sent,
)
from tests.peer import PeerServer, record_of
from tests.pg import TestServer
from tests.relay_support import (
    config_text,
    kill,
    relay_config,
    relay_process,
    running_relay,
    wait_drained,
    wait_until,
    write_config,
    write_versions,
)

# A poll interval far longer than any test: only a read at start, the handshake or a
# NOTIFY can make the relay read the outbox in time.
NEVER_POLL_S = 600


def waiting_for_the_key(dsn: str) -> bool:
    """Whether a session waits for the listening key (a relay about to listen)."""
    rows = fetch(
        dsn,
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        " AND mode = 'ExclusiveLock'",
    )
    return bool(rows[0][0])


def test_idle_waits_for_the_writers_that_wrote_while_nobody_listened(db: str) -> None:
    install(example_config(db))

    async def scenario() -> list[float | None]:
        steps: list[float | None] = []
        async with await psycopg.AsyncConnection.connect(db, autocommit=True) as conn:
            wakeup = Wakeup("cdc_bridge")
            with psycopg.connect(db) as writer:
                writer.execute("INSERT INTO customers VALUES (1, 'a', NULL, NULL)")
                steps.append(await wakeup.idle(conn))  # the writer still runs: read again
                writer.commit()
            steps.append(await wakeup.idle(conn))  # it ended: listening, one last read
            steps.append(await wakeup.idle(conn))  # now NOTIFY alone will do
            steps.append(float(listening_pid(db) is not None))
            await wakeup.busy(conn)
            steps.append(float(listening_pid(db) is not None))
        return steps

    steps = asyncio.run(scenario())
    assert steps[0] is not None and steps[0] > 0
    assert steps[1:] == [0.0, None, 1.0, 0.0]


def test_a_long_transaction_in_another_database_does_not_keep_the_relay_from_listening(
    db: str, pg_server: TestServer
) -> None:
    install(example_config(db))

    async def scenario() -> list[float | None]:
        steps: list[float | None] = []
        async with await psycopg.AsyncConnection.connect(db, autocommit=True) as conn:
            wakeup = Wakeup("cdc_bridge")
            with pg_server.admin() as elsewhere, elsewhere.transaction():
                elsewhere.execute("SELECT pg_current_xact_id()")  # holds an xid, runs on
                # The same key, taken shared in another database: a lock of its own.
                elsewhere.execute(
                    "SELECT pg_try_advisory_xact_lock_shared(%s::bigint)",
                    (listening_key("cdc_bridge"),),
                )
                steps.append(await wakeup.idle(conn))  # listening: read once more
                steps.append(await wakeup.idle(conn))  # now NOTIFY alone will do
        return steps

    assert asyncio.run(scenario()) == [0.0, None]


def test_a_writer_that_saw_no_listener_and_commits_while_the_relay_waits_is_delivered(
    db: str, peer: PeerServer
) -> None:
    config = relay_config(db, peer.url, poll_interval_s=NEVER_POLL_S)
    install(config)
    with running_relay(config):
        wait_until(lambda: listening_pid(db) is not None, what="the idle relay to listen")
        peer.set_mode("slow", delay_s=1.5)
        with psycopg.connect(db, autocommit=True) as conn:
            conn.execute("INSERT INTO customers VALUES (1, 'first', NULL, NULL)")
        wait_until(lambda: listening_pid(db) is None, what="the relay to ship")
        with psycopg.connect(db) as writer, psycopg.connect(db, autocommit=True) as listener:
            listener.execute('LISTEN "cdc_bridge"')
            writer.execute("INSERT INTO customers VALUES (2, 'saw no listener', NULL, NULL)")
            peer.set_mode("ok")
            wait_until(lambda: peer.applied_count() == 1, what="the first change")
            wait_until(lambda: waiting_for_the_key(db), what="the relay to wait for the writer")
            writer.commit()
            sent = notifications_sent(listener, db)
        wait_drained(db, timeout=20)
    assert sent == []  # it wrote while the relay was busy: only the handshake's read finds it
    assert record_of("public.customers", {"id": 2}) in peer.applied_ids()


@pytest.mark.parametrize("away", ["never started", "stopped", "killed while idle"])
def test_no_notify_while_no_relay_is_connected_and_a_later_relay_ships_everything(
    db: str, peer: PeerServer, tmp_path: Path, away: str
) -> None:
    config_path = write_config(tmp_path, config_text(db, peer.url, poll_interval_s=NEVER_POLL_S))
    install(parse_config(config_path.read_text(), "relay.yaml", {}))
    log = tmp_path / "relay.log"
    earlier: list[int] = []
    with psycopg.connect(db, autocommit=True) as listener:
        listener.execute('LISTEN "cdc_bridge"')
        if away != "never started":
            earlier = [1, 2]
            process = relay_process(config_path, log)
            wait_until(lambda: listening_pid(db) is not None, what="the idle relay to listen")
            write_versions(db, earlier, versions=2)
            wait_drained(db)
            wait_until(lambda: listening_pid(db) is not None, what="the relay to be idle again")
            notifications_sent(listener, db)  # those writes woke the relay: not under test
            # The control: while a relay listens, writers do notify, and this listener hears it.
            write_versions(db, [3], versions=1)
            assert notifications_sent(listener, db) == ["public.customers"]
            wait_drained(db)
            wait_until(lambda: listening_pid(db) is not None, what="the relay to be idle again")
            sig = signal.SIGKILL if away == "killed while idle" else signal.SIGTERM
            expected_rc = -signal.SIGKILL if sig == signal.SIGKILL else 0
            assert kill(process, sig) == expected_rc, log.read_text()[-2000:]
            wait_until(lambda: listening_pid(db) is None, what="the relay's session to end")
        keys = list(range(10, 30))
        write_versions(db, keys, versions=3)
        with psycopg.connect(db, autocommit=True) as conn:
            conn.execute("UPDATE customers SET email = 'x@example.com' WHERE id BETWEEN 10 AND 14")
            conn.execute("DELETE FROM customers WHERE id = 29")
            conn.execute("INSERT INTO orders VALUES (1, 10, 1)")
        assert notifications_sent(listener, db) == []
    pending = fetch(db, "SELECT table_name, key, id FROM cdc_bridge.outbox ORDER BY id")
    expected: dict[tuple[str, str], list[int]] = {}
    for table, key, outbox_id in pending:
        expected.setdefault(record_of(table, key), []).append(outbox_id)
    later = relay_process(config_path, log)
    try:
        wait_drained(db)
    finally:
        assert kill(later, signal.SIGTERM) == 0, log.read_text()[-2000:]
    applied = peer.applied_ids()
    assert len(pending) == 20 * 3 + 5 + 1 + 1
    assert {record: applied[record][-len(ids):] for record, ids in expected.items()} == expected
    shipped_before = {record_of("public.customers", {"id": k}) for k in (*earlier, 3)}
    assert set(applied) == set(expected) | (shipped_before if earlier else set())
