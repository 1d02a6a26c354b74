"""Two different applications: an ERP and a web shop with unlike schemas
(tests/fixtures/unlike/), each with its own bridge (`serve` + `run` subprocesses)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from cdc_bridge.config import BridgeConfig, parse_config
from tests.acceptance.bridges import Bridge, create_app_database, start_pair
from tests.helpers import FIXTURES, SECRET, install
from tests.integration.inbound_support import free_port
from tests.pg import TestServer

UNLIKE = FIXTURES / "unlike"


def unlike_config(
    side: str, dsn: str, ports: dict[str, tuple[int, int]]
) -> tuple[str, BridgeConfig]:
    """The fixture config of one side, for these databases and ports, as text and parsed."""
    environ = {
        "ERP_DATABASE_URL": dsn,
        "SHOP_DATABASE_URL": dsn,
        "BRIDGE_SECRET": SECRET,
        "ERP_URL": f"http://127.0.0.1:{ports['erp'][0]}",
        "SHOP_URL": f"http://127.0.0.1:{ports['shop'][0]}",
    }
    text = (UNLIKE / f"{side}.yaml").read_text()
    for name, value in environ.items():
        text = text.replace("${" + name + "}", value)
    listen, metrics = ports[side]
    text += (
        f'inbound: {{listen: "127.0.0.1:{listen}"}}\n'
        f'relay: {{metrics_listen: "127.0.0.1:{metrics}", poll_interval_s: 0.5, '
        "max_wait_ms: 5, retry_initial_s: 0.05, retry_max_s: 0.5}\n"
    )
    return text, parse_config(text, f"{side}.yaml", {})


def create_unlike_database(pg_server: TestServer, name: str, side: str) -> str:
    """A new database holding one side's application schema; returns its DSN."""
    return create_app_database(pg_server, name, UNLIKE / f"{side}_schema.sql")


@contextlib.contextmanager
def unlike_pair(pg_server: TestServer, workdir: Path) -> Iterator[tuple[Bridge, Bridge]]:
    """(erp, shop), both installed and running."""
    ports = {side: (free_port(), free_port()) for side in ("erp", "shop")}
    names = {side: pg_server.new_name(side) for side in ("erp", "shop")}
    bridges: list[Bridge] = []
    try:
        for side in ("erp", "shop"):
            dsn = create_unlike_database(pg_server, names[side], side)
            text, config = unlike_config(side, dsn, ports)
            install(config)
            path = workdir / f"{side}.yaml"
            path.write_text(text)
            bridges.append(Bridge(side, dsn, path, workdir))
        start_pair(bridges, ports)
        yield bridges[0], bridges[1]
    finally:
        for bridge in bridges:
            bridge.stop()
        for name in names.values():
            pg_server.drop_database(name)
