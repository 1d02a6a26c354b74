"""`cdc-bridge demo`: two databases, two bridges, one short business story.

Everything runs locally: an embedded PostgreSQL with databases `erp` and `shop`, and for
each side the bridge's own `serve` and `run` processes, started exactly as an operator
would start them. The story walks through the four sync paths, one conflict and one
rejected change that is replayed, then checks that both databases agree field by field.
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

DEMO_SECRET = "demo-shared-secret"
WAIT_S = 30.0

# Per table: the key and the fields both sides hold, compared at the end.
SYNCED: dict[str, tuple[str, tuple[str, ...]]] = {
    "customers": ("id", ("name", "email", "tier")),
    "orders": ("id", ("customer_id", "total", "status")),
    "products": ("sku", ("name", "price", "description")),
    "accounts": ("id", ("company_name", "credit_limit")),
}


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

    def rows(self, query: sql.Composable) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            return conn.execute(query.as_string(conn)).fetchall()


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
        for side in self.sides.values():
            for process in side.processes:
                if process.poll() is None:
                    process.send_signal(signal.SIGTERM)
            for process in side.processes:
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            side.processes.clear()

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
        erp, shop = self.sides["erp"], self.sides["shop"]

        self.console.rule("1-way, one SOR: customers belong to the ERP")
        self.say("erp", "INSERT customer 1 'Ada Lovelace Ltd'")
        erp.execute(
            "INSERT INTO customers VALUES (1, 'Ada Lovelace Ltd', 'ada@example.com', 'gold')"
        )
        took = self.wait_for(
            "customer 1 in shop",
            lambda: shop.value("SELECT name FROM customers WHERE id = 1") == "Ada Lovelace Ltd",
        )
        self.arrived("shop", "customers: sor local at erp, peer at shop", took)
        self.say("shop", "UPDATE customer 1 tier = 'platinum'  (a local edit of ERP-owned data)")
        refusal = self.refused(shop, "UPDATE customers SET tier = 'platinum' WHERE id = 1")
        self.console.print(f"       [red]✗ refused by the guard:[/] {refusal}")

        self.console.rule("1-way, SOR handoff: an order is born in the shop, then owned by the ERP")
        self.say("shop", "INSERT order 100 for customer 1, total 42.00")
        shop.execute("INSERT INTO orders VALUES (100, 1, 42.00, 'new')")
        took = self.wait_for(
            "order 100 in erp",
            lambda: erp.value("SELECT total FROM orders WHERE id = 100") is not None,
        )
        self.arrived("erp", "orders: handoff at shop, adopt at erp", took)
        self.wait_for(
            "the handoff to be recorded",
            lambda: shop.value("SELECT count(*) FROM cdc_bridge.handoffs") == 1,
        )
        self.say("shop", "UPDATE order 100 total = 1.00  (after the handoff)")
        refusal = self.refused(shop, "UPDATE orders SET total = 1.00 WHERE id = 100")
        self.console.print(f"       [red]✗ refused:[/] {refusal}")
        self.say("erp", "UPDATE order 100 status = 'shipped'  (the ERP owns it now)")
        erp.execute("UPDATE orders SET status = 'shipped' WHERE id = 100")
        self.console.print("       [green]✓ accepted[/] [dim](not shipped back: adopt)[/]")

        self.console.rule("2-way, one SOR per field: ERP owns name/price, shop owns description")
        self.say("erp", "INSERT product LAMP-1 'Desk lamp' 39.90")
        erp.execute("INSERT INTO products VALUES ('LAMP-1', 'Desk lamp', 39.90, NULL)")
        self.wait_for(
            "LAMP-1 in shop",
            lambda: shop.value("SELECT name FROM products WHERE sku = 'LAMP-1'") == "Desk lamp",
        )
        self.say("erp", "UPDATE LAMP-1 price = 34.90")
        self.say("shop", "UPDATE LAMP-1 description = 'Warm light, brass finish'  (same moment)")
        erp.execute("UPDATE products SET price = 34.90 WHERE sku = 'LAMP-1'")
        shop.execute(
            "UPDATE products SET description = 'Warm light, brass finish' WHERE sku = 'LAMP-1'"
        )
        took = self.wait_for(
            "both fields on both sides",
            lambda: (
                erp.value("SELECT description FROM products WHERE sku = 'LAMP-1'")
                == "Warm light, brass finish"
                and str(shop.value("SELECT price FROM products WHERE sku = 'LAMP-1'")) == "34.90"
            ),
        )
        self.arrived("both", "each side ships only the fields it owns", took)

        self.console.rule("2-way, two SORs for one field: a conflict, resolved by newer_wins")
        erp.execute("INSERT INTO accounts VALUES (7, 'Globex', 5000)")
        self.wait_for(
            "account 7 in shop",
            lambda: shop.value("SELECT company_name FROM accounts WHERE id = 7") == "Globex",
        )
        with self.paused_relays():
            self.say("erp", "UPDATE account 7 company_name = 'Globex Corporation'")
            erp.execute("UPDATE accounts SET company_name = 'Globex Corporation' WHERE id = 7")
            time.sleep(0.05)
            self.say(
                "shop",
                "UPDATE account 7 company_name = 'Globex Corp.'  (50 ms later, "
                "before either change has travelled)",
            )
            shop.execute("UPDATE accounts SET company_name = 'Globex Corp.' WHERE id = 7")
        took = self.wait_for(
            "account 7 to converge",
            lambda: (
                erp.value("SELECT company_name FROM accounts WHERE id = 7")
                == shop.value("SELECT company_name FROM accounts WHERE id = 7")
                == "Globex Corp."
            ),
        )
        self.arrived(
            "both",
            "conflict detected (old value differs); newer_wins: the shop's "
            "later edit wins on both sides",
            took,
        )
        self.show_conflicts()

        self.console.rule("A change the peer rejects, then replays")
        self.say("erp", "UPDATE LAMP-1 price = 1200.00  (the shop caps prices below 1000)")
        erp.execute("UPDATE products SET price = 1200.00 WHERE sku = 'LAMP-1'")
        self.wait_for(
            "the rejection", lambda: erp.value("SELECT count(*) FROM cdc_bridge.failed") == 1
        )
        reason = erp.value("SELECT reason FROM cdc_bridge.failed")
        self.console.print(f"       [red]✗ rejected by shop, kept for replay:[/] {reason}")
        self.say("shop", "ALTER TABLE products: raise the price cap (the shop's DBA fixes it)")
        shop.execute(
            "ALTER TABLE products DROP CONSTRAINT price_cap, "
            "ADD CONSTRAINT price_cap CHECK (price < 5000)"
        )
        self.say("erp", "cdc-bridge replay --failed --reason 'shop raised the price cap'")
        self.cli(erp, "replay", "--failed", "--reason", "shop raised the price cap")
        took = self.wait_for(
            "the replay to arrive",
            lambda: str(shop.value("SELECT price FROM products WHERE sku = 'LAMP-1'")) == "1200.00",
        )
        self.arrived("shop", "replayed with its original idempotency key", took)

    def show_conflicts(self) -> None:
        query = sql.SQL("SELECT local_value, peer_value, policy, winner FROM cdc_bridge.conflicts")
        for side in self.sides.values():
            for local, peer, policy, winner in side.rows(query):
                self.console.print(
                    f"       [yellow]conflict recorded in {side.name}:[/] local {local!r}, "
                    f"peer {peer!r}, policy {policy}, winner {winner}"
                )

    def refused(self, side: Side, statement: str) -> str:
        try:
            side.execute(statement)
        except psycopg.Error as exc:
            return str(exc).splitlines()[0]
        raise DemoError(f"{side.name} accepted a write the guard should refuse: {statement}")

    # ------------------------------------------------------------- the verdict

    def converged(self) -> bool:
        erp, shop = self.sides["erp"], self.sides["shop"]
        table = Table(title="Both databases, field by field")
        for column in ("table", "key", "field", "erp", "shop", ""):
            table.add_column(column)
        all_equal = True
        for name, (key, fields) in SYNCED.items():
            query = sql.SQL("SELECT {} FROM {} ORDER BY {}").format(
                sql.SQL(", ").join(map(sql.Identifier, (key, *fields))),
                sql.Identifier(name),
                sql.Identifier(key),
            )
            left = {r[0]: r for r in erp.rows(query)}
            right = {r[0]: r for r in shop.rows(query)}
            for key_value in sorted(set(left) | set(right), key=str):
                for i, field_name in enumerate(fields, start=1):
                    a = left.get(key_value, (None,) * (len(fields) + 1))[i]
                    b = right.get(key_value, (None,) * (len(fields) + 1))[i]
                    equal = a == b and key_value in left and key_value in right
                    all_equal &= equal or (name == "orders" and field_name == "status")
                    mark = "[green]✓[/]" if equal else "[yellow]≠[/]"
                    table.add_row(name, str(key_value), field_name, str(a), str(b), mark)
        self.console.print(table)
        self.console.print(
            "[dim]orders.status differs on purpose: the ERP owns the order after the handoff "
            "and does not ship it back.[/]"
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
