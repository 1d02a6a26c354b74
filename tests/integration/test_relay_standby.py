"""A hot standby on the same host with the same config, metrics on: real processes,
a real PostgreSQL and a real HTTP peer."""

from __future__ import annotations

import signal
import socket
import subprocess
from pathlib import Path

import httpx

from cdc_bridge.config import parse_config
from tests.helpers import install
from tests.integration.inbound_support import free_port
from tests.peer import PeerServer
from tests.relay_support import (
    CLI,
    config_text,
    expected_versions,
    kill,
    relay_process,
    wait_drained,
    wait_until,
    write_config,
    write_versions,
)


def health(port: int) -> dict[str, object] | None:
    try:
        answer = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
    except httpx.HTTPError:
        return None
    found: dict[str, object] = answer.json()
    return found


def test_two_relays_one_config_one_host_the_standby_takes_over_the_port(
    db: str, peer: PeerServer, tmp_path: Path
) -> None:
    port = free_port()
    text = config_text(db, peer.url, metrics_listen=f"127.0.0.1:{port}")
    config_path = write_config(tmp_path, text)
    install(parse_config(text, "relay.yaml", {}))
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    first = relay_process(config_path, logs[0])
    wait_until(lambda: (health(port) or {}).get("role") == "leader", what="the first to lead")
    second = relay_process(config_path, logs[1])
    try:
        wait_until(lambda: "standby" in logs[1].read_text(), what="the second relay to wait")
        write_versions(db, list(range(1, 6)), versions=3)
        wait_drained(db)
        assert second.poll() is None, logs[1].read_text()
        assert "leader" not in logs[1].read_text()

        assert kill(first) == -signal.SIGKILL
        wait_until(lambda: "leader" in logs[1].read_text(), what="the standby to take over")
        wait_until(lambda: (health(port) or {}).get("role") == "leader", what="its metrics")
        write_versions(db, list(range(6, 11)), versions=3)
        wait_drained(db)
    finally:
        kill(first)
        assert kill(second, signal.SIGTERM) == 0
    assert "Traceback" not in logs[0].read_text() + logs[1].read_text()
    assert peer.applied_names() == expected_versions(list(range(1, 11)), 3)


def test_a_metrics_port_held_by_another_program_exits_2_naming_the_key(
    db: str, peer: PeerServer, tmp_path: Path
) -> None:
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        listen = f"127.0.0.1:{other.getsockname()[1]}"
        text = config_text(db, peer.url, metrics_listen=listen)
        config_path = write_config(tmp_path, text)
        install(parse_config(text, "relay.yaml", {}))
        done = subprocess.run(
            [CLI, "--config", str(config_path), "run"],
            capture_output=True, text=True, timeout=60, check=False,
        )
    assert done.returncode == 2, done.stderr
    assert f"{config_path}: relay.metrics_listen: cannot listen on {listen}" in done.stderr
    assert "fix:" in done.stderr and "Traceback" not in done.stderr
