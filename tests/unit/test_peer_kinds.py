"""The seam between the bridge and its peer: each kind of peer declares what it does, and
the relay's and reconcile's decisions follow those declarations, never the kind's name."""

from __future__ import annotations

import ast
import asyncio
import dataclasses
from pathlib import Path

import pytest

import cdc_bridge
from cdc_bridge.cli import main
from cdc_bridge.config import (
    PEER_KINDS,
    BridgeConfig,
    BridgePeer,
    RestPeer,
    parse_config,
)
from cdc_bridge.outbox import Encoded
from cdc_bridge.peer import kinds
from cdc_bridge.peer.bridge import BridgeEndpoint
from cdc_bridge.peer.endpoint import Capabilities, KeyedReader, PagedReader
from cdc_bridge.peer.rest import RestEndpoint

PACKAGE = Path(cdc_bridge.__file__).parent

TABLES = """\
tables:
  public.customers: {key: [id], sor: local, rest: {insert: "POST /c", update: "PUT /c/{id}",
                     delete: "DELETE /c/{id}", read: "GET /c/{id}"}}
  public.products:
    key: [sku]
    sor: {sku: local, name: local, description: peer}
    rest: {insert: "POST /p", update: "PUT /p/{sku}", delete: "DELETE /p/{sku}"}
  public.invoices: {key: [id], sor: peer}
"""


def config_of(peer: str) -> BridgeConfig:
    text = (
        "system: erp\n"
        'database: {url: "postgresql://u@127.0.0.1/erp"}\n'
        f"peer: {{name: shop, url: \"http://127.0.0.1:1\", {peer}}}\n" + TABLES
    )
    return parse_config(text, "erp.yaml", {})


BRIDGE = config_of('secret: "s3cret"')
REST = config_of("adapter: rest")


def test_the_adapter_key_picks_the_kind_and_bridge_is_the_default() -> None:
    assert isinstance(BRIDGE.peer, BridgePeer) and BRIDGE.peer.adapter == "bridge"
    assert isinstance(REST.peer, RestPeer)
    assert set(PEER_KINDS) == {"bridge", "rest"}
    assert type(kinds.endpoint(BRIDGE)) is BridgeEndpoint
    assert type(kinds.endpoint(REST)) is RestEndpoint


def test_each_kind_declares_what_it_does() -> None:
    declared = {
        name: dataclasses.asdict(kinds.capabilities(config.peer))
        for name, config in (("bridge", BRIDGE), ("rest", REST))
    }
    # (whole transactions, encoded, lists rows, exact values, names records)
    expected = {
        "bridge": (True, Encoded.CHANGE, True, True, False),
        "rest": (False, Encoded.FIELDS, False, False, True),
    }
    fields = [f.name for f in dataclasses.fields(Capabilities)]
    assert declared == {name: dict(zip(fields, row, strict=True)) for name, row in expected.items()}


def test_postgresql_encodes_whole_rows_in_the_form_the_kind_of_peer_takes() -> None:
    # customers ships whole rows; products is a field map (filtered); invoices ships nothing.
    assert kinds.encoded_tables(BRIDGE) == ["public.customers"]
    # A REST body that is the row as it is comes encoded; one built by `rest.body` or with
    # renames is built from the parsed fields.
    assert kinds.encoded_tables(REST) == ["public.customers"]
    ops = 'insert: "POST /x", update: "PUT /x/{id}", delete: "DELETE /x/{id}"'
    rest = parse_config(
        "system: erp\n"
        'database: {url: "postgresql://u@127.0.0.1/erp"}\n'
        'peer: {name: shop, url: "http://127.0.0.1:1", adapter: rest}\n'
        "tables:\n"
        f"  public.a: {{key: [id], sor: local, rest: {{{ops}}}}}\n"
        f"  public.b: {{key: [id], sor: local, rest: {{{ops}, rename: {{n: name}}}}}}\n"
        f"  public.c: {{key: [id], sor: local, rest: {{{ops}, body: {{/n: n}}}}}}\n"
        f"  public.d: {{key: [id], sor: peer, rest: {{{ops}}}}}\n",
        "erp.yaml",
        {},
    )
    assert kinds.encoded_tables(rest) == ["public.a"]


def test_reconcile_reads_in_pages_from_a_lister_and_by_key_from_the_others() -> None:
    paged = kinds.endpoint(BRIDGE).read(BRIDGE.table("public.customers"))
    keyed = kinds.endpoint(REST).read(REST.table("public.customers"))
    try:
        assert isinstance(paged, PagedReader) and not isinstance(paged, KeyedReader)
        assert isinstance(keyed, KeyedReader) and not isinstance(keyed, PagedReader)
    finally:
        paged.close()
        keyed.close()


def test_an_endpoint_opens_nothing_until_it_delivers() -> None:
    # The tools build an endpoint only to read: closing one never used must be free.
    for config in (BRIDGE, REST):
        endpoint = kinds.endpoint(config)
        asyncio.run(endpoint.aclose())


def test_a_kind_of_peer_the_bridge_does_not_know_exits_2_naming_file_key_and_fix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "erp.yaml"
    path.write_text(
        "system: erp\n"
        'database: {url: "postgresql://u@127.0.0.1/erp"}\n'
        'peer: {name: shop, url: "http://127.0.0.1:1", adapter: kafka}\n' + TABLES
    )
    with pytest.raises(SystemExit) as exited:
        main(["sql", "render", "--config", str(path)])
    assert exited.value.code == 2
    assert capsys.readouterr().err.strip().endswith(
        f"{path}: peer: adapter 'kafka' is not a kind of peer this bridge knows; "
        "fix: use one of bridge, rest"
    )


def test_no_stage_asks_which_kind_of_peer_it_talks_to() -> None:
    """Outside the kinds' own models (config.py) and modules (peer/), nothing reads
    `peer.adapter`: the relay, the tools and the CLI read capabilities."""
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.parent.name == "peer" or path == PACKAGE / "config.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute) and node.attr == "adapter":
                offenders.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    assert offenders == []
