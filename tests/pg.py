"""The PostgreSQL server the tests use: $CDC_BRIDGE_TEST_DSN, or an embedded one.

Each test run creates its own databases (prefixed with a run id) and drops them at the
end; it never touches a database it did not create.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from cdc_bridge.embedded import EmbeddedPostgres

TEST_DSN_ENV = "CDC_BRIDGE_TEST_DSN"


@dataclass
class TestServer:
    __test__ = False  # not a test class, whatever its name

    admin_dsn: str
    run_id: str = field(default_factory=lambda: "cdcb_" + secrets.token_hex(4))
    embedded: EmbeddedPostgres | None = None
    _counter: int = 0

    def dsn(self, dbname: str) -> str:
        return make_conninfo(self.admin_dsn, dbname=dbname)

    def new_name(self, label: str = "t") -> str:
        self._counter += 1
        return f"{self.run_id}_{label}_{self._counter}"

    def admin(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self.admin_dsn, autocommit=True)

    def create_database(self, name: str, template: str | None = None) -> str:
        with self.admin() as conn:
            if template is None:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            else:
                conn.execute(
                    sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                        sql.Identifier(name), sql.Identifier(template)
                    )
                )
        return self.dsn(name)

    def drop_database(self, name: str) -> None:
        with self.admin() as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                (name,),
            )
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))

    def drop_run_databases(self) -> None:
        with self.admin() as conn:
            names = [
                r[0]
                for r in conn.execute(
                    "SELECT datname FROM pg_database WHERE datname LIKE %s",
                    (self.run_id + "\\_%",),
                )
            ]
        for name in names:
            self.drop_database(name)


def start_test_server() -> Iterator[TestServer]:
    dsn = os.environ.get(TEST_DSN_ENV)
    if dsn:
        params = conninfo_to_dict(dsn)
        params.setdefault("dbname", "postgres")
        server = TestServer(admin_dsn=make_conninfo(**params))  # type: ignore[arg-type]
        try:
            yield server
        finally:
            server.drop_run_databases()
        return
    with EmbeddedPostgres() as embedded:
        yield TestServer(admin_dsn=embedded.dsn, embedded=embedded)
