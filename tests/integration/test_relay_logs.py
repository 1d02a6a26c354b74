"""Outages are logged once, and no secret reaches a log line."""

from __future__ import annotations

import logging
import socket

import orjson
import pytest

from cdc_bridge.logs import JsonFormatter
from tests.helpers import SECRET
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
