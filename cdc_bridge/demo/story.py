"""`cdc-bridge demo`: two databases, two bridges, one short business story.

Everything runs locally: an embedded PostgreSQL with databases `erp` and `shop`, and for
each side the bridge's own `serve` and `run` processes, started exactly as an operator
would start them. The two are different applications (examples/schema-erp.sql and
examples/schema-shop.sql): other tables, other names, codes against words, natural keys
against generated ids. The story walks through the four sync paths, one conflict and one
rejected change that is replayed, then checks that both databases hold the same records,
entity by entity, compared as text.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import psycopg
from alembic import command
from alembic.config import Config as AlembicConfig
from psycopg import sql
from rich.console import Console
from rich.panel import Panel
from rich.table import Table

from cdc_bridge.embedded import EmbeddedPostgres
from cdc_bridge.errors import DemoError
from cdc_bridge.sql import query

DEMO_SECRET = "demo-shared-secret"
WAIT_S = 30.0

# The entities both sides hold, compared at the end (projections in cdc_bridge/sql/demo.sql).
ENTITIES: dict[str, tuple[str, str]] = {
    "product": ("demo_erp_products", "demo_shop_products"),
    "customer": ("demo_erp_customers", "demo_shop_customers"),
    "order": ("demo_erp_orders", "demo_shop_orders"),
    "order_line": ("demo_erp_order_lines", "demo_shop_order_lines"),
}
# A 30-digit number inside a jsonb document: it arrives with every digit.
BIG = "123456789012345678901234567890"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Side:
    name: str
    dsn: str
    config: Path
    inbound_port: int
    metrics_port: int
    logs: Path
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def execute(self, query: str, params: Sequence[Any] = ()) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(query.encode(), params)

    def value(self, query: str, params: Sequence[Any] = ()) -> Any:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            row = conn.execute(query.encode(), params).fetchone()
        return None if row is None else row[0]

    def rows(self, statement: sql.Composable) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            return conn.execute(statement.as_string(conn)).fetchall()


class Demo:
    def __init__(self, console: Console, keep_running: bool = False) -> None:
        self.console = console
        self.keep_running = keep_running
        self.workdir = Path(tempfile.mkdtemp(prefix="cdc-bridge-demo-"))
        self.server: EmbeddedPostgres | None = None
        self.sides: dict[str, Side] = {}

    # ------------------------------------------------------------- plumbing

    def cli(self, side: Side, *args: str, check: bool = True) -> str:
        """Run a cdc-bridge command for one side, as a user would."""
        command = [sys.executable, "-m", "cdc_bridge", "--config", str(side.config), *args]
        result = subprocess.run(
            command, capture_output=True, text=True, env=self.env(), check=False
        )
        if check and result.returncode != 0:
            raise DemoError(
                f"`cdc-bridge {' '.join(args)}` for {side.name} failed:\n"
                f"{result.stdout}{result.stderr}"
            )
        return result.stdout

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["BRIDGE_SECRET"] = DEMO_SECRET
        for side in self.sides.values():
            prefix = side.name.upper()
            env[f"{prefix}_DATABASE_URL"] = side.dsn
            env[f"{prefix}_INBOUND_PORT"] = str(side.inbound_port)
            env[f"{prefix}_METRICS_PORT"] = str(side.metrics_port)
        return env

    def start(self, side: Side, *args: str) -> None:
        log = open(side.logs / f"{args[0]}.log", "ab")  # noqa: SIM115 - owned by the child
        side.processes.append(
            subprocess.Popen(
                [sys.executable, "-m", "cdc_bridge", "--config", str(side.config), *args],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env(),
            )
        )
        log.close()

    def wait_for(self, what: str, check: Callable[[], bool], timeout: float = WAIT_S) -> float:
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if check():
                return time.monotonic() - started
            self._fail_if_a_bridge_died()
            time.sleep(0.05)
        raise DemoError(f"timed out after {timeout:.0f}s waiting for {what}")

    def _fail_if_a_bridge_died(self) -> None:
        for side in self.sides.values():
            for process in side.processes:
                if process.poll() is not None:
                    logs = "\n".join(
                        f"--- {p.name}\n{p.read_text(errors='replace')[-1500:]}"
                        for p in sorted(side.logs.glob("*.log"))
                    )
                    raise DemoError(f"a {side.name} bridge process exited early:\n{logs}")

    # ------------------------------------------------------------- setup

    def setup(self) -> None:
        self.console.print("[bold]Starting an embedded PostgreSQL[/] (no Docker, no system server)")
        self.server = EmbeddedPostgres().start()
        demo_files = resources.files("cdc_bridge.demo")
        with psycopg.connect(self.server.dsn, autocommit=True) as conn:
            for name in ("erp", "shop"):
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        for name in ("erp", "shop"):
            logs = self.workdir / name
            logs.mkdir()
            config = self.workdir / f"{name}.yaml"
            config.write_text((demo_files / f"{name}.yaml").read_text())
            side = Side(name, self.server.dsn_for(name), config, _free_port(), _free_port(), logs)
            self.sides[name] = side
            side.execute((demo_files / f"{name}.sql").read_text())
        for side in self.sides.values():
            self.install(side)

    def install(self, side: Side) -> None:
        """Install the triggers the way a DBA would: an Alembic revision, then upgrade head."""
        versions = self.workdir / f"{side.name}-versions"
        env_dir = alembic_env_dir()
        self.cli(
            side,
            "migrations",
            "generate",
            "-m",
            "install cdc-bridge",
            "--migrations",
            str(env_dir),
            "--versions",
            str(versions),
        )
        alembic = AlembicConfig()
        alembic.set_main_option("script_location", str(env_dir))
        alembic.set_main_option("version_locations", str(versions))
        alembic.attributes["url"] = side.dsn
        alembic.attributes["configure_logger"] = False
        command.upgrade(alembic, "head")
        self.console.print(
            f"  [green]✓[/] {side.name}: triggers installed by an Alembic revision "
            "(`cdc-bridge migrations generate`, then `alembic upgrade head`)"
        )

    def start_bridges(self) -> None:
        for side in self.sides.values():
            self.start(side, "serve")
            self.start(side, "run")
        for side in self.sides.values():
            for what, port in (("serve", side.inbound_port), ("relay", side.metrics_port)):
                self.wait_for(f"{side.name} {what}", _port_checker(port))
        self.console.print("  [green]✓[/] both bridges running (`cdc-bridge serve` + `run` each)\n")

    def stop_bridges(self) -> None:
        """Every bridge process is told to stop at once, and all get one shared grace period
        (a relay finishes in-flight work within its `shutdown_timeout_s`, 20 s by default):
        stopping them one after another could take four times as long. One that does not
        stop in time is killed, and the end of its log is shown."""
        named = [
            (side, name, process)
            for side in self.sides.values()
            for name, process in zip(("serve", "run"), side.processes, strict=False)
        ]
        for _, _, process in named:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 25
        for side, name, process in named:
            try:
                process.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
                self.report_killed(side, name)
        for side in self.sides.values():
            side.processes.clear()

    def report_killed(self, side: Side, command: str) -> None:
        log = side.logs / f"{command}.log"
        tail = log.read_text(errors="replace").splitlines()[-20:] if log.exists() else []
        self.console.print(
            f"[bold red]{side.name} `{command}` did not stop within 25 s of SIGTERM and was"
            " killed.[/] The end of its log:",
            markup=True,
        )
        self.console.print("\n".join(tail), markup=False, highlight=False)

    def teardown(self) -> None:
        self.stop_bridges()
        if self.server is not None:
            self.server.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    @contextlib.contextmanager
    def paused_relays(self) -> Iterator[None]:
        """Freeze both relays so that two edits cross in flight (a real conflict)."""
        relays = [side.processes[1] for side in self.sides.values()]
        for process in relays:
            process.send_signal(signal.SIGSTOP)
        try:
            yield
        finally:
            for process in relays:
                process.send_signal(signal.SIGCONT)

    # ------------------------------------------------------------- the story

    def say(self, side: str, text: str) -> None:
        colour = "cyan" if side == "erp" else "magenta"
        self.console.print(f"[bold {colour}]{side:>4}[/] ▸ {text}")

    def arrived(self, side: str, rule: str, seconds: float) -> None:
        self.console.print(
            f"       [green]→ in {side} after {seconds * 1000:.0f} ms[/]  [dim]{rule}[/]"
        )

    def story(self) -> None:
        self.products()
        self.customers()
        self.order()
        self.conflict()
        self.replay()

    def products(self) -> None:
        erp, shop = self.sides["erp"], self.sides["shop"]
        self.console.rule("1-way, one SOR: the ERP's items are the shop's products")
        self.say("erp", "INSERT items ITEM-1 'Cordless drill' status 'A', ITEM-2 'Saw' status 'I'")
        erp.execute(
            "INSERT INTO items VALUES ('ITEM-1', 'Cordless drill', 129.90, 'A', %s::jsonb),"
            "('ITEM-2', 'Saw', 24.50, 'I', NULL)",
            ('{"weight_g": 1650, "batch": ' + BIG + "}",),
        )
        took = self.wait_for(
            "both products in shop", lambda: shop.value("SELECT count(*) FROM products") == 2
        )
        self.arrived("shop", "items: sor local at erp; products: sor peer at shop", took)
        for row in shop.rows(
            sql.SQL(
                "SELECT id, sku_code, label, net_price, gross_price, visible, tax_class "
                "FROM products JOIN product_prices ON product_id = id ORDER BY sku_code"
            )
        ):
            self.console.print(
                "       shop products id {} (its own): sku_code {}, label {!r}, net {} (in "
                "product_prices), gross {} (computed), visible {} (from the code), tax_class {} "
                "(default)".format(*row)
            )
        self.say("shop", "UPDATE products SET label = 'Drill'  (a local edit of ERP-owned data)")
        refusal = self.refused(
            shop, "UPDATE products SET label = 'Drill' WHERE sku_code = 'ITEM-1'"
        )
        self.console.print(f"       [red]✗ refused by the guard:[/] {refusal}")

    def customers(self) -> None:
        erp, shop = self.sides["erp"], self.sides["shop"]
        self.console.rule("2-way, one SOR per field: the ERP owns the name, the shop the phone")
        self.say("erp", "INSERT customer CUST-1042 'Anna Müller'")
        erp.execute(
            "INSERT INTO customers VALUES ('CUST-1042', 'Anna Müller', 'anna@example.com', "
            "NULL, 50000)"
        )
        took = self.wait_for(
            "CUST-1042 in shop", lambda: shop.value("SELECT count(*) FROM customers") == 1
        )
        self.arrived("shop", "the shop generated its own id; the bridge's xref keeps it", took)
        anna = shop.value(
            "SELECT (local_key ->> 'id')::bigint FROM cdc_bridge.entity_xref "
            "WHERE entity = 'customer' AND entity_key = '{\"number\": \"CUST-1042\"}'"
        )
        self.console.print(
            f"       cdc_bridge.entity_xref: customer CUST-1042 ↔ shop customers id {anna}"
        )
        self.say("erp", "UPDATE CUST-1042 name = 'Anna Müller-Lüdenscheidt'")
        self.say("shop", f"UPDATE customer {anna} phone = '+49 30 1234'  (same moment)")
        erp.execute(
            "UPDATE customers SET name = 'Anna Müller-Lüdenscheidt' WHERE customer_no = 'CUST-1042'"
        )
        shop.execute("UPDATE customers SET phone = '+49 30 1234' WHERE id = %s", (anna,))
        took = self.wait_for(
            "both fields on both sides",
            lambda: (
                erp.value("SELECT phone FROM customers") == "+49 30 1234"
                and shop.value("SELECT full_name FROM customers") == "Anna Müller-Lüdenscheidt"
            ),
        )
        self.arrived("both", "each side ships only the fields it owns", took)

    def order(self) -> None:
        erp, shop = self.sides["erp"], self.sides["shop"]
        self.console.rule(
            "1-way, SOR handoff: an order and its lines are born in the shop, then owned by the ERP"
        )
        anna = shop.value("SELECT id FROM customers")
        drill, saw = (r[0] for r in shop.rows(sql.SQL("SELECT id FROM products ORDER BY sku_code")))
        self.say(
            "shop",
            f"one transaction: INSERT order for customer {anna}, lines 2 x product {drill}, "
            f"1 x product {saw}",
        )
        order = shop.value(
            "WITH o AS (INSERT INTO orders (customer_id, total) VALUES (%s, 284.30) "
            "RETURNING id), l AS (INSERT INTO order_lines (order_id, product_id, quantity, "
            "unit_price) SELECT o.id, v.product, v.quantity, v.price FROM o, (VALUES "
            "(%s::bigint, 2, 129.90), (%s::bigint, 1, 24.50)) AS v(product, quantity, price)) "
            "SELECT id FROM o",
            (anna, drill, saw),
        )
        number = f"shop-{order}"
        took = self.wait_for(
            f"order {number} and its lines in erp",
            lambda: (
                erp.value("SELECT count(*) FROM sales_order_lines WHERE order_no = %s", (number,))
                == 2
            ),
        )
        self.arrived("erp", "orders, order lines: handoff at shop, adopt at erp", took)
        head = erp.rows(
            sql.SQL(
                "SELECT order_no, customer_no, state FROM sales_orders WHERE order_no = {}"
            ).format(sql.Literal(number))
        )
        order_no, customer_no, state = head[0]
        self.console.print(
            f"       erp sales_orders {order_no}: customer {customer_no} (shop id {anna}), "
            f"state {state!r} (shop: 'open')"
        )
        for line, order_no, item in erp.rows(
            sql.SQL(
                "SELECT line_no, order_no, item_no FROM sales_order_lines "
                "WHERE order_no = {} ORDER BY item_no"
            ).format(sql.Literal(number))
        ):
            self.console.print(f"       erp sales_order_lines {line}: order {order_no}, {item}")
        self.wait_for(
            "the handoff to be recorded",
            lambda: shop.value("SELECT count(*) FROM cdc_bridge.handoffs") == 3,
        )
        self.say("shop", f"UPDATE order {order} total = 1.00  (after the handoff)")
        refusal = self.refused(shop, "UPDATE orders SET total = 1.00 WHERE id = %s", (order,))
        self.console.print(f"       [red]✗ refused:[/] {refusal}")
        self.say("erp", f"UPDATE order {number} state = 'S'  (the ERP owns it now)")
        erp.execute("UPDATE sales_orders SET state = 'S' WHERE order_no = %s", (number,))
        self.console.print("       [green]✓ accepted[/] [dim](not shipped back: adopt)[/]")

    def conflict(self) -> None:
        erp, shop = self.sides["erp"], self.sides["shop"]
        self.console.rule("2-way, two SORs for one field: a conflict on the email, newer_wins")
        with self.paused_relays():
            self.say("erp", "UPDATE CUST-1042 email = 'anna.mueller@example.com'")
            erp.execute(
                "UPDATE customers SET email = 'anna.mueller@example.com' "
                "WHERE customer_no = 'CUST-1042'"
            )
            time.sleep(0.05)
            self.say(
                "shop",
                "UPDATE email_address = 'anna@shop.example'  (50 ms later, before either "
                "change has travelled)",
            )
            shop.execute("UPDATE customers SET email_address = 'anna@shop.example'")
        took = self.wait_for(
            "the email to converge",
            lambda: (
                erp.value("SELECT email FROM customers")
                == shop.value("SELECT email_address FROM customers")
                == "anna@shop.example"
            ),
        )
        self.arrived(
            "both",
            "conflict detected (old value differs); newer_wins: the shop's "
            "later edit wins on both sides",
            took,
        )
        self.show_conflicts()

    def replay(self) -> None:
        erp, shop = self.sides["erp"], self.sides["shop"]
        self.console.rule("A change the peer rejects, then replays")
        self.say("erp", "UPDATE ITEM-1 unit_price = 1200.00  (the shop caps net prices below 1000)")
        erp.execute("UPDATE items SET unit_price = 1200.00 WHERE item_no = 'ITEM-1'")
        self.wait_for(
            "the rejection", lambda: erp.value("SELECT count(*) FROM cdc_bridge.failed") == 1
        )
        reason = erp.value("SELECT reason FROM cdc_bridge.failed")
        self.console.print(f"       [red]✗ rejected by shop, kept for replay:[/] {reason}")
        self.say(
            "shop", "ALTER TABLE product_prices: raise the price cap (the shop's DBA fixes it)"
        )
        shop.execute(
            "ALTER TABLE product_prices DROP CONSTRAINT price_cap, "
            "ADD CONSTRAINT price_cap CHECK (net_price < 5000)"
        )
        self.say("erp", "cdc-bridge replay --failed --reason 'shop raised the price cap'")
        self.cli(erp, "replay", "--failed", "--reason", "shop raised the price cap")
        took = self.wait_for(
            "the replay to arrive",
            lambda: (
                str(
                    shop.value(
                        "SELECT net_price FROM product_prices JOIN products ON id = product_id "
                        "WHERE sku_code = 'ITEM-1'"
                    )
                )
                == "1200.000000"
            ),
        )
        self.arrived("shop", "replayed with its original idempotency key", took)

    def show_conflicts(self) -> None:
        conflicts = sql.SQL(
            "SELECT local_value, peer_value, policy, winner FROM cdc_bridge.conflicts"
        )
        for side in self.sides.values():
            for local, peer, policy, winner in side.rows(conflicts):
                self.console.print(
                    f"       [yellow]conflict recorded in {side.name}:[/] local {local!r}, "
                    f"peer {peer!r}, policy {policy}, winner {winner}"
                )

    def refused(self, side: Side, statement: str, params: Sequence[Any] = ()) -> str:
        try:
            side.execute(statement, params)
        except psycopg.Error as exc:
            return str(exc).splitlines()[0]
        raise DemoError(f"{side.name} accepted a write the guard should refuse: {statement}")

    # ------------------------------------------------------------- the verdict

    def converged(self) -> bool:
        """Each entity's records at both sides, as `row(...)::text` of the same fields."""
        erp, shop = self.sides["erp"], self.sides["shop"]
        table = Table(title="Both databases, record by record (each side's row as text)")
        for column in ("entity", "key", "erp", "shop", ""):
            table.add_column(column, overflow="fold")
        all_equal = True
        for entity, (erp_query, shop_query) in ENTITIES.items():
            left = dict(erp.rows(query(erp_query, schema="cdc_bridge")))
            right = dict(shop.rows(query(shop_query, schema="cdc_bridge")))
            for key in sorted(set(left) | set(right)):
                a, b = left.get(key), right.get(key)
                equal = a is not None and a == b
                all_equal &= equal
                mark = "[green]✓[/]" if equal else "[red]≠[/]"
                table.add_row(entity, key, str(a), "same" if equal else str(b), mark)
        self.console.print(table)
        self.console.print(
            "[dim]An order's state is left out: the ERP owns the order after the handoff "
            "and does not ship its state back.[/]"
        )
        return all_equal

    def no_echo(self) -> bool:
        """After the writes stop, neither outbox grows any more."""

        def pending(side: Side) -> int:
            return int(side.value("SELECT count(*) FROM cdc_bridge.outbox"))

        with contextlib.suppress(DemoError):
            self.wait_for(
                "both outboxes to drain",
                lambda: all(pending(s) == 0 for s in self.sides.values()),
                timeout=15,
            )
        return all(pending(s) == 0 for s in self.sides.values())

    # ------------------------------------------------------------- entry point

    def run(self) -> bool:
        self.console.print(
            Panel.fit(
                "[bold]cdc-bridge demo[/]: an ERP and a shop kept in step by two bridges\n"
                "Every change below is made with plain SQL; triggers capture it,\n"
                "the relay ships it, and the other side's `serve` applies it.",
                border_style="blue",
            )
        )
        try:
            self.setup()
            self.start_bridges()
            self.story()
            drained = self.no_echo()
            ok = self.converged() and drained
            self.console.print(
                "\n[bold green]Converged.[/] No echo: both outboxes are empty."
                if ok
                else "\n[bold red]Not converged[/] (see the table above)."
            )
            if self.keep_running:
                self.hold()
            return ok
        finally:
            self.teardown()

    def hold(self) -> None:
        assert self.server is not None
        self.console.print("\n[bold]Still running.[/] Write SQL on either side and watch it flow:")
        for side in self.sides.values():
            self.console.print(
                f"  {side.name}: psql '{side.dsn}'\n"
                f"        cdc-bridge --config {side.config} status   "
                f"(set BRIDGE_SECRET={DEMO_SECRET} and the variables below)\n"
                f"        metrics http://127.0.0.1:{side.metrics_port}/metrics   "
                f"inbound http://127.0.0.1:{side.inbound_port}"
            )
        for key, value in sorted(self.env().items()):
            if key.endswith(("_DATABASE_URL", "_PORT")) or key == "BRIDGE_SECRET":
                self.console.print(f"  export {key}='{value}'")
        self.console.print("Press Ctrl-C to stop.")
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                self._fail_if_a_bridge_died()
                time.sleep(0.5)


def alembic_env_dir() -> Path:
    """The Alembic environment: the checkout's migrations/, or the copy inside the wheel."""
    package = Path(__file__).resolve().parent.parent
    checkout = package.parent / "migrations"
    return checkout if (checkout / "env.py").is_file() else package / "alembic_env"


def _port_checker(port: int) -> Callable[[], bool]:
    return lambda: _port_open(port)


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def run_demo(keep_running: bool = False, console: Console | None = None) -> bool:
    return Demo(console or Console(), keep_running=keep_running).run()
