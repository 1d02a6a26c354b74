"""`cdc-bridge status` and the relay's /metrics and /healthz, on a real database."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import httpx
import psycopg
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families

from cdc_bridge.cli import cli
from cdc_bridge.config import parse_config
from tests.helpers import fetch, install
from tests.peer import PeerServer, record_of
from tests.relay_support import (
    config_text,
    outbox_count,
    running_relay,
    wait_drained,
    wait_until,
    write_config,
    write_versions,
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def status(config_path: Path) -> tuple[int, dict[str, object]]:
    result = CliRunner().invoke(cli, ["--config", str(config_path), "status", "--json"])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exc_info
    return result.exit_code, json.loads(result.output)


def test_status_reports_pending_then_failed_and_the_lock_holder(
    db: str, peer: PeerServer, tmp_path: Path
) -> None:
    text = config_text(db, peer.url, lag_threshold_s=3600)
    config_path = write_config(tmp_path, text)
    config = parse_config(text, "t.yaml", {})
    install(config)
    with psycopg.connect(db, autocommit=True) as conn:
        for i in (1, 2, 3):
            conn.execute("INSERT INTO customers VALUES (%s, 'x', NULL, NULL)", (i,))

    code, state = status(config_path)
    tables = {t["table"]: t for t in state["tables"]}  # type: ignore[attr-defined]
    assert tables["public.customers"]["pending"] == 3
    assert tables["public.customers"]["oldest_pending_s"] >= 0
    assert state["lock_holder"] is None
    # Pending changes and nobody to ship them: not healthy, whatever the lag.
    assert code == 1 and state["healthy"] is False
    assert state["problems"] == [
        "3 change(s) pending and no relay holds the lock; "
        "fix: start `cdc-bridge run` for this config"
    ]

    peer.state.rejected_records.add(record_of("public.customers", {"id": 2}))
    with running_relay(config):
        wait_until(lambda: status(config_path)[1]["lock_holder"] is not None, what="the lock")
        wait_drained(db)
    code, state = status(config_path)
    tables = {t["table"]: t for t in state["tables"]}  # type: ignore[attr-defined]
    assert code == 1
    assert tables["public.customers"]["failed"] == 1
    assert tables["public.customers"]["last_delivery"] is not None
    assert state["problems"] == ["public.customers: 1 failed change(s) wait for replay or skip"]


def test_status_text_exits_1_when_the_lag_is_over_the_threshold(
    db: str, peer: PeerServer, tmp_path: Path
) -> None:
    text = config_text(db, peer.url, lag_threshold_s=0.001)
    config_path = write_config(tmp_path, text)
    install(parse_config(text, "t.yaml", {}))
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("INSERT INTO customers VALUES (1, 'x', NULL, NULL)")
        conn.execute("SELECT pg_sleep(0.01)")
    result = CliRunner().invoke(cli, ["--config", str(config_path), "status"])
    assert result.exit_code == 1
    assert "public.customers: oldest pending change is" in result.output
    assert "no relay holds the lock" in result.output


def test_metrics_and_healthz(db: str, peer: PeerServer) -> None:
    port = free_port()
    config = parse_config(
        config_text(db, peer.url, metrics_listen=f"127.0.0.1:{port}"), "t.yaml", {}
    )
    install(config)
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("INSERT INTO customers VALUES (1, 'x', NULL, NULL)")
    with running_relay(config):
        wait_drained(db)
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics").text
        health = httpx.get(f"http://127.0.0.1:{port}/healthz")
        sessions = fetch(
            db,
            "SELECT DISTINCT application_name FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )
    assert sessions == [("cdc-bridge relay",)]  # the probe's session too
    assert 'cdc_bridge_relay_changes_total{result="applied"} 1.0' in metrics
    assert "cdc_bridge_relay_leader 1.0" in metrics
    assert "cdc_bridge_relay_oldest_pending_seconds 0.0" in metrics  # nothing pending
    assert health.status_code == 200
    assert health.json()["role"] == "leader"
    assert health.json()["problems"] == []


def scrape(port: int) -> dict[str, float]:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if not sample.labels
    }


def healthz(port: int) -> httpx.Response:
    return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=10)


def backdate_record(dsn: str, key: int, seconds: int) -> None:
    """Make a customer's pending changes look captured `seconds` earlier (an aged backlog)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "UPDATE cdc_bridge.outbox SET captured_at = captured_at - make_interval(secs => %s)"
            " WHERE key = jsonb_build_object('id', %s::int)",
            (seconds, key),
        )


def test_oldest_pending_counts_the_changes_parked_behind_a_failed_one(
    db: str, peer: PeerServer
) -> None:
    """Customer 1's first change is refused: its 9 later changes, an hour old, wait behind
    it while 199 fresh customers flow. The gauge is the age of the oldest undelivered
    change (an hour), not that of the freshest rows the relay last read."""
    port = free_port()
    text = config_text(
        db, peer.url, metrics_listen=f"127.0.0.1:{port}", lag_threshold_s=1800
    )
    config = parse_config(text, "t.yaml", {})
    install(config)
    write_versions(db, [1], 10)
    backdate_record(db, 1, 3600)
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO customers SELECT i, 'c' || i, NULL, NULL FROM generate_series(2, 200) i"
        )
    peer.state.rejected_records.add(record_of("public.customers", {"id": 1}))
    with running_relay(config):
        wait_until(lambda: peer.applied_count() == 199, what="the fresh customers")
        wait_until(lambda: outbox_count(db) == 9, what="customer 1 to park")
        oldest = scrape(port)["cdc_bridge_relay_oldest_pending_seconds"]
        health = healthz(port)
    assert 3600 <= oldest < 3600 + 600
    assert health.status_code == 503
    body = health.json()
    assert body["peer_reachable"] is True and body["oldest_pending_s"] >= 3600
    assert len(body["problems"]) == 1
    assert body["problems"][0].startswith("oldest pending change is 36")
    assert body["problems"][0].endswith("s old (relay.lag_threshold_s: 1800s)")


def test_healthz_fails_once_the_peer_is_unreachable_for_longer_than_the_grace(
    db: str, peer: PeerServer
) -> None:
    port = free_port()
    text = config_text(
        db, peer.url, metrics_listen=f"127.0.0.1:{port}", peer_unreachable_grace_s=0.2
    )
    config = parse_config(text, "t.yaml", {})
    install(config)
    peer.refuse()  # connections are refused from now on
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("INSERT INTO customers VALUES (1, 'x', NULL, NULL)")
    with running_relay(config):
        wait_until(lambda: healthz(port).status_code == 503, what="/healthz to fail")
        body = healthz(port).json()
    assert body["healthy"] is False and body["peer_reachable"] is False
    assert body["database_reachable"] is True
    assert [p.split(" for ")[0] for p in body["problems"]] == ["peer unreachable"]
    assert body["problems"][0].endswith("(relay.peer_unreachable_grace_s: 0.2s)")
