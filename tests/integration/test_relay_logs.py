"""Outages are logged once, and no secret reaches a log line."""

from __future__ import annotations

import logging
import socket

import httpx
import orjson
import psycopg
import pytest

from cdc_bridge.logs import JsonFormatter
from tests.helpers import SECRET, fetch, install
from tests.peer import PeerServer, record_of
from tests.relay_support import relay_config, running_relay, wait_until


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # closed again when the block ends


def test_database_outage_logged_once_without_the_password(
    caplog: pytest.LogCaptureFixture,
) -> None:
    dsn = f"postgresql://postgres:pw-not-for-logs@127.0.0.1:{closed_port()}/nowhere"
    config = relay_config(dsn, "http://127.0.0.1:9")
    caplog.set_level(logging.DEBUG, logger="cdc_bridge")
    with running_relay(config) as thread:
        wait_until(lambda: thread.relay._db_outage.tries >= 4, what="several failed tries")
    formatter = JsonFormatter()
    lines = [formatter.format(record) for record in caplog.records]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "database unreachable" in warnings[0].getMessage()
    assert all("pw-not-for-logs" not in line and SECRET not in line for line in lines)
    assert orjson.loads(lines[0])["logger"].startswith("cdc_bridge")


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_a_batch_refused_with_401_is_logged_with_the_peer_s_reason(
    db: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The peer holds another secret: every batch is refused, and each refusal is logged."""
    config = relay_config(db, "http://127.0.0.1:9")
    install(config)
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("INSERT INTO customers VALUES (1, 'a', NULL, NULL), (2, 'b', NULL, NULL)")
    caplog.set_level(logging.INFO, logger="cdc_bridge")
    with PeerServer(secret="the-peer-holds-another-secret") as peer:
        config = relay_config(db, peer.url)
        with running_relay(config):
            wait_until(lambda: failed_count(db) == 2, what="both changes to fail")
    refusals = [m for m in warnings_of(caplog) if m.startswith("peer refused batch")]
    assert refusals and len(refusals) == peer.state.bad_signatures
    assert all(
        "HTTP 401: no valid signature (wrong secret, or the body was altered)" in m
        for m in refusals
    )
    assert all(SECRET not in r.getMessage() for r in caplog.records)


def test_each_change_the_peer_rejects_is_logged_with_its_reason(
    db: str, caplog: pytest.LogCaptureFixture
) -> None:
    install(relay_config(db, "http://127.0.0.1:9"))
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("INSERT INTO customers VALUES (1, 'a', NULL, NULL), (2, 'b', NULL, NULL)")
    caplog.set_level(logging.INFO, logger="cdc_bridge")
    with PeerServer() as peer:
        peer.state.rejected_records.add(record_of("public.customers", {"id": 2}))
        with running_relay(relay_config(db, peer.url)):
            wait_until(lambda: failed_count(db) == 1, what="customer 2 to fail")
    (change_id,) = (r[0] for r in fetch(db, "SELECT id FROM cdc_bridge.failed"))
    rejected = [m for m in warnings_of(caplog) if m.startswith("peer rejected")]
    assert len(rejected) == 1
    assert rejected[0].startswith(f"peer rejected change {change_id} of public.customers")
    assert rejected[0].endswith(": this record is refused; its key is parked")


def failed_count(dsn: str) -> int:
    return int(fetch(dsn, "SELECT count(*) FROM cdc_bridge.failed")[0][0])


def test_health_and_metrics_say_so_when_the_database_does_not_answer() -> None:
    port = closed_port()
    dsn = f"postgresql://postgres:pw-not-for-logs@127.0.0.1:{closed_port()}/nowhere"
    config = relay_config(dsn, "http://127.0.0.1:9", metrics_listen=f"127.0.0.1:{port}")
    with running_relay(config):
        wait_until(lambda: _answers(port), what="the metrics endpoint")
        health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=30)
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=30).text
    assert health.status_code == 503
    body = health.json()
    assert body["database_reachable"] is False and body["oldest_pending_s"] is None
    [problem] = body["problems"]
    assert problem.startswith("database unreachable: ") and "pw-not-for-logs" not in problem
    assert "cdc_bridge_relay_oldest_pending_seconds NaN" in metrics


def _answers(port: int) -> bool:
    try:
        httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=30)
    except httpx.TransportError:
        return False
    return True
