"""Operations end to end: two real databases, a real `cdc-bridge serve` (the shop) and a
real `cdc-bridge run` (the ERP) as processes, and the operator commands as an operator
types them. Each test gets its own pair of databases and processes.
"""

from __future__ import annotations

import os
import random
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg
import pytest
import yaml

from cdc_bridge.config import parse_config
from tests import pg
from tests.acceptance.bridges import Bridge
from tests.helpers import FIXTURES, SECRET, install
from tests.integration.inbound_support import free_port
from tests.relay_support import CLI, FAST_RELAY, kill, wait_until

pytestmark = pytest.mark.slow

PEER_CHECK = "ALTER TABLE customers ADD CONSTRAINT name_is_short CHECK (length(name) <= 10)"


@dataclass
class Pair:
    erp: Bridge  # captures and ships (`run`)
    shop: Bridge  # receives (`serve`)

    def customers_equal(self) -> bool:
        query = "SELECT * FROM customers ORDER BY id"
        return self.erp.sql(query) == self.shop.sql(query)

    def shop_name(self, key: int) -> str | None:
        found = self.shop.sql("SELECT name FROM customers WHERE id = %s", key)
        return found[0][0] if found else None


def config_file(path: Path, fixture: str, dsn: str, **overrides: Any) -> Path:
    data = yaml.safe_load((FIXTURES / fixture).read_text())
    data["database"]["url"] = dsn
    for section, values in overrides.items():
        data[section] = {**data.get(section, {}), **values}
    path.write_text(yaml.safe_dump(data))
    return path


