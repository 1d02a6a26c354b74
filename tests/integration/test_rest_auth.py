"""The REST adapter against a commerce-like API: every auth scheme, OAuth2 token renewal,
a 429 burst absorbed in order, and a client-side concurrency limit. Secrets never reach
the bookkeeping tables or the logs."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
import yaml

from cdc_bridge.config import BridgeConfig, parse_config
from tests.commerce_api import CLIENT_ID, CLIENT_SECRET, CommerceApi, Credential
from tests.helpers import install
from tests.relay_support import config_text, running_relay, wait_drained, wait_until

SECRET_VALUE = "s3cret-value-never-logged"
PRODUCTS_REST = {
    "insert": "PUT /api/products/{sku}",
    "update": "PATCH /api/products/{sku}",
    "delete": "DELETE /api/products/{sku}",
}

SCHEMES: dict[str, tuple[Credential, dict[str, Any]]] = {
    "bearer": (Credential("bearer", SECRET_VALUE), {"kind": "bearer", "token_env": "API_T"}),
    "basic": (
        Credential("basic", SECRET_VALUE, user="bridge"),
        {"kind": "basic", "username_env": "API_U", "password_env": "API_T"},
    ),
    "header": (
        Credential("header", SECRET_VALUE, name="X-Api-Key"),
        {"kind": "api_key", "key_env": "API_T", "header": "X-Api-Key"},
    ),
    "query": (
        Credential("query", SECRET_VALUE, name="consumer_key"),
        {"kind": "api_key", "key_env": "API_T", "query": "consumer_key"},
    ),
}
ENV = {"API_T": SECRET_VALUE, "API_U": "bridge", "OAUTH_ID": CLIENT_ID, "OAUTH_S": CLIENT_SECRET}


def rest_config(dsn: str, api: CommerceApi, auth: dict[str, Any], **peer: Any) -> BridgeConfig:
    data = yaml.safe_load(config_text(dsn, api.url, peer={"adapter": "rest"}))
    data["peer"].update({"auth": auth, **peer})
    data["peer"].pop("secret")
    data["tables"] = {"public.products": {**data["tables"]["public.products"]}}
    data["tables"]["public.products"]["rest"] = PRODUCTS_REST
    return parse_config(yaml.safe_dump(data), "rest.yaml", {})


def oauth(api: CommerceApi) -> dict[str, Any]:
    return {
        "kind": "oauth2_client_credentials",
        "token_url": f"{api.url}/oauth/token",
        "client_id_env": "OAUTH_ID",
        "client_secret_env": "OAUTH_S",
    }


@pytest.fixture(autouse=True)
def secrets_in_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)


def write_products(dsn: str, count: int) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for i in range(count):
            conn.execute("INSERT INTO products VALUES (%s, 'Pen', 1.50, NULL, 1)", (f"P{i}",))
            conn.execute("UPDATE products SET name = 'Pen v2' WHERE sku = %s", (f"P{i}",))


def bookkeeping_text(dsn: str) -> str:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT coalesce(string_agg(concat_ws(' ', error, response_body), ' '), '') "
            "FROM cdc_bridge.attempts"
        ).fetchone()
        failed = conn.execute(
            "SELECT coalesce(string_agg(concat_ws(' ', reason, response_body), ' '), '') "
            "FROM cdc_bridge.failed"
        ).fetchone()
    assert rows is not None and failed is not None
    return f"{rows[0]} {failed[0]}"


@pytest.mark.parametrize("scheme", sorted(SCHEMES))
def test_each_auth_scheme_is_accepted_by_the_api(
    db: str, scheme: str, caplog: pytest.LogCaptureFixture
) -> None:
    credential, auth = SCHEMES[scheme]
    with CommerceApi(credential) as api:
        config = rest_config(db, api, auth)
        install(config)
        write_products(db, 3)
        with running_relay(config):
            wait_drained(db)
    assert api.state.unauthorized == 0
    for i in range(3):
        assert [m for m, _ in api.bodies(f"P{i}")] == ["PUT", "PATCH"]
        assert api.bodies(f"P{i}")[-1][1]["name"] == "Pen v2"
    assert SECRET_VALUE not in caplog.text
    assert SECRET_VALUE not in bookkeeping_text(db)


def test_a_wrong_credential_is_refused_and_nothing_is_lost(db: str) -> None:
    credential, auth = SCHEMES["bearer"]
    with CommerceApi(Credential("bearer", "another-value")) as api:
        config = rest_config(db, api, auth)
        install(config)
        write_products(db, 1)
        with running_relay(config):
            wait_until(lambda: api.state.unauthorized > 0, what="the API to refuse")
    assert credential.secret not in bookkeeping_text(db)
    assert api.bodies("P0") == []


def test_oauth2_token_is_reused_and_renewed_when_revoked(db: str) -> None:
    with CommerceApi(Credential("oauth2")) as api:
        config = rest_config(db, api, oauth(api))
        install(config)
        with running_relay(config):
            write_products(db, 5)
            wait_drained(db)
            assert api.state.tokens_issued == ["token-1"]  # one token for ten requests
            api.revoke_tokens()
            with psycopg.connect(db, autocommit=True) as conn:
                conn.execute("UPDATE products SET name = 'Pen v3' WHERE sku = 'P1'")
            wait_drained(db)
    assert api.state.tokens_issued == ["token-1", "token-2"]
    assert [m for m, _ in api.bodies("P1")] == ["PUT", "PATCH", "PATCH"]
    assert api.bodies("P1")[-1][1]["name"] == "Pen v3"
    assert CLIENT_SECRET not in bookkeeping_text(db)


def test_oauth2_refused_client_keeps_changes_pending_with_the_reason(db: str) -> None:
    with CommerceApi(Credential("oauth2")) as api:
        config = rest_config(db, api, oauth(api))
        install(config)
        write_products(db, 1)
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("OAUTH_S", "wrong-secret")
            wrong = rest_config(db, api, oauth(api))
            with running_relay(wrong):
                wait_until(lambda: "invalid_client" in bookkeeping_text(db), what="the reason")
    with psycopg.connect(db) as conn:
        pending = conn.execute("SELECT count(*) FROM cdc_bridge.outbox").fetchone()
        failed = conn.execute("SELECT count(*) FROM cdc_bridge.failed").fetchone()
    assert pending == (2,) and failed == (0,)  # transient: retried, never parked or lost
    assert "wrong-secret" not in bookkeeping_text(db)


def test_a_429_burst_is_absorbed_in_order_within_the_concurrency_limit(db: str) -> None:
    credential, auth = SCHEMES["header"]
    with CommerceApi(credential) as api:
        api.state.delay_s = 0.02
        config = rest_config(db, api, auth, rate_limit={"concurrency": 2})
        install(config)
        write_products(db, 12)
        api.rate_limit_next(5, retry_after="1")
        with running_relay(config):
            wait_drained(db)
    assert api.state.rate_limited == 5
    for i in range(12):
        assert [m for m, _ in api.bodies(f"P{i}")] == ["PUT", "PATCH"], f"P{i}"
        assert api.bodies(f"P{i}")[-1][1]["name"] == "Pen v2"
    assert api.state.most_active <= 2
    with psycopg.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM cdc_bridge.failed").fetchone() == (0,)
