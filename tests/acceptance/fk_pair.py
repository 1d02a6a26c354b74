"""Two databases with foreign-key-linked tables: a shop that owns them and ships, and an
ERP that receives them through its own `serve`. The bridges run as real processes."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import yaml

from cdc_bridge.config import parse_config
from tests.acceptance.bridges import Bridge, listening, wait_until
from tests.helpers import FIXTURES, SECRET, install
from tests.integration.inbound_support import free_port
from tests.pg import TestServer

# customers <- orders <- order_lines, both ON DELETE CASCADE (immediate checks), and a
# self-referencing categories table whose key is checked at commit (deferrable).
SCHEMA = (FIXTURES / "fk_schema.sql").read_text()

TABLES = {
    "public.customers": ["id"],
    "public.orders": ["id"],
    "public.order_lines": ["order_id", "line_no"],
    "public.categories": ["id"],
}


def config_text(
    system: str, peer: str, dsn: str, listen: int, peer_port: int, sor: str, **relay: Any
) -> str:
    data = {
        "system": system,
        "database": {"url": dsn},
        "inbound": {"listen": f"127.0.0.1:{listen}"},
        "peer": {"name": peer, "url": f"http://127.0.0.1:{peer_port}", "secret": SECRET},
        "relay": {
            "metrics_listen": None,
            "poll_interval_s": 0.5,
            "max_wait_ms": 5,
            "retry_initial_s": 0.05,
            "retry_max_s": 0.5,
            **relay,
        },
        "tables": {label: {"key": key, "sor": sor} for label, key in TABLES.items()},
    }
    return yaml.safe_dump(data)


@contextlib.contextmanager
def fk_pair(
    pg_server: TestServer, workdir: Path, receiver_ddl: str = "", **relay: Any
) -> Iterator[tuple[Bridge, Bridge]]:
    """(shop, erp): the shop ships every table, the ERP's serve applies them.

    The shop's relay is not started: the test starts it (and may kill it).
    """
    names = [pg_server.new_name("shop"), pg_server.new_name("erp")]
    ports = [free_port(), free_port()]
    bridges = []
    try:
        for i, (system, peer, sor) in enumerate(
            (("shop", "erp", "local"), ("erp", "shop", "peer"))
        ):
            dsn = pg_server.create_database(names[i])
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute(SCHEMA.encode())
                if system == "erp" and receiver_ddl:
                    conn.execute(receiver_ddl.encode())
            text = config_text(system, peer, dsn, ports[i], ports[1 - i], sor, **relay)
            path = workdir / f"{system}.yaml"
            path.write_text(text)
            install(parse_config(text, path.name, {}))
            bridges.append(Bridge(system, dsn, path, workdir))
        shop, erp = bridges
        erp.start("serve")
        wait_until("erp serve", listening(ports[1]), bridges)
        yield shop, erp
    finally:
        for bridge in bridges:
            bridge.stop()
        for name in names:
            pg_server.drop_database(name)


def table_text(bridge: Bridge, table: str) -> list[str]:
    """Every row as row::text, in key order: what must be equal at both sides."""
    key = ", ".join(TABLES[f"public.{table}"])
    return [r[0] for r in bridge.sql(f"SELECT t::text FROM {table} t ORDER BY {key}")]  # noqa: S608


def all_tables(bridge: Bridge) -> dict[str, list[str]]:
    return {t: table_text(bridge, t) for t in ("customers", "orders", "order_lines", "categories")}
