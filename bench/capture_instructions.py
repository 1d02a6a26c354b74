"""Capture cost in instructions: what one single-row statement costs each design, counted
by valgrind, so the figures do not depend on what else the machine is doing.

Run:  .venv/bin/python bench/capture_instructions.py [--statements N] [--pg-bin DIR]
          [--workloads update,insert] [--variants ...]

pgbench (bench/capture.py) measures tps, the target itself, but on a shared 2-core machine
its ratios move by 10-20% from run to run. This bench counts CPU instructions instead
(valgrind's callgrind), which repeat exactly. It starts its own cluster (the embedded
PostgreSQL 18 binaries, or those of `--pg-bin`, e.g. /usr/lib/postgresql/15/bin, which has
PgQ when `postgresql-15-pgq3` is installed), creates the same databases as
bench/capture.py (`capture_sql/`), stops it, and runs each database's backend in
single-user mode under callgrind twice: with a few statements and with N more, each
statement its own transaction as in pgbench. The difference divided by N is what one
statement costs, without start-up.

Besides the designs of bench/capture.py it measures the install with one part taken out
each, to show what each part costs (none of these is a working capture):
- `no_wake`: the relay wake-up condition (capture.sql: capture_wake) replaced by `true`;
- `no_origin`: the origin test (echo suppression) replaced by the system's name;
- `invoker`: the capture functions run as the writer, with the writer's search_path;
- `no_txid_index`: the outbox without its (txid, id) indexes (whole-transaction reads);
- `bare`: all four;
- `no_key`: the key (`jsonb_build_object` of the key columns) replaced by a constant;
- `no_key_txid`: no key and no (txid, id) indexes (what the outbox's shape costs).

`--workloads bulk` counts one UPDATE of all 100k rows instead (`capture_sql/bulk_update.sql`,
after three single-row updates in the same session, as bench/capture.py runs it), against
the same UPDATE without a trigger; `--keep DIR` keeps its callgrind files, for
`callgrind_annotate --inclusive=yes`.

Needs valgrind (Debian: `apt-get install valgrind`).
"""

from __future__ import annotations

import argparse
import os
import pwd
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.capture import HERE, REFERENCES, install
from bench.capture import LABELS as DESIGN_LABELS
from cdc_bridge.embedded import UNPRIVILEGED_USER, _child_setup, _free_port, _reachable_install_dir

PARTS = {
    "no_wake": "cdc-bridge without the wake-up condition",
    "no_origin": "cdc-bridge without the origin test",
    "invoker": "cdc-bridge, functions run as the writer",
    "no_txid_index": "cdc-bridge without the txid index",
    "bare": "cdc-bridge without all four",
    "no_key": "cdc-bridge, key not built",
    "no_key_txid": "cdc-bridge, no key, no txid index",
}
# What `bare` takes out.
_BARE = ("no_wake", "no_origin", "invoker", "no_txid_index")
# The key of every capture part: jsonb_build_object of the key columns of n or o.
_KEY = re.compile(r"""pg_catalog\.jsonb_build_object\('id', [no]\."id"\)""")
LABELS = {**DESIGN_LABELS, "shipping": "cdc-bridge install", **PARTS}
DEFAULT_VARIANTS = (
    "plain", "shipping", "per_field", "where", *REFERENCES, "noop_trigger", "constant_row",
    *PARTS,
)  # fmt: skip
STATEMENTS = {
    "update": "UPDATE public.items SET qty = qty + 1 WHERE id = {id};\n",
    "insert": (
        "INSERT INTO public.items (name, qty, price, note)"
        " VALUES ('new item', 1, 9.99, 'inserted by pgbench');\n"
    ),
}
WARMUP = 300
# The bulk workload: one UPDATE of all 100k rows (capture_sql/bulk_update.sql) after a few
# single-row updates in the same session (as bench/capture.py runs it: a plan cached for
# one row would show).
BULK_WARMUP = (
    "UPDATE public.items SET qty = qty + 1 WHERE id = 1;\n"
    "UPDATE public.items SET qty = qty + 1 WHERE id = 2;\n"
    "UPDATE public.items SET qty = qty + 1 WHERE id = 3;\n"
)
_WAKE = re.compile(r"\(SELECT pg_catalog\.pg_try_advisory_xact_lock_shared\(.*?IS NOT NULL\)")
_ORIGIN = re.compile(r"CASE WHEN pg_catalog\.current_setting\('cdc_bridge\.origin'.*? END")
KEEP: Path | None = None  # --keep: where the bulk workload's callgrind files are copied
_TOTAL = re.compile(r"^(?:summary|totals): (\d+)", re.MULTILINE)


