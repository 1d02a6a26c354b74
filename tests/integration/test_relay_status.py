"""`cdc-bridge status` and the relay's /metrics and /healthz, on a real database."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
from click.testing import CliRunner

from cdc_bridge.cli import cli
from cdc_bridge.config import parse_config
from tests.helpers import install
from tests.peer import PeerServer, record_of
from tests.relay_support import config_text, running_relay, wait_drained, wait_until, write_config


@pytest.fixture
def peer() -> Iterator[PeerServer]:
    with PeerServer() as test_peer:
        yield test_peer


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
    assert code == 0 and state["healthy"] is True
    assert tables["public.customers"]["pending"] == 3
    assert tables["public.customers"]["oldest_pending_s"] >= 0
    assert state["lock_holder"] is None

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
    assert 'cdc_bridge_relay_changes_total{result="applied"} 1.0' in metrics
    assert "cdc_bridge_relay_leader 1.0" in metrics
    assert health.status_code == 200
    assert health.json()["role"] == "leader"
