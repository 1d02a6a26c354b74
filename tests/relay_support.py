"""Helpers for relay tests: configs pointing at a test peer, a relay in a thread or a
subprocess, and polling with a deadline (never a fixed sleep as an assertion)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import yaml

from cdc_bridge.config import BridgeConfig, parse_config
from cdc_bridge.relay.daemon import Relay
from tests.helpers import FIXTURES, SECRET, install
from tests.peer import record_of

# The installed console script, next to the interpreter running the tests.
CLI = str(Path(sys.executable).parent / "cdc-bridge")

FAST_RELAY: dict[str, Any] = {
    "metrics_listen": None,
    "poll_interval_s": 0.5,
    "retry_initial_s": 0.05,
    "retry_max_s": 0.5,
    "max_wait_ms": 2,
    "shutdown_timeout_s": 5,
}


def config_text(dsn: str, peer_url: str, peer: dict[str, Any] | None = None, **relay: Any) -> str:
    data = yaml.safe_load((FIXTURES / "erp.yaml").read_text())
    data["database"]["url"] = dsn
    data["peer"].update({"url": peer_url, "secret": SECRET, "timeout_s": 2, **(peer or {})})
    data["relay"] = {**FAST_RELAY, **relay}
    return yaml.safe_dump(data)


def relay_config(dsn: str, peer_url: str, **relay: Any) -> BridgeConfig:
    return parse_config(config_text(dsn, peer_url, **relay), "test.yaml", {})


def wait_until(
    condition: Callable[[], bool], timeout: float = 60.0, what: str = "condition"
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def outbox_count(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT count(*) FROM cdc_bridge.outbox").fetchone()
        assert row is not None
        return int(row[0])


def wait_drained(dsn: str, timeout: float = 90.0) -> None:
    wait_until(lambda: outbox_count(dsn) == 0, timeout, "the outbox to drain")


class RelayThread:
    """A Relay running on its own event loop in a thread (stop() is thread-safe)."""

    def __init__(self, config: BridgeConfig) -> None:
        self.relay = Relay(config)
        self.error: BaseException | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._main, daemon=True)

    def _main(self) -> None:
        try:
            self._loop.run_until_complete(self.relay.run())
        except BaseException as exc:
            self.error = exc
        finally:
            self._loop.close()

    def start(self) -> RelayThread:
        self._thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self.relay.stop)
            self._thread.join(timeout)
        assert not self._thread.is_alive(), "the relay did not stop"
        if self.error is not None:
            raise self.error


@contextmanager
def running_relay(config: BridgeConfig) -> Iterator[RelayThread]:
    thread = RelayThread(config).start()
    try:
        yield thread
    finally:
        thread.stop()


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "relay.yaml"
    path.write_text(text)
    return path


def relay_process(config_path: Path, log_path: Path) -> subprocess.Popen[bytes]:
    """`cdc-bridge run` as a real process (for SIGKILL and failover tests)."""
    log = open(log_path, "ab")  # noqa: SIM115 - handed to the child
    try:
        return subprocess.Popen(
            [CLI, "--config", str(config_path), "run"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    finally:
        log.close()


def kill(process: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> int:
    if process.poll() is None:
        process.send_signal(sig)
    return process.wait(timeout=30)


def customer_record(key: int) -> tuple[str, str]:
    return record_of("public.customers", {"id": key})


def write_versions(dsn: str, keys: list[int], versions: int, per_tx: int = 5) -> None:
    """Each key gets name '0' (insert), then '1', '2', ... (updates), round-robin over keys."""
    statements: list[tuple[str, tuple[Any, ...]]] = []
    for version in range(versions):
        for key in keys:
            if version == 0:
                statements.append(("INSERT INTO customers VALUES (%s, '0', NULL, NULL)", (key,)))
            else:
                update = "UPDATE customers SET name = %s WHERE id = %s"
                statements.append((update, (str(version), key)))
    with psycopg.connect(dsn, autocommit=True) as conn:
        for start in range(0, len(statements), per_tx):
            with conn.transaction():
                for text, params in statements[start : start + per_tx]:
                    conn.execute(text, params)


def expected_versions(keys: list[int], versions: int) -> dict[tuple[str, str], list[str]]:
    return {customer_record(k): [str(v) for v in range(versions)] for k in keys}


def concurrent_writers(
    dsn: str, writers: int, keys_per_writer: int, versions: int
) -> tuple[list[threading.Thread], dict[tuple[str, str], list[str]]]:
    """Start `writers` threads on disjoint keys; returns the threads and what they write."""
    threads, expected = [], {}
    for w in range(writers):
        keys = [w * 10_000 + k for k in range(1, keys_per_writer + 1)]
        expected.update(expected_versions(keys, versions))
        threads.append(threading.Thread(target=write_versions, args=(dsn, keys, versions)))
    for thread in threads:
        thread.start()
    return threads, expected


def installed_relay(dsn: str, peer_url: str, **relay: Any) -> BridgeConfig:
    """A relay config for the erp.yaml fixture, installed."""
    config = relay_config(dsn, peer_url, **relay)
    install(config)
    return config
