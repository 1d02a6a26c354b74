"""Two databases, two `serve`s: concurrent edits of `both` fields converge under each policy.

The relay is played by `ship`: it sends a side's own outbox rows to the other side's
server and moves them to `delivered` when acknowledged, as the relay does.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import psycopg
import pytest

from cdc_bridge.cli import main
from cdc_bridge.peer.protocol import Change, Op
from tests import pg
from tests.helpers import SECRET
from tests.integration.inbound_support import Server, load, rows, running

ACCOUNT = "SELECT company_name, address FROM accounts WHERE id = 1"


@pytest.fixture
def shop_db(pg_server: pg.TestServer, template_db: str) -> Iterator[str]:
    name = pg_server.new_name("shop")
    yield pg_server.create_database(name, template=template_db)
    pg_server.drop_database(name)


@pytest.fixture
def pair_factory(db: str, shop_db: str) -> Iterator[Any]:
    """Start both bridges with the given policies (ERP's, shop's)."""
    with ExitStack() as stack:

        def start(erp_policy: str, shop_policy: str) -> tuple[Server, Server]:
            erp = load("erp_pair.yaml", db, {"newer_wins": erp_policy})
            shop = load("shop.yaml", shop_db, {"newer_wins": shop_policy})
            return stack.enter_context(running(erp)), stack.enter_context(running(shop))

        yield start


def local_write(server: Server, statement: str, as_peer: bool = False) -> None:
    with psycopg.connect(server.dsn, autocommit=True) as conn:
        if as_peer:
            conn.execute(
                "SELECT set_config('cdc_bridge.origin', %s, false)", (server.config.peer.name,)
            )
        conn.execute(statement)


def ship(source: Server, target: Server) -> list[str]:
    """Send `source`'s own changes to `target`; returns the result statuses."""
    with psycopg.connect(source.dsn, autocommit=True) as conn:
        pending = conn.execute(
            "SELECT id, txid::text, table_name, op, key, fields, old, origin, captured_at "
            "FROM cdc_bridge.outbox WHERE origin = %s ORDER BY id",
            (source.config.system,),
        ).fetchall()
        if not pending:
            return []
        changes = [
            Change(
                idempotency_key=f"{txid}:{id_}",
                entity=table,
                op=Op.from_outbox(op),
                key=key,
                fields=fields,
                old=old,
                committed_at=captured_at,
                origin=origin,
            )
            for id_, txid, table, op, key, fields, old, origin, captured_at in pending
        ]
        response = target.send(*changes)
        acked = [
            (row[0], r.status.value)
            for row, r in zip(pending, response.results, strict=True)
            if r.status.acknowledged
        ]
        for id_, status in acked:
            conn.execute(
                "WITH gone AS (DELETE FROM cdc_bridge.outbox WHERE id = %s RETURNING *) "
                "INSERT INTO cdc_bridge.delivered (id, txid, table_name, op, key, fields, old, "
                "changed, origin, captured_at, result) SELECT id, txid, table_name, op, key, "
                "fields, old, changed, origin, captured_at, %s FROM gone",
                (id_, status),
            )
        return [r.status.value for r in response.results]


def seed_account(erp: Server, shop: Server) -> None:
    """The same account on both sides, as after an earlier sync."""
    local_write(
        erp, "INSERT INTO accounts (id, company_name, address) VALUES (1, 'Orig', 'Old St')"
    )
    assert ship(erp, shop) == ["applied"]


def conflicts(server: Server) -> list[tuple[Any, ...]]:
    return rows(
        server.dsn,
        "SELECT field, local_value, peer_value, policy, winner, status, resolved_by "
        "FROM cdc_bridge.conflicts ORDER BY id",
    )


def edit_concurrently(erp: Server, shop: Server, first: str) -> None:
    erp_edit = "UPDATE accounts SET company_name = 'ERP Co' WHERE id = 1"
    shop_edit = "UPDATE accounts SET company_name = 'Shop Co' WHERE id = 1"
    if first == "erp":
        local_write(erp, erp_edit)
        local_write(shop, shop_edit)
    else:
        local_write(shop, shop_edit)
        local_write(erp, erp_edit)


def exchange(erp: Server, shop: Server) -> None:
    assert ship(erp, shop) == ["conflict_resolved"]
    assert ship(shop, erp) == ["conflict_resolved"]
    # No echo: what each side applied for the other is never shipped back.
    assert (ship(erp, shop), ship(shop, erp)) == ([], [])


@pytest.mark.parametrize(
    ("erp_policy", "shop_policy", "first", "expected"),
    [
        ("local_wins", "peer_wins", "erp", "ERP Co"),
        ("local_wins", "peer_wins", "shop", "ERP Co"),
        ("peer_wins", "local_wins", "erp", "Shop Co"),
        ("newer_wins", "newer_wins", "erp", "Shop Co"),
        ("newer_wins", "newer_wins", "shop", "ERP Co"),
    ],
)
def test_concurrent_edits_converge_under_each_policy(
    pair_factory: Any, erp_policy: str, shop_policy: str, first: str, expected: str
) -> None:
    erp, shop = pair_factory(erp_policy, shop_policy)
    seed_account(erp, shop)
    edit_concurrently(erp, shop, first)
    exchange(erp, shop)
    assert rows(erp.dsn, ACCOUNT) == rows(shop.dsn, ACCOUNT) == [(expected, "Old St")]
    erp_winner = "local" if expected == "ERP Co" else "peer"
    shop_winner = "peer" if expected == "ERP Co" else "local"
    assert conflicts(erp) == [
        ("company_name", "ERP Co", "Shop Co", erp_policy, erp_winner, "resolved", "policy")
    ]
    assert conflicts(shop) == [
        ("company_name", "Shop Co", "ERP Co", shop_policy, shop_winner, "resolved", "policy")
    ]


