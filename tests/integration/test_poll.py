"""`cdc-bridge poll` against a commerce-like API on 127.0.0.1: customers modified in the
API are read in, page by page, from a cursor kept in the bridge schema."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from cdc_bridge.config import BridgeConfig, parse_config
from cdc_bridge.inbound.poll import Poller
from tests.commerce_api import CommerceApi, Credential
from tests.helpers import install
from tests.relay_support import CLI, kill, wait_until

API_KEY = "poll-api-key"
HOUR_AGO = datetime.now(UTC) - timedelta(hours=1)


def poll_config_data(dsn: str, api: CommerceApi, page: dict[str, Any]) -> dict[str, Any]:
    return {
        "system": "shop",
        "database": {"url": dsn},
        "peer": {
            "name": "erp",
            "url": api.url,
            "adapter": "rest",
            "auth": {"kind": "api_key", "key_env": "ERP_API_KEY", "header": "X-Api-Key"},
        },
        "relay": {"metrics_listen": None},
        "inbound": {
            "polls": [
                {
                    "name": "customers",
                    "table": "public.customers",
                    "path": "/api/customers",
                    "modified_since": "modified_after",
                    "modified_field": "/date_modified",
                    "fields": {"id": "/id", "name": "/first_name", "email": "/email"},
                    "page": page,
                    "interval_s": 0.2,
                    "overlap_s": 1,
                }
            ]
        },
        "tables": {"public.customers": {"key": ["id"], "sor": "peer"}},
    }


PAGED = {"kind": "page", "param": "page", "size_param": "per_page", "size": 10}
LINKED = {"kind": "link", "size_param": "per_page", "size": 10}


def poll_config(dsn: str, api: CommerceApi, page: dict[str, Any] = PAGED) -> BridgeConfig:
    return parse_config(yaml.safe_dump(poll_config_data(dsn, api, page)), "poll.yaml", {})


@pytest.fixture(autouse=True)
def api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ERP_API_KEY", API_KEY)


def seed(api: CommerceApi, count: int) -> None:
    for i in range(1, count + 1):
        api.put_customer(
            i, HOUR_AGO + timedelta(seconds=i), first_name=f"Customer {i}", email=f"c{i}@x.test"
        )


def local(dsn: str) -> list[str]:
    with psycopg.connect(dsn) as conn:
        return [r[0] for r in conn.execute("SELECT c::text FROM customers c ORDER BY id")]


def expected(dsn: str, api: CommerceApi) -> list[str]:
    """The API's customers as PostgreSQL prints such rows."""
    with api.lock:
        records = sorted(api.state.customers.values(), key=lambda c: c["id"])
    with psycopg.connect(dsn) as conn:
        return [
            conn.execute(
                "SELECT ROW(%s::bigint, %s::text, %s::text, NULL::text)::text",
                (c["id"], c["first_name"], c["email"]),
            ).fetchone()[0]  # type: ignore[index]
            for c in records
        ]


def poll_once(config: BridgeConfig, full: bool = False) -> int:
    """One read of the configured poll (a whole one, with its deletions, with `full`)."""
    poller = Poller(config, {"ERP_API_KEY": API_KEY})
    source = config.inbound.polls[0]
    try:
        with psycopg.connect(config.database.url.get_secret_value(), autocommit=True) as conn:
            if full:
                return poller.compare_once(conn, source)
            return poller.poll_once(conn, source)
    finally:
        poller.close()


@pytest.mark.parametrize("page", [PAGED, LINKED], ids=["page-numbers", "link-header"])
def test_customers_modified_in_the_api_are_polled_in(db: str, page: dict[str, Any]) -> None:
    with CommerceApi(Credential("header", API_KEY, name="X-Api-Key")) as api:
        config = poll_config(db, api, page)
        install(config)
        seed(api, 25)
        assert poll_once(config) == 25
        assert local(db) == expected(db, api)
        api.put_customer(7, HOUR_AGO + timedelta(minutes=30), first_name="Renamed")
        assert poll_once(config) == 1  # what the overlap reads again is a duplicate
        assert local(db) == expected(db, api)
        assert api.state.unauthorized == 0
    with psycopg.connect(db) as conn:
        cursor = conn.execute("SELECT cursor FROM cdc_bridge.poll_cursors").fetchone()
    assert cursor == ((HOUR_AGO + timedelta(minutes=30)).isoformat(),)


