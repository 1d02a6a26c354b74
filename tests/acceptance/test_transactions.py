"""Whole source transactions in dependency order, over foreign-key-linked tables at both
sides: concurrent writers, cascading deletes, a relay SIGKILL, a reader at the peer that
must never see half a transaction, and one change the peer cannot store among 1,000."""

from __future__ import annotations

import json
import random
import signal
import threading
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest

from tests.acceptance.bridges import Bridge, wait_until
from tests.acceptance.fk_pair import all_tables, fk_pair
from tests.pg import TestServer

pytestmark = pytest.mark.slow

WRITERS = 8
ORDERS_PER_WRITER = 25


def place_orders(dsn: str, writer: int, count: int) -> list[int]:
    """Each transaction: a customer, two orders with their lines, and a category pair
    whose child is written before its parent (the deferrable self-reference). Every
    third one also adds a line to an earlier order (line_count and total follow)."""
    rng = random.Random(writer)
    customers: list[int] = []
    orders: list[tuple[int, int]] = []  # (order id, lines)
    with psycopg.connect(dsn, autocommit=True) as conn:
        for n in range(count):
            with conn.transaction():
                customer = conn.execute(
                    "INSERT INTO customers (name, tier, credit, since) "
                    "VALUES (%s, %s, %s, now()) RETURNING id",
                    (
                        f"Customer {writer}-{n}",
                        rng.choice(["std", "gold"]),
                        Decimal(rng.randrange(10**8)) / 100,
                    ),
                ).fetchone()
                assert customer is not None
                customers.append(customer[0])
                for _ in range(2):
                    orders.append(_order(conn, rng, customer[0]))
                parent, child = (
                    r[0]
                    for r in conn.execute(
                        "SELECT nextval(pg_get_serial_sequence('categories', 'id')) "
                        "FROM generate_series(1, 2)"
                    )
                )
                conn.execute(
                    "INSERT INTO categories VALUES (%s, %s, %s)",
                    (child, parent, f"child {writer}-{n}"),
                )
                conn.execute(
                    "INSERT INTO categories VALUES (%s, NULL, %s)", (parent, f"root {writer}-{n}")
                )
                if n % 3 == 2:
                    orders = _add_line(conn, rng, orders)
    return customers


def _order(
    conn: psycopg.Connection[tuple[object, ...]], rng: random.Random, customer: int
) -> tuple[int, int]:
    lines = rng.randint(2, 5)
    prices = [Decimal(rng.randrange(1, 10**6)) / 100 for _ in range(lines)]
    order = conn.execute(
        "INSERT INTO orders (customer_id, line_count, total, tags) "
        "VALUES (%s, %s, %s, %s) RETURNING id",
        (customer, lines, sum(prices), ["web", f"c{customer}"]),
    ).fetchone()
    assert order is not None
    conn.cursor().executemany(
        "INSERT INTO order_lines VALUES (%s, %s, %s, %s, %s)",
        [
            (order[0], i + 1, f"SKU-{rng.randrange(1000)}", rng.randint(1, 9), p)
            for i, p in enumerate(prices)
        ],
    )
    return order[0], lines


def _add_line(
    conn: psycopg.Connection[tuple[object, ...]], rng: random.Random, orders: list[tuple[int, int]]
) -> list[tuple[int, int]]:
    index = rng.randrange(len(orders))
    order, lines = orders[index]
    conn.execute(
        "INSERT INTO order_lines VALUES (%s, %s, 'SKU-EXTRA', 1, 9.99)", (order, lines + 1)
    )
    conn.execute(
        "UPDATE orders SET line_count = line_count + 1, total = total + 9.99 WHERE id = %s",
        (order,),
    )
    return [*orders[:index], (order, lines + 1), *orders[index + 1 :]]