def test_edits_of_different_fields_merge_without_conflict(pair_factory: Any) -> None:
    erp, shop = pair_factory("newer_wins", "newer_wins")
    seed_account(erp, shop)
    local_write(erp, "UPDATE accounts SET company_name = 'ERP Co' WHERE id = 1")
    local_write(shop, "UPDATE accounts SET address = 'New St' WHERE id = 1")
    assert ship(erp, shop) == ["applied"]
    assert ship(shop, erp) == ["applied"]
    assert rows(erp.dsn, ACCOUNT) == rows(shop.dsn, ACCOUNT) == [("ERP Co", "New St")]
    assert conflicts(erp) == conflicts(shop) == []


def write_config(tmp_path: Path, dsn: str, name: str, policy: str) -> str:
    text = (Path(__file__).parents[1] / "fixtures" / name).read_text()
    text = text.replace("newer_wins", policy).replace("${BRIDGE_SECRET}", SECRET)
    text = text.replace("${ERP_DATABASE_URL}", dsn).replace("${SHOP_DATABASE_URL}", dsn)
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exit_info:
        main([*args])
        raise SystemExit(0)
    captured = capsys.readouterr()
    return int(exit_info.value.code or 0), captured.out + captured.err


def test_manual_parks_both_sides_and_resolve_converges(
    pair_factory: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    erp, shop = pair_factory("manual", "manual")
    seed_account(erp, shop)
    edit_concurrently(erp, shop, "erp")
    exchange(erp, shop)
    # Each side keeps its own value until a person decides.
    assert rows(erp.dsn, ACCOUNT) == [("ERP Co", "Old St")]
    assert rows(shop.dsn, ACCOUNT) == [("Shop Co", "Old St")]
    assert conflicts(erp) == [("company_name", "ERP Co", "Shop Co", "manual", None, "open", None)]
    assert conflicts(shop) == [("company_name", "Shop Co", "ERP Co", "manual", None, "open", None)]

    config = write_config(tmp_path, erp.dsn, "erp_pair.yaml", "manual")
    code, out = run_cli(capsys, "--config", config, "conflicts", "list", "--open")
    assert code == 0
    conflict_id = out.split()[0]
    assert '"ERP Co"' in out and '"Shop Co"' in out
    code, out = run_cli(capsys, "--config", config, "conflicts", "show", conflict_id)
    assert code == 0
    assert '      status: "open"' in out and ' local_value: "ERP Co"' in out
    code, out = run_cli(
        capsys, "--config", config, "conflicts", "resolve", conflict_id, "--value", "Joint Co"
    )
    assert (code, out.strip()) == (
        0,
        f'resolved conflict {conflict_id}: company_name = "Joint Co" (queued for the peer)',
    )

    assert ship(erp, shop) == ["applied"]
    assert (ship(erp, shop), ship(shop, erp)) == ([], [])
    assert rows(erp.dsn, ACCOUNT) == rows(shop.dsn, ACCOUNT) == [("Joint Co", "Old St")]
    assert conflicts(erp)[0][4:] == ("value", "resolved", "local")
    assert conflicts(shop)[0][4:] == ("peer", "resolved", "peer")

    code, out = run_cli(
        capsys, "--config", config, "conflicts", "resolve", conflict_id, "--take", "local"
    )
    assert code == 2
    assert f"conflict {conflict_id} is already resolved (by local)" in out


def test_resolve_of_an_unknown_conflict_is_a_user_error(
    pair_factory: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    erp, _shop = pair_factory("manual", "manual")
    config = write_config(tmp_path, erp.dsn, "erp_pair.yaml", "manual")
    code, out = run_cli(capsys, "--config", config, "conflicts", "resolve", "99", "--take", "peer")
    assert code == 2
    assert "no conflict with id 99" in out
    code, out = run_cli(capsys, "--config", config, "conflicts", "resolve", "99")
    assert code == 2
    assert "give exactly one of --take local|peer or --value V" in out


def test_serve_refuses_a_bad_listen_address(
    db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, db, "erp_pair.yaml", "manual")
    code, out = run_cli(capsys, "--config", config, "serve", "--listen", "localhost")
    assert code == 2
    assert "'localhost' is not HOST:PORT; fix: write it like 127.0.0.1:8082" in out


def test_resolve_of_a_conflict_whose_row_is_gone_is_a_user_error(
    pair_factory: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    erp, shop = pair_factory("manual", "manual")
    seed_account(erp, shop)
    edit_concurrently(erp, shop, "shop")
    assert ship(shop, erp) == ["conflict_resolved"]
    local_write(erp, "DELETE FROM accounts WHERE id = 1")
    config = write_config(tmp_path, erp.dsn, "erp_pair.yaml", "manual")
    (conflict_id,) = rows(erp.dsn, "SELECT id FROM cdc_bridge.conflicts")[0]
    code, out = run_cli(
        capsys, "--config", config, "conflicts", "resolve", str(conflict_id), "--take", "peer"
    )
    assert code == 2
    assert 'public.accounts row {"id":1} no longer exists here; nothing to resolve' in out
    assert rows(erp.dsn, "SELECT status FROM cdc_bridge.conflicts") == [("open",)]
