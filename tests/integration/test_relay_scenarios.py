"""Delivery scenarios: concurrency, kills, a misbehaving peer, failover, a DB restart.

After each one, the set of changes the peer applied equals the set written, each record
in commit order (names '0', '1', ... in sequence); the peer applies an idempotency key
once, so a redelivery can only ever be a duplicate of the same key.
"""

from __future__ import annotations

import logging
import random
import signal
import time
from pathlib import Path

import psycopg
import pytest

from cdc_bridge.config import parse_config
from cdc_bridge.embedded import EmbeddedPostgres
from tests.helpers import FIXTURES, install
from tests.peer import PeerServer
from tests.relay_support import (
    concurrent_writers,
    config_text,
    expected_versions,
    kill,
    relay_config,
    relay_process,
    running_relay,
    wait_drained,
    wait_until,
    write_config,
    write_versions,
)

pytestmark = pytest.mark.slow


def test_sixteen_concurrent_writers_20k_changes(db: str, peer: PeerServer) -> None:
    config = relay_config(db, peer.url, batch_size=500)
    install(config)
    with running_relay(config):
        threads, expected = concurrent_writers(db, writers=16, keys_per_writer=25, versions=50)
        for thread in threads:
            thread.join()
        wait_drained(db, timeout=120)
    assert sum(len(v) for v in expected.values()) == 20_000
    assert peer.applied_names() == expected


def test_sigkill_at_random_points_loses_nothing(db: str, peer: PeerServer, tmp_path: Path) -> None:
    config_path = write_config(tmp_path, config_text(db, peer.url, batch_size=200))
    install(parse_config(config_path.read_text(), "relay.yaml", {}))
    log = tmp_path / "relay.log"
    threads, expected = concurrent_writers(db, writers=8, keys_per_writer=25, versions=100)
    kills = 0
    process = relay_process(config_path, log)
    rng = random.Random(7)
    while kills < 10 or any(t.is_alive() for t in threads):
        time.sleep(rng.uniform(0.3, 1.2))
        assert kill(process) == -signal.SIGKILL
        kills += 1
        process = relay_process(config_path, log)
    for thread in threads:
        thread.join()
    wait_drained(db, timeout=120)
    assert kill(process, signal.SIGTERM) == 0, log.read_text()[-2000:]
    assert kills >= 10
    assert sum(len(v) for v in expected.values()) == 20_000
    assert peer.applied_names() == expected


def test_misbehaving_peer_500_timeout_slow_refusing(db: str, peer: PeerServer) -> None:
    config = parse_config(
        config_text(db, peer.url, peer={"timeout_s": 0.5}, batch_size=50), "t.yaml", {}
    )
    install(config)
    keys = list(range(1, 21))
    with running_relay(config):
        peer.set_mode("error500")
        write_versions(db, keys, versions=5)
        wait_until(lambda: _attempts(db, "http_status = 500") >= 2, what="500 answers")
        peer.set_mode("timeout", delay_s=1.0)
        wait_until(lambda: _attempts(db, "http_status IS NULL") >= 2, what="timeouts")
        peer.set_mode("slow", delay_s=0.2)
        write_versions(db, [k + 100 for k in keys], versions=5)
        wait_until(lambda: peer.applied_count() > 0, what="slow deliveries")
        peer.refuse()
        write_versions(db, [k + 200 for k in keys], versions=5)
        wait_until(lambda: _attempts(db, "error LIKE 'ConnectError%'") >= 2, what="refusals")
        peer.set_mode("ok")
        peer.start()
        wait_drained(db)
    expected = expected_versions(keys, 5)
    expected |= expected_versions([k + 100 for k in keys], 5)
    expected |= expected_versions([k + 200 for k in keys], 5)
    assert peer.applied_names() == expected


def _attempts(dsn: str, condition: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT count(*) FROM cdc_bridge.attempts WHERE " + condition  # noqa: S608 - test literal
        ).fetchone()
    assert row is not None
    return int(row[0])


def test_failover_exactly_one_ships_and_the_standby_takes_over(
    db: str, peer: PeerServer, tmp_path: Path
) -> None:
    config_path = write_config(tmp_path, config_text(db, peer.url))
    install(parse_config(config_path.read_text(), "relay.yaml", {}))
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    first = relay_process(config_path, logs[0])
    wait_until(lambda: "leader" in logs[0].read_text(), what="the first relay to lead")
    second = relay_process(config_path, logs[1])
    wait_until(lambda: "standby" in logs[1].read_text(), what="the second relay to wait")
    write_versions(db, list(range(1, 11)), versions=5)
    wait_drained(db)
    assert "leader" not in logs[1].read_text()
    assert kill(first) == -signal.SIGKILL
    wait_until(lambda: "leader" in logs[1].read_text(), what="the standby to take over")
    write_versions(db, list(range(11, 21)), versions=5)
    wait_drained(db)
    assert kill(second, signal.SIGTERM) == 0
    assert peer.applied_names() == expected_versions(list(range(1, 21)), 5)


def test_database_restart_mid_run(peer: PeerServer, caplog: pytest.LogCaptureFixture) -> None:
    # A server of its own, whatever CDC_BRIDGE_TEST_DSN says: this test restarts it.
    with EmbeddedPostgres() as server:
        with psycopg.connect(server.dsn, autocommit=True) as conn:
            conn.execute((FIXTURES / "schema.sql").read_text())
        config = relay_config(server.dsn, peer.url)
        install(config)
        caplog.set_level(logging.INFO, logger="cdc_bridge")
        with running_relay(config):
            write_versions(server.dsn, list(range(1, 21)), versions=5)
            server.restart()
            write_versions(server.dsn, list(range(21, 41)), versions=5)
            wait_drained(server.dsn)
    assert peer.applied_names() == expected_versions(list(range(1, 41)), 5)
    outages = [r.message for r in caplog.records if "unreachable" in r.message]
    recoveries = [r.message for r in caplog.records if "reachable again" in r.message]
    assert len(outages) == len(recoveries) >= 1