def delete_some(dsn: str, writer: int, customers: list[int]) -> None:
    """Cascading deletes: half the customers (their orders and lines go with them), one
    order of each other customer (its lines go), and every other root category (its
    child goes)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        for n, customer in enumerate(customers):
            with conn.transaction():
                if n % 2 == 0:
                    conn.execute("DELETE FROM customers WHERE id = %s", (customer,))
                else:
                    conn.execute(
                        "DELETE FROM orders WHERE id = (SELECT min(id) FROM orders "
                        "WHERE customer_id = %s)",
                        (customer,),
                    )
            if n % 2 == 0:
                conn.execute("DELETE FROM categories WHERE name = %s", (f"root {writer}-{n}",))


class TornOrderReader(threading.Thread):
    """Reads the peer over and over: an order whose lines are not all there is torn."""

    def __init__(self, dsn: str) -> None:
        super().__init__(daemon=True)
        self.dsn = dsn
        self.stop = threading.Event()
        self.reads = 0
        self.orders_seen = 0
        self.torn: list[int] = []

    def run(self) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            while not self.stop.is_set():
                rows = conn.execute(
                    "SELECT o.id, o.line_count = (SELECT count(*) FROM order_lines l "
                    "WHERE l.order_id = o.id) FROM orders o"
                ).fetchall()
                self.reads += 1
                self.orders_seen = max(self.orders_seen, len(rows))
                self.torn.extend(order for order, whole in rows if not whole)


def run_writers(target: object, args: list[tuple[object, ...]]) -> list[object]:
    results: list[object] = [None] * len(args)
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            results[i] = target(*args[i])  # type: ignore[operator]
        except BaseException as exc:
            errors.append(exc)
            raise

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(args))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return results


def kill_relay(shop: Bridge) -> None:
    process = shop.processes.pop("run")
    process.send_signal(signal.SIGKILL)
    assert process.wait(timeout=30) == -signal.SIGKILL


def test_fk_linked_tables_arrive_whole_in_order_through_a_relay_kill(
    pg_server: TestServer, tmp_path: Path
) -> None:
    with fk_pair(pg_server, tmp_path, batch_size=40, concurrency=4) as (shop, erp):
        reader = TornOrderReader(erp.dsn)
        reader.start()
        shop.start("run")
        customers = run_writers(
            place_orders, [(shop.dsn, w, ORDERS_PER_WRITER) for w in range(WRITERS)]
        )
        # The relay is killed while it ships what the writers wrote, then restarted.
        wait_until(
            "the first orders at the peer",
            lambda: erp.value("SELECT count(*) FROM orders") > 0,
            [shop, erp],
        )
        kill_relay(shop)
        shop.start("run")
        run_writers(delete_some, [(shop.dsn, w, customers[w]) for w in range(WRITERS)])
        wait_until(
            "the outbox to drain",
            lambda: shop.value("SELECT count(*) FROM cdc_bridge.outbox") == 0,
            [shop, erp],
        )
        reader.stop.set()
        reader.join()

        failed = shop.sql("SELECT id, table_name, reason FROM cdc_bridge.failed")
        assert failed == []
        expected = all_tables(shop)
        # 400 orders placed; 13 of each writer's 25 customers deleted with their orders,
        # and one of the two orders of each of the other 12.
        assert len(expected["orders"]) == WRITERS * 12
        assert all(expected.values())
        assert all_tables(erp) == expected
        assert reader.reads > 0 and reader.orders_seen > 0
        assert reader.torn == []


def test_one_change_the_peer_cannot_store_fails_alone_among_a_thousand(
    pg_server: TestServer, tmp_path: Path
) -> None:
    receiver_only = "ALTER TABLE customers ADD CONSTRAINT no_test_names CHECK (name <> 'poison')"
    with fk_pair(pg_server, tmp_path, receiver_ddl=receiver_only, batch_size=500) as (shop, erp):
        # A thousand transactions of one customer each, shipped in batches of 500.
        with psycopg.connect(shop.dsn, autocommit=True) as conn:
            for n in range(1, 1001):
                conn.execute(
                    "INSERT INTO customers (name, tier, credit, since) "
                    "VALUES (%s, 'std', %s, now())",
                    ("poison" if n == 500 else f"good {n}", Decimal(n) / 8),
                )
        shop.start("run")
        wait_until(
            "999 at the peer and one failed",
            lambda: (
                shop.value("SELECT count(*) FROM cdc_bridge.failed") == 1
                and shop.value("SELECT count(*) FROM cdc_bridge.outbox") == 0
            ),
            [shop, erp],
        )
        failed = shop.sql("SELECT table_name, key::text, reason FROM cdc_bridge.failed")
        assert len(failed) == 1
        table, key, reason = failed[0]
        poison_id = shop.value("SELECT id FROM customers WHERE name = 'poison'")
        assert (table, json.loads(key)) == ("public.customers", {"id": poison_id})
        assert 'violates check constraint "no_test_names"' in reason
        assert erp.value("SELECT count(*) FROM customers") == 999
        assert erp.value("SELECT count(*) FROM customers WHERE name = 'poison'") == 0
        status = shop.cli("status", "--json")
        assert status.returncode == 1, status.stdout + status.stderr
        tables = {t["table"]: t for t in json.loads(status.stdout)["tables"]}
        assert tables["public.customers"]["failed"] == 1
