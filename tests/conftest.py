from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.peer import PeerServer
from tests.pg import TestServer, start_test_server

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="session")
def pg_server() -> Iterator[TestServer]:
    yield from start_test_server()


@pytest.fixture(scope="session")
def template_db(pg_server: TestServer) -> str:
    """A database with the sample application tables, cloned by each test."""
    name = pg_server.new_name("template")
    dsn = pg_server.create_database(name)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute((FIXTURES / "schema.sql").read_text())
    return name


@pytest.fixture
def db(pg_server: TestServer, template_db: str) -> Iterator[str]:
    """The DSN of a fresh copy of the template database."""
    name = pg_server.new_name("db")
    dsn = pg_server.create_database(name, template=template_db)
    yield dsn
    pg_server.drop_database(name)


@pytest.fixture
def peer() -> Iterator[PeerServer]:
    """A real bridge peer on 127.0.0.1 (tests/peer.py), one per test."""
    with PeerServer() as test_peer:
        yield test_peer
