"""Two real databases, each with its own bridge (`serve` + `run` subprocesses), pointed at
each other, as an operator would run them."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import yaml
from psycopg.conninfo import make_conninfo

from tests.helpers import FIXTURES, SECRET, example_config, install
from tests.integration.inbound_support import free_port
from tests.pg import TestServer

WAIT_S = 60.0


@dataclass
class Bridge:
    name: str
    dsn: str
    config: Path
    logs: Path
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def sql(self, query: str, *params: Any) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            cursor = conn.execute(query.encode(), params or None)
            return cursor.fetchall() if cursor.description else []

    def execute(self, *statements: str, origin: str | None = None) -> None:
        """Run statements in one transaction; with `origin`, as the bridge does when it
        applies that system's changes (the guard lets them pass, the relay never ships
        them back)."""
        with psycopg.connect(self.dsn, autocommit=True) as conn, conn.transaction():
            if origin is not None:
                conn.execute("SELECT set_config('cdc_bridge.origin', %s, true)", (origin,))
            for statement in statements:
                conn.execute(statement.encode())

    def value(self, query: str, *params: Any) -> Any:
        rows = self.sql(query, *params)
        return rows[0][0] if rows else None

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "cdc_bridge", "--config", str(self.config), *args],
            capture_output=True,
            text=True,
            env={**os.environ, "BRIDGE_SECRET": SECRET},
            timeout=timeout,
            check=False,
        )

    def start(self, command: str) -> None:
        log = open(self.logs / f"{self.name}-{command}.log", "ab")  # noqa: SIM115
        self.processes[command] = subprocess.Popen(
            [sys.executable, "-m", "cdc_bridge", "--config", str(self.config), command],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "BRIDGE_SECRET": SECRET},
        )
        log.close()

    def restart(self, command: str) -> None:
        """Stop one process gracefully (SIGTERM) and start it again on the current config."""
        process = self.processes.pop(command)
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
        self.start(command)

    def set_secrets(self, *secrets: str) -> None:
        """Write `peer.secret` as a list into the config (processes read it on start)."""
        text = self.config.read_text()
        line = next(ln for ln in text.splitlines() if ln.startswith("peer:"))
        data = yaml.safe_load(line)["peer"]
        data["secret"] = list(secrets)
        new_line = "peer: " + yaml.safe_dump(data, default_flow_style=True, width=10**6).strip()
        self.config.write_text(text.replace(line, new_line))

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def log_tail(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-2000:]}"
            for p in sorted(self.logs.glob(f"{self.name}-*.log"))
        )


def wait_until(what: str, check: Callable[[], bool], bridges: list[Bridge]) -> None:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        if check():
            return
        for bridge in bridges:
            for command, process in bridge.processes.items():
                assert process.poll() is None, (
                    f"{bridge.name} {command} exited:\n{bridge.log_tail()}"
                )
        time.sleep(0.05)
    logs = "\n".join(b.log_tail() for b in bridges)
    raise AssertionError(f"timed out waiting for {what}\n{logs}")


def _config_text(fixture: str, dsn: str, listen: int, peer: int, metrics: int, policy: str) -> str:
    """The fixture config for this pair; `dsn` is what the bridge logs in with."""
    text = (FIXTURES / fixture).read_text()
    text = text.replace('"${ERP_DATABASE_URL}"', f'"{dsn}"')
    text = text.replace('"${SHOP_DATABASE_URL}"', f'"{dsn}"')
    text = text.replace("conflicts: newer_wins", f"conflicts: {policy}")
    own, other = ("8081", "8082") if fixture == "erp_pair.yaml" else ("8082", "8081")
    text = text.replace(f'listen: "127.0.0.1:{own}"', f'listen: "127.0.0.1:{listen}"')
    text = text.replace(f'url: "http://127.0.0.1:{other}"', f'url: "http://127.0.0.1:{peer}"')
    return text + (
        f'relay: {{metrics_listen: "127.0.0.1:{metrics}", poll_interval_s: 1, max_wait_ms: 5}}\n'
    )


@contextlib.contextmanager
def bridge_pair(
    pg_server: TestServer,
    template_db: str,
    workdir: Path,
    erp_policy: str = "newer_wins",
    shop_policy: str = "newer_wins",
    login: str | None = None,
    prepare: Callable[[str], None] | None = None,
) -> Iterator[tuple[Bridge, Bridge]]:
    """Both bridges running. `login`: the role the bridges log in as (the install runs as
    the test's admin role); `prepare(dsn)` runs on each database after the install."""
    ports = {name: (free_port(), free_port()) for name in ("erp", "shop")}
    bridges: list[Bridge] = []
    names: list[str] = []
    try:
        for name, fixture, policy, other in (
            ("erp", "erp_pair.yaml", erp_policy, "shop"),
            ("shop", "shop.yaml", shop_policy, "erp"),
        ):
            database = pg_server.new_name(name)
            names.append(database)
            dsn = pg_server.create_database(database, template=template_db)
            path = workdir / f"{name}.yaml"
            bridge_dsn = dsn if login is None else make_conninfo(dsn, user=login)
            path.write_text(
                _config_text(
                    fixture, bridge_dsn, ports[name][0], ports[other][0], ports[name][1], policy
                )
            )
            install(example_config(dsn, name=fixture))
            if prepare is not None:
                prepare(dsn)
            bridges.append(Bridge(name, dsn, path, workdir))
        start_pair(bridges, ports)
        yield bridges[0], bridges[1]
    finally:
        for bridge in bridges:
            bridge.stop()
        for database in names:
            pg_server.drop_database(database)


def create_app_database(pg_server: TestServer, name: str, schema: Path) -> str:
    """A new database holding an application's schema (an SQL file); returns its DSN."""
    dsn = pg_server.create_database(name)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(schema.read_text().encode())
    return dsn


def start_pair(bridges: list[Bridge], ports: dict[str, tuple[int, int]]) -> None:
    """Start both sides' `serve`, then (once both listen) their relays; `ports` gives each
    side's (serve, metrics) port by bridge name. A relay started before its peer listens
    meets a refused connection and waits out a retry backoff."""
    for bridge in bridges:
        bridge.start("serve")
    for bridge in bridges:
        wait_until(f"{bridge.name} serve", listening(ports[bridge.name][0]), bridges)
    for bridge in bridges:
        bridge.start("run")
    for bridge in bridges:
        wait_until(f"{bridge.name} relay metrics", listening(ports[bridge.name][1]), bridges)


def listening(port: int) -> Callable[[], bool]:
    def check() -> bool:
        with socket.socket() as sock:
            sock.settimeout(0.2)
            return sock.connect_ex(("127.0.0.1", port)) == 0

    return check


@contextlib.contextmanager
def relays_paused(*bridges: Bridge) -> Iterator[None]:
    """Freeze the relays so that edits on both sides cross in flight: a real conflict."""
    for bridge in bridges:
        bridge.processes["run"].send_signal(signal.SIGSTOP)
    try:
        yield
    finally:
        for bridge in bridges:
            bridge.processes["run"].send_signal(signal.SIGCONT)