class Cluster:
    """A throw-away cluster this bench starts, stops and then reads in single-user mode."""

    def __init__(self, bin_dir: Path | None) -> None:
        self.run_as = pwd.getpwnam(UNPRIVILEGED_USER) if os.geteuid() == 0 else None
        self.bin = bin_dir or _reachable_install_dir(self.run_as) / "bin"
        self.root = Path(tempfile.mkdtemp(prefix="cdc-bridge-instructions-"))
        self.data = self.root / "data"
        self.port = _free_port()
        self.process: subprocess.Popen[bytes] | None = None
        if self.run_as is not None:
            os.chmod(self.root, 0o711)
            os.chown(self.root, self.run_as.pw_uid, self.run_as.pw_gid)
        self._run([str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres",
                   "--auth=trust", "--locale=C", "-E", "UTF8", "--no-sync"])  # fmt: skip

    @property
    def setup(self) -> Callable[[], None]:
        return _child_setup(self.run_as)

    def _run(self, args: list[str], stdin: Path | None = None) -> str:
        with open(stdin or os.devnull, "rb") as given:
            done = subprocess.run(
                args, stdin=given, capture_output=True, preexec_fn=self.setup, check=False
            )
        if done.returncode != 0:
            raise SystemExit(f"{Path(args[0]).name} failed: {done.stderr.decode()[-2000:]}")
        return done.stdout.decode(errors="replace")

    def dsn(self, dbname: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def start(self) -> None:
        args = [str(self.bin / "postgres"), "-D", str(self.data), "-c", f"port={self.port}",
                "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={self.root}",
                "-c", "fsync=off", "-c", "autovacuum=off"]  # fmt: skip
        self.process = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=self.setup
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                psycopg.connect(self.dsn("postgres"), connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise SystemExit("the bench's PostgreSQL did not start") from None
                time.sleep(0.1)

    def stop(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGINT)
            self.process.wait(timeout=60)
            self.process = None

    def instructions(self, dbname: str, script: Path, out: Path) -> int:
        """Instructions of one single-user backend running `script` (callgrind)."""
        if self.run_as is not None:
            os.chown(out.parent, self.run_as.pw_uid, self.run_as.pw_gid)
        self._run(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
             str(self.bin / "postgres"), "--single", "-D", str(self.data),
             "-c", "autovacuum=off", dbname],
            stdin=script,
        )  # fmt: skip
        found = _TOTAL.search(out.read_text())
        if found is None:
            raise SystemExit(f"no instruction total in {out}")
        return int(found.group(1))

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


def has_pgq(cluster: Cluster) -> bool:
    with psycopg.connect(cluster.dsn("postgres")) as conn:
        found = conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'pgq'")
        return found.fetchone() is not None


def create(cluster: Cluster, variant: str) -> None:
    name = f"bench_{variant}"
    with psycopg.connect(cluster.dsn("postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    dsn = cluster.dsn(name)
    install(dsn, "shipping" if variant in PARTS else variant)
    if variant in PARTS:
        take_out(dsn, variant)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")


def take_out(dsn: str, variant: str) -> None:
    """The install with one of its parts taken out (`PARTS`)."""
    parts = {
        "bare": set(_BARE),
        "no_key_txid": {"no_key", "no_txid_index"},
    }.get(variant, {variant})
    with psycopg.connect(dsn, autocommit=True) as conn:
        functions = conn.execute(
            "SELECT p.oid::regprocedure::text, pg_get_functiondef(p.oid) FROM pg_proc p"
            " WHERE p.pronamespace = 'cdc_bridge'::regnamespace AND p.proname LIKE 'capture%'"
        ).fetchall()
        for signature, definition in functions:
            if "no_wake" in parts:
                definition = _WAKE.sub("true", definition)
            if "no_origin" in parts:
                definition = _ORIGIN.sub("'bench'", definition)
            if "no_key" in parts:
                definition = _KEY.sub("'{}'::jsonb", definition)
            conn.execute(definition)
            if "invoker" in parts:
                conn.execute(f"ALTER FUNCTION {signature} SECURITY INVOKER RESET search_path")
        if "no_txid_index" in parts:  # the outbox's and its two tables' (rotation)
            for index in ("outbox_txid", "outbox_0_txid", "outbox_1_txid"):
                conn.execute(sql.SQL("DROP INDEX cdc_bridge.{}").format(sql.Identifier(index)))


def script(workdir: Path, workload: str, count: int) -> Path:
    path = workdir / f"{workload}_{count}.sql"
    rng = random.Random(count)
    lines = (STATEMENTS[workload].format(id=rng.randint(1, 100_000)) for _ in range(count))
    path.write_text("".join(lines))
    return path


def per_statement(
    cluster: Cluster, variant: str, workload: str, statements: int, workdir: Path
) -> float:
    if workload == "bulk":
        return bulk(cluster, variant, workdir)
    counts = []
    for count in (WARMUP, WARMUP + statements):
        out = workdir / f"{variant}.{workload}.{count}.out"
        given = script(workdir, workload, count)
        counts.append(cluster.instructions(f"bench_{variant}", given, out))
        out.unlink()
    return (counts[1] - counts[0]) / statements


def bulk(cluster: Cluster, variant: str, workdir: Path) -> float:
    """Instructions of the one 100k-row UPDATE (the session's start and warm-up aside)."""
    counts = []
    for name, text in (("warmup", BULK_WARMUP),
                       ("bulk", BULK_WARMUP + (HERE / "bulk_update.sql").read_text())):  # fmt: skip
        given = workdir / f"bulk_{name}.sql"
        given.write_text(text)
        out = workdir / f"{variant}.bulk.{name}.out"
        counts.append(cluster.instructions(f"bench_{variant}", given, out))
        if KEEP is not None:
            shutil.copy(out, KEEP / out.name)  # for callgrind_annotate
        out.unlink()
    return counts[1] - counts[0]


def report(workload: str, costs: dict[str, float]) -> None:
    if workload == "bulk":
        plain = costs["plain"]
        print("\nbulk: one UPDATE of 100k rows, instructions (x no trigger)")
        for variant, cost in costs.items():
            print(f"  {LABELS[variant]:44} {cost / 1e6:9.1f}M {cost / plain:6.2f}x")
        return
    plain = costs["plain"]
    refs = [costs[r] for r in REFERENCES if r in costs]
    best = min(refs) if refs else None
    print(f"\n{workload}, one row per statement: instructions per statement")
    print(f"  {'':44} {'total':>9} {'added':>9} {'added / best ref':>17}")
    for variant, cost in costs.items():
        added = cost - plain
        versus = "" if best is None or variant == "plain" else f"{added / (best - plain):.2f}"
        print(f"  {LABELS[variant]:44} {cost / 1000:8.1f}k {added / 1000:8.1f}k {versus:>17}")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--statements", type=int, default=2000, help="statements counted")
    parser.add_argument("--pg-bin", type=Path, help="PostgreSQL binaries (default embedded)")
    parser.add_argument("--workloads", default="update,insert", help="update,insert,bulk")
    parser.add_argument("--variants", default=",".join(DEFAULT_VARIANTS))
    parser.add_argument("--keep", type=Path, help="copy the bulk runs' callgrind files here")
    return parser.parse_args()


def main() -> None:
    global KEEP
    args = parse_args()
    KEEP = args.keep
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (Debian: apt-get install valgrind)")
    variants = [v for v in args.variants.split(",") if v]
    cluster = Cluster(args.pg_bin)
    try:
        cluster.start()
        if not has_pgq(cluster) and "ref_pgq" in variants:
            print("PgQ is not available on this server: ref_pgq left out")
            variants.remove("ref_pgq")
        with psycopg.connect(cluster.dsn("postgres")) as conn:
            print(conn.execute("SELECT version()").fetchone()[0])  # type: ignore[index]
        for variant in variants:
            create(cluster, variant)
        cluster.stop()
        workdir = cluster.root / "work"
        workdir.mkdir()
        for workload in args.workloads.split(","):
            report(workload, {v: per_statement(cluster, v, workload, args.statements, workdir)
                              for v in variants})  # fmt: skip
    finally:
        cluster.remove()


if __name__ == "__main__":
    main()