def start(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(
            [CLI, *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )


def healthy(url: str) -> bool:
    try:
        return httpx.get(url + "/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture
def pair(pg_server: pg.TestServer, template_db: str, tmp_path: Path) -> Iterator[Pair]:
    names = [pg_server.new_name("erp"), pg_server.new_name("shop")]
    erp_dsn, shop_dsn = (pg_server.create_database(n, template=template_db) for n in names)
    port = free_port()
    shop_url = f"http://127.0.0.1:{port}"
    secret = {"secret": SECRET}
    erp_path = config_file(
        tmp_path / "erp.yaml",
        "erp.yaml",
        erp_dsn,
        peer={"url": shop_url, **secret},
        relay={**FAST_RELAY, "batch_size": 200},
    )
    shop_path = config_file(
        tmp_path / "shop.yaml",
        "shop.yaml",
        shop_dsn,
        peer=secret,
        inbound={"listen": f"127.0.0.1:{port}"},
    )
    processes = []
    try:
        for path in (erp_path, shop_path):
            install(parse_config(path.read_text(), path.name, {}))
        processes.append(start(["--config", str(shop_path), "serve"], tmp_path / "serve.log"))
        wait_until(lambda: healthy(shop_url), 60, "`cdc-bridge serve` to answer /healthz")
        processes.append(start(["--config", str(erp_path), "run"], tmp_path / "run.log"))
        yield Pair(
            Bridge("erp", erp_dsn, erp_path, tmp_path),
            Bridge("shop", shop_dsn, shop_path, tmp_path),
        )
    finally:
        for process in processes:
            kill(process)
        for name in names:
            pg_server.drop_database(name)


# ------------------------------------------------------------------ scenarios


def failed_batches(erp: Bridge) -> list[dict[str, Any]]:
    listed = erp.cli("batches", "list", "--status", "failed", "--json")
    assert listed.returncode == 0, listed.stderr
    batches: list[dict[str, Any]] = orjson.loads(listed.stdout)
    return batches


def test_rejected_change_parks_its_key_and_replay_delivers_in_order(pair: Pair) -> None:
    erp, shop = pair.erp, pair.shop
    shop.execute(PEER_CHECK)  # the shop has a rule the ERP lacks
    erp.execute("INSERT INTO customers VALUES (1, 'Ann')")  # a transaction each
    erp.execute("INSERT INTO customers VALUES (2, 'Bartholomew Long')")
    erp.execute("INSERT INTO customers VALUES (3, 'Cy')")
    failed = "SELECT 1 FROM cdc_bridge.failed"
    wait_until(lambda: bool(erp.sql(failed)), 60, "the rejected change to be failed")
    erp.execute("UPDATE customers SET name = 'Bart' WHERE id = 2")  # same key: must wait
    erp.execute("INSERT INTO customers VALUES (4, 'Di')")  # another key: flows
    wait_until(lambda: pair.shop_name(4) == "Di", 60, "other keys to be delivered")
    assert [pair.shop_name(k) for k in (1, 2, 3)] == ["Ann", None, "Cy"]

    # The peer's reason is kept with the failed change, and it names the key it blocks.
    (batch,) = failed_batches(erp)
    shown = erp.cli("batches", "show", batch["batch_id"])
    assert shown.returncode == 0, shown.stderr
    assert "name_is_short" in shown.stdout
    assert "blocks key" in shown.stdout and "1 change(s) parked behind it" in shown.stdout
    held = erp.sql("SELECT fields->>'name' FROM cdc_bridge.outbox WHERE key = '{\"id\": 2}'")
    assert held == [("Bart",)]

    # --dry-run lists and changes nothing.
    before = (
        erp.sql("SELECT * FROM cdc_bridge.failed"),
        erp.sql("SELECT * FROM cdc_bridge.outbox"),
    )
    dry = erp.cli("replay", "--failed", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "dry run: 1 change(s) would be requeued; nothing changed" in dry.stdout
    after = (
        erp.sql("SELECT * FROM cdc_bridge.failed"),
        erp.sql("SELECT * FROM cdc_bridge.outbox"),
    )
    assert after == before and pair.shop_name(2) is None

    # Fixed at the peer, the replay delivers the failed insert and then the held update.
    shop.execute("ALTER TABLE customers DROP CONSTRAINT name_is_short")
    replayed = erp.cli("replay", "--failed", "--reason", "shop rule relaxed")
    assert replayed.returncode == 0, replayed.stderr + replayed.stdout
    wait_until(lambda: pair.shop_name(2) == "Bart", 60, "the replay and the held change")
    wait_until(lambda: not erp.sql("SELECT 1 FROM cdc_bridge.outbox"), 60, "the outbox to drain")
    assert pair.customers_equal()

    # Replaying the old insert of key 2 would put 'Bartholomew Long' back over 'Bart'.
    (old_insert,) = erp.sql(
        "SELECT id FROM cdc_bridge.delivered WHERE key = '{\"id\": 2}' AND op = 'I' "
        "ORDER BY id DESC LIMIT 1"
    )
    refused = erp.cli("replay", str(old_insert[0]), "--reason", "try")
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "already reached the peer" in refused.stderr and "refused" in refused.stderr
    assert pair.shop_name(2) == "Bart"


def write_randomly(erp: Bridge, stop: threading.Event, keys: int, done: list[int]) -> None:
    rng = random.Random(5)
    with psycopg.connect(erp.dsn, autocommit=True) as conn:
        while not stop.is_set():
            done.append(1)
            key = rng.randint(1, keys)
            conn.execute(
                "UPDATE customers SET name = %s, tier = %s WHERE id = %s",
                (f"w{rng.randint(0, 10**6)}", rng.choice(["gold", "silver", None]), key),
            )


def test_snapshot_during_concurrent_writes_ends_equal(pair: Pair, tmp_path: Path) -> None:
    erp = pair.erp
    keys = 4000
    # Rows that existed before the bridge: their capture is switched off for the load.
    erp.execute(
        "ALTER TABLE customers DISABLE TRIGGER USER",
        f"INSERT INTO customers SELECT g, 'n' || g, g || '@x.example', NULL "  # noqa: S608
        f"FROM generate_series(1, {keys}) g",
        "ALTER TABLE customers ENABLE TRIGGER USER",
    )
    stop, writes = threading.Event(), list[int]()
    writer = threading.Thread(target=write_randomly, args=(erp, stop, keys, writes))
    writer.start()
    try:
        done = erp.cli("snapshot", "public.customers", "--chunk", "250", timeout=120)
    finally:
        stop.set()
        writer.join()
    assert done.returncode == 0, done.stderr
    assert f"{keys} row(s) queued" in done.stdout
    assert len(writes) > 10  # the writer really ran alongside the snapshot
    wait_until(lambda: not erp.sql("SELECT 1 FROM cdc_bridge.outbox"), 90, "the outbox to drain")
    assert pair.shop.sql("SELECT count(*) FROM customers") == [(keys,)]
    assert pair.customers_equal()  # every row, every field


def test_reconcile_finds_an_out_of_band_edit_and_fix_repairs_it(pair: Pair) -> None:
    erp, shop = pair.erp, pair.shop
    erp.execute("INSERT INTO customers SELECT g, 'n' || g FROM generate_series(1, 30) g")
    wait_until(pair.customers_equal, 60, "the rows to reach the shop")
    assert erp.cli("reconcile", "public.customers").returncode == 0

    # Someone edits the shop's copy behind the bridge's back (posing as the bridge).
    shop.execute("UPDATE customers SET name = 'edited by hand' WHERE id = 7", origin="erp")
    found = erp.cli("reconcile", "public.customers", "--page", "8")
    assert found.returncode == 1, found.stderr
    assert "different:" in found.stdout and '{"id":7}' in found.stdout
    assert "name: here n7, peer edited by hand" in found.stdout

    fixed = erp.cli("reconcile", "public.customers", "--fix")
    assert fixed.returncode == 1, fixed.stderr
    assert "queued 1 fixes" in fixed.stdout
    wait_until(lambda: pair.shop_name(7) == "n7", 60, "the relay to ship the fix")
    again = erp.cli("reconcile", "public.customers")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "in sync" in again.stdout