def test_a_record_modified_during_a_read_is_caught_by_the_next_read(db: str) -> None:
    """Customer 2 is modified after page 1 was served: it moves to the end of the list,
    and customer 11, unmodified, slides onto page 1, which was already read."""
    with CommerceApi(Credential("header", API_KEY, name="X-Api-Key")) as api:
        config = poll_config(db, api)
        install(config)
        seed(api, 25)

        def modify_mid_read(page: int) -> None:
            if page == 2 and api.state.customers[2]["first_name"] == "Customer 2":
                api.put_customer(2, datetime.now(UTC), first_name="Changed mid-read")

        api.state.on_page = modify_mid_read
        poll_once(config)
        first_read = local(db)
        poll_once(config)
    assert [r for r in first_read if r.startswith("(11,")] == []  # the shift did happen
    assert local(db) == expected(db, api)


def test_a_poller_killed_mid_read_resumes_with_nothing_missed(db: str, tmp_path: Path) -> None:
    with CommerceApi(Credential("header", API_KEY, name="X-Api-Key")) as api:
        path = tmp_path / "poll.yaml"
        path.write_text(yaml.safe_dump(poll_config_data(db, api, PAGED)))
        install(poll_config(db, api))
        seed(api, 45)
        held, release = threading.Event(), threading.Event()

        def hold_page_3(page: int) -> None:
            if page == 3 and not release.is_set():
                held.set()
                release.wait(60)

        api.state.on_page = hold_page_3
        poller = subprocess.Popen([CLI, "--config", str(path), "poll"])
        try:
            assert held.wait(60), "the poller never reached page 3"
            assert kill(poller, signal.SIGKILL) == -signal.SIGKILL
            release.set()
            assert len(local(db)) == 20  # pages 1 and 2 were applied, no cursor saved
            with psycopg.connect(db) as conn:
                assert conn.execute("SELECT count(*) FROM cdc_bridge.poll_cursors").fetchone() == (
                    0,
                )
            poller = subprocess.Popen([CLI, "--config", str(path), "poll"])
            wait_until(lambda: local(db) == expected(db, api), what="every customer")
        finally:
            kill(poller)


def test_a_record_deleted_in_the_api_disappears_after_the_full_comparison(
    db: str, tmp_path: Path
) -> None:
    with CommerceApi(Credential("header", API_KEY, name="X-Api-Key")) as api:
        path = tmp_path / "poll.yaml"
        path.write_text(yaml.safe_dump(poll_config_data(db, api, PAGED)))
        config = poll_config(db, api)
        install(config)
        seed(api, 25)
        poll_once(config)
        api.delete_customer(3)
        api.delete_customer(17)
        assert poll_once(config) == 0  # a modified-since read cannot see a deletion
        assert len(local(db)) == 25
        assert poll_once(config, full=True) == 2
        assert local(db) == expected(db, api)
        assert poll_once(config, full=True) == 0  # nothing more to delete, nothing applied twice
        api.delete_customer(25)
        done = subprocess.run(
            [CLI, "--config", str(path), "poll", "--once", "--full"],
            env={**os.environ, "ERP_API_KEY": API_KEY},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        assert local(db) == expected(db, api)
        assert len(local(db)) == 22


def test_a_record_that_slips_past_a_read_is_not_deleted(db: str) -> None:
    """Customer 1 is deleted after page 1 was served: customer 11 slides onto page 1,
    already read, so the first whole read misses it. The second read lists it."""
    with CommerceApi(Credential("header", API_KEY, name="X-Api-Key")) as api:
        config = poll_config(db, api)
        install(config)
        seed(api, 25)
        poll_once(config)

        def delete_mid_read(page: int) -> None:
            if page == 2 and 1 in api.state.customers:
                api.delete_customer(1)

        api.state.on_page = delete_mid_read
        assert poll_once(config, full=True) == 0  # 11 was missed once, 1 listed once: both kept
        assert len(local(db)) == 25
        api.state.on_page = None
        assert poll_once(config, full=True) == 1
        assert local(db) == expected(db, api)
        assert [r for r in local(db) if r.startswith("(11,")] != []


def test_a_whole_read_that_saw_a_record_change_deletes_nothing(db: str) -> None:
    with CommerceApi(Credential("header", API_KEY, name="X-Api-Key")) as api:
        config = poll_config(db, api)
        install(config)
        seed(api, 25)
        poll_once(config)
        api.delete_customer(5)

        def modify_mid_read(page: int) -> None:
            if page == 2 and api.state.customers[3]["first_name"] == "Customer 3":
                api.put_customer(3, datetime.now(UTC), first_name="Changed mid-read")

        api.state.on_page = modify_mid_read
        assert poll_once(config, full=True) == 0  # not settled: customer 5 stays for now
        assert [r for r in local(db) if r.startswith("(5,")] != []
        api.state.on_page = None
        # Customer 3's change settles (the API dates it back, as a long transaction would).
        api.put_customer(3, HOUR_AGO + timedelta(minutes=30), first_name="Changed mid-read")
        assert poll_once(config, full=True) == 1
        assert local(db) == expected(db, api)
