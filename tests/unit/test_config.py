"""Config validation: each malformed file gives one line naming the key, and exit code 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from cdc_bridge.cli import main
from cdc_bridge.config import BridgeConfig, Owner, TableMode, parse_config
from cdc_bridge.errors import ConfigError

GOOD = """\
system: erp
database: {url: "${ERP_DATABASE_URL}"}
peer: {name: shop, url: "http://127.0.0.1:8082", secret: "${BRIDGE_SECRET}"}
tables:
  public.customers: {key: [id], sor: local}
"""
ENV = {"ERP_DATABASE_URL": "postgresql://u:pw@127.0.0.1/erp", "BRIDGE_SECRET": "s3cret"}

# (what is wrong, replaced text, replacement, the key path the error must name)
MALFORMED = [
    ("system missing", "system: erp\n", "", "system: field required"),
    ("unknown top-level key", "system: erp\n", "system: erp\nsytem: x\n", "sytem:"),
    ("bad system name", "system: erp", "system: 'e r p'", "system:"),
    ("peer named like us", "name: shop", "name: erp", "peer.name equals system"),
    ("peer url not http", '"http://127.0.0.1:8082"', "ftp://x", "peer.url:"),
    ("peer secret empty", '"${BRIDGE_SECRET}"', '""', "peer:"),
    ("database url not postgres", '"${ERP_DATABASE_URL}"', "mysql-db", "database.url:"),
    ("unknown sor", "sor: local", "sor: mine", 'tables."public.customers".sor:'),
    ("empty key", "key: [id]", "key: []", 'tables."public.customers".key:'),
    ("key twice", "key: [id]", "key: [id, id]", 'tables."public.customers".key:'),
    ("unknown owner in map", "sor: local", "sor: {id: local, name: nobody}", ".sor:"),
    ("conflicts without both", "sor: local}", "sor: local, conflicts: newer_wins}", 'customers":'),
    ("where on a received table", "sor: local}", "sor: peer, where: 'a = 1'}", 'customers":'),
    ("three-part table name", "public.customers", "a.b.c", "tables:"),
    ("key name too long", "key: [id]", "key: [" + "k" * 64 + "]", ".key:"),
    (
        "relay batch not a number",
        "tables:",
        "relay: {batch_size: many}\ntables:",
        "relay.batch_size:",
    ),
    (
        "inbound listen not host:port",
        "tables:",
        "inbound: {listen: nowhere}\ntables:",
        "inbound.listen:",
    ),
    (
        "auth with the bridge adapter",
        'secret: "${BRIDGE_SECRET}"}',
        'secret: "${BRIDGE_SECRET}", auth: {kind: bearer, token_env: T}}',
        "peer: `auth` and `auth_env` are for the rest adapter",
    ),
    (
        "a kind of peer the bridge does not know",
        'secret: "${BRIDGE_SECRET}"}',
        'secret: "${BRIDGE_SECRET}", adapter: graphql}',
        "peer: adapter 'graphql' is not a kind of peer this bridge knows; "
        "fix: use one of bridge, rest",
    ),
    (
        "a rest-only key with the bridge adapter",
        'secret: "${BRIDGE_SECRET}"}',
        'secret: "${BRIDGE_SECRET}", rate_limit: {concurrency: 2}}',
        "peer.rate_limit: extra inputs are not permitted; fix: remove it",
    ),
    (
        "api key in header and query",
        'secret: "${BRIDGE_SECRET}"}',
        'adapter: rest, auth: {kind: api_key, key_env: K, header: X-Key, query: key}}',
        "peer.auth.api_key:",
    ),
    (
        "a secret where its variable's name goes",
        'secret: "${BRIDGE_SECRET}"}',
        "adapter: rest, auth: {kind: bearer, token_env: 'abc def'}}",
        "peer.auth.bearer.token_env:",
    ),
    (
        "unknown auth kind",
        'secret: "${BRIDGE_SECRET}"}',
        "adapter: rest, auth: {kind: magic}}",
        "peer.auth:",
    ),
    (
        "invoker capture (it let any role add outbox rows)",
        '"${ERP_DATABASE_URL}"}',
        '"${ERP_DATABASE_URL}", capture_security: invoker}',
        "database.capture_security: `invoker` is no longer offered",
    ),
    (
        "no tables",
        "tables:\n  public.customers: {key: [id], sor: local}\n",
        "tables: {}\n",
        "tables:",
    ),
]


def problems_of(text: str, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as raised:
        parse_config(text, "bad.yaml", ENV if environ is None else environ)
    return raised.value.problems


@pytest.mark.parametrize(("what", "old", "new", "names"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_config_gives_one_line_naming_the_key(
    what: str, old: str, new: str, names: str
) -> None:
    assert old in GOOD, what
    problems = problems_of(GOOD.replace(old, new, 1))
    assert len(problems) == 1, problems
    assert "\n" not in problems[0]
    assert names in problems[0]


@pytest.mark.parametrize(
    ("what", "old", "new", "names"), MALFORMED[:10], ids=[m[0] for m in MALFORMED[:10]]
)
def test_malformed_config_exits_2_through_the_cli(
    what: str,
    old: str,
    new: str,
    names: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    path = tmp_path / "bad.yaml"
    path.write_text(GOOD.replace(old, new, 1))
    with pytest.raises(SystemExit) as exited:
        main(["sql", "render", "--config", str(path)])
    err = capsys.readouterr().err
    assert exited.value.code == 2
    assert f"{path}: " in err and names in err
    assert "pw@" not in err and "s3cret" not in err


def test_all_problems_are_reported_at_once() -> None:
    text = GOOD.replace("system: erp", "system: 'a b'").replace("sor: local", "sor: mine")
    problems = problems_of(text)
    assert len(problems) == 2


def test_environment_variables_are_interpolated() -> None:
    config = parse_config(GOOD, "good.yaml", ENV)
    assert config.database.url.get_secret_value() == ENV["ERP_DATABASE_URL"]
    assert config.peer.secret is not None and config.peer.secret.get_secret_value() == "s3cret"


def test_missing_variable_names_it_and_the_key_once() -> None:
    problems = problems_of(GOOD, {"BRIDGE_SECRET": "s"})
    assert problems == [
        "database.url: environment variable ERP_DATABASE_URL is not set; fix: export "
        "ERP_DATABASE_URL=... before running (or write $${ERP_DATABASE_URL} for a literal)"
    ]


def test_double_dollar_is_a_literal_dollar() -> None:
    config = parse_config(GOOD.replace("${BRIDGE_SECRET}", "pa$$word"), "good.yaml", ENV)
    assert config.peer.secret is not None and config.peer.secret.get_secret_value() == "pa$word"


def test_defaults() -> None:
    config: BridgeConfig = parse_config(GOOD, "good.yaml", ENV)
    assert config.bridge_schema == "cdc_bridge"
    assert config.database.relay_role == "cdc_bridge_relay"
    assert config.inbound.listen == "127.0.0.1:8081"
    assert config.relay.batch_size == 500
    spec = config.table("public.customers")
    assert spec.mode is TableMode.LOCAL and spec.guard and spec.where is None


def test_per_field_map_resolves_owners() -> None:
    text = GOOD.replace(
        "{key: [id], sor: local}", "{key: [id], sor: {id: local, a: both, b: peer, c: local}}"
    )
    spec = parse_config(text, "good.yaml", ENV).table("public.customers")
    assert spec.owners["b"] is Owner.PEER
    assert (spec.shipped_fields, spec.both_fields, spec.peer_fields) == (("a", "c"), ("a",), ("b",))


def test_invalid_yaml_names_the_line() -> None:
    problems = problems_of("system: [erp\n")
    assert len(problems) == 1 and "line" in problems[0] and "not valid YAML" in problems[0]


def test_missing_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["sql", "render", "--config", str(tmp_path / "none.yaml")])
    assert exited.value.code == 2
    assert "file not found" in capsys.readouterr().err


def test_rest_adapter_needs_a_mapping_for_every_table_this_side_ships() -> None:
    text = """
system: erp
database: {url: "postgresql://u@h/d"}
peer: {name: shop, url: "http://127.0.0.1:1", adapter: rest}
tables:
  public.customers: {key: [id], sor: local, rest: {insert: "POST /c", update: "PUT /c/{id}"}}
  public.invoices: {key: [id], sor: peer}
"""
    with pytest.raises(ConfigError) as error:
        parse_config(text, "rest.yaml", {})
    assert error.value.problems == [
        '(top level): the rest adapter sends every change this side ships, but '
        'tables."public.customers".rest.delete is not set; fix: map each operation, e.g. '
        'update: "PUT /api/items/{id}"'
    ]
