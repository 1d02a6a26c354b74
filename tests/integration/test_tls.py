"""TLS between bridges: `serve` on HTTPS with a client CA (mutual TLS), the relay trusting a
private CA and presenting a client certificate. Certificates come from trustme; the server
is a real `serve` app on 127.0.0.1, the sender the real relay and its HTTP client. The
same setup for the tools' reads, and for an application's API (the commerce-like API on
HTTPS) and its OAuth2 token endpoint."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
import trustme
import yaml

from cdc_bridge.config import BridgeConfig, RestPeer, parse_config
from cdc_bridge.errors import PeerReadError, RequestFailed
from cdc_bridge.peer.bridge import BridgeEndpoint
from cdc_bridge.peer.endpoint import Delivery, Outgoing, Page, PagedReader
from cdc_bridge.peer.http import BlockingClient, PeerClient
from tests.commerce_api import CLIENT_ID, CLIENT_SECRET, CommerceApi, Credential
from tests.helpers import install
from tests.integration.inbound_support import Server, load, rows, running
from tests.pg import TestServer
from tests.relay_support import config_text, running_relay, wait_drained


@dataclass(frozen=True)
class Pki:
    ca: Path  # the private CA both sides trust
    server_cert: Path
    server_key: Path
    client_cert: Path  # the relay's client certificate, signed by the same CA
    client_key: Path
    stranger_cert: Path  # signed by a CA the server does not trust
    stranger_key: Path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder = tmp_path_factory.mktemp("pki")
    ca, other_ca = trustme.CA(), trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    client = ca.issue_cert("erp-relay@example.com")
    stranger = other_ca.issue_cert("erp-relay@example.com")

    def write(name: str, blob: trustme.Blob) -> Path:
        path = folder / name
        blob.write_to_path(str(path))
        return path

    return Pki(
        ca=write("ca.pem", ca.cert_pem),
        server_cert=write("server.pem", server.cert_chain_pems[0]),
        server_key=write("server.key", server.private_key_pem),
        client_cert=write("client.pem", client.cert_chain_pems[0]),
        client_key=write("client.key", client.private_key_pem),
        stranger_cert=write("stranger.pem", stranger.cert_chain_pems[0]),
        stranger_key=write("stranger.key", stranger.private_key_pem),
    )


@pytest.fixture
def shop(pg_server: TestServer, template_db: str, pki: Pki) -> Iterator[Server]:
    """The shop's `serve` on HTTPS, requiring a client certificate the private CA signed."""
    name = pg_server.new_name("shop")
    dsn = pg_server.create_database(name, template=template_db)
    tls = f'{{cert: "{pki.server_cert}", key: "{pki.server_key}", client_ca: "{pki.ca}"}}'
    listen = 'inbound: {listen: "127.0.0.1:8082"}'
    config = load("shop.yaml", dsn, {listen: f'inbound: {{listen: "127.0.0.1:8082", tls: {tls}}}'})
    try:
        with running(config) as server:
            yield server
    finally:
        pg_server.drop_database(name)


def erp_config(dsn: str, shop: Server, tls: dict[str, Any] | None) -> BridgeConfig:
    peer = {} if tls is None else {"tls": {k: str(v) for k, v in tls.items()}}
    data = yaml.safe_load(config_text(dsn, shop.url, peer))
    return parse_config(yaml.safe_dump(data), "erp.yaml", {})


def test_the_relay_ships_over_mutual_tls(db: str, shop: Server, pki: Pki) -> None:
    tls = {"ca": pki.ca, "cert": pki.client_cert, "key": pki.client_key}
    config = erp_config(db, shop, tls)
    install(config)
    with running_relay(config), psycopg.connect(db, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO customers VALUES (1, 'Ann', 'ann@example.com', 'gold'), "
            "(2, 'Bo', NULL, NULL)"
        )
        conn.execute("UPDATE customers SET tier = 'silver' WHERE id = 2")
        wait_drained(db)
    assert rows(shop.dsn, "SELECT c::text FROM customers c ORDER BY id") == [
        ("(1,Ann,ann@example.com,gold)",),
        ("(2,Bo,,silver)",),
    ]


def one_change() -> list[Outgoing]:
    return [
        Outgoing(
            id=1,
            idempotency_key="erp:1:1",
            table="public.customers",
            op="I",
            key={"id": 9},
            key_text='{"id": 9}',
            fields={"id": 9, "name": "Eve", "email": None, "tier": "gold"},
            old=None,
            committed_at=datetime.now(UTC),
            origin="erp",
        )
    ]


def deliver(config: BridgeConfig) -> Delivery:
    async def attempt() -> Delivery:
        client = BridgeEndpoint(config)
        try:
            return await client.deliver("tls-batch-1", one_change())
        finally:
            await client.aclose()

    return asyncio.run(attempt())


@pytest.mark.parametrize(
    ("tls", "error"),
    [
        # Trusts the CA but presents no certificate: the server ends the handshake (with
        # TLS 1.3 the client learns it only when it reads, as a dropped connection).
        ({"ca": "ca"}, ""),
        # A certificate from a CA the server does not trust: the same.
        ({"ca": "ca", "cert": "stranger_cert", "key": "stranger_key"}, ""),
        # Presents the right certificate, but does not trust the server's private CA.
        ({"cert": "client_cert", "key": "client_key"}, "CERTIFICATE_VERIFY_FAILED"),
    ],
    ids=["no client certificate", "client certificate of another CA", "CA not trusted"],
)
def test_a_client_without_the_right_certificates_is_refused(
    db: str, shop: Server, pki: Pki, tls: dict[str, str], error: str
) -> None:
    config = erp_config(db, shop, {k: getattr(pki, v) for k, v in tls.items()})
    outcome = deliver(config)
    assert outcome.results == {}, outcome
    assert outcome.status is None and outcome.error, outcome
    assert error in outcome.error
    assert rows(shop.dsn, "SELECT count(*) FROM customers") == [(0,)]
    # The same batch with the relay's real certificates goes through.
    good = erp_config(db, shop, {"ca": pki.ca, "cert": pki.client_cert, "key": pki.client_key})
    assert [a.status.value for a in deliver(good).results.values()] == ["applied"]


def test_the_tools_read_over_mutual_tls(db: str, shop: Server, pki: Pki) -> None:
    """reconcile's reader: the same TLS setup as the relay's batches, on a blocking client."""
    good = erp_config(db, shop, {"ca": pki.ca, "cert": pki.client_cert, "key": pki.client_key})
    reader = BridgeEndpoint(good).read(good.table("public.customers"))
    assert isinstance(reader, PagedReader)
    try:
        assert reader.page(None, 10) == Page(rows=[], more=False)
    finally:
        reader.close()
    stranger = {"ca": pki.ca, "cert": pki.stranger_cert, "key": pki.stranger_key}
    refused = erp_config(db, shop, stranger)
    reader = BridgeEndpoint(refused).read(refused.table("public.customers"))
    assert isinstance(reader, PagedReader)
    try:
        with pytest.raises(PeerReadError, match=r"reading public\.customers from the peer at https://"):
            reader.page(None, 10)
    finally:
        reader.close()


def server_tls(pki: Pki) -> ssl.SSLContext:
    """The commerce API's TLS: its certificate from the private CA, clients' required."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki.ca))
    context.load_cert_chain(pki.server_cert, pki.server_key)
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def rest_peer(url: str, tls: dict[str, Path]) -> RestPeer:
    auth = {
        "kind": "oauth2_client_credentials",
        "token_url": f"{url}/oauth/token",
        "client_id_env": "OAUTH_ID",
        "client_secret_env": "OAUTH_S",
    }
    return RestPeer.model_validate({
        "adapter": "rest", "name": "shop", "url": url, "auth": auth,
        "tls": {k: str(v) for k, v in tls.items()},
    })


def test_a_rest_api_and_its_token_endpoint_are_called_over_mutual_tls(pki: Pki) -> None:
    environ = {"OAUTH_ID": CLIENT_ID, "OAUTH_S": CLIENT_SECRET}
    with CommerceApi(Credential("oauth2"), tls=server_tls(pki)) as api:
        good = {"ca": pki.ca, "cert": pki.client_cert, "key": pki.client_key}
        client = BlockingClient(PeerClient(rest_peer(api.url, good), environ))
        try:
            answer = client.request("PUT", "/api/products/P1", body=b'{"name": "Pen"}')
        finally:
            client.close()
        stranger = {"ca": pki.ca, "cert": pki.stranger_cert, "key": pki.stranger_key}
        client = BlockingClient(PeerClient(rest_peer(api.url, stranger), environ))
        try:
            with pytest.raises(RequestFailed):
                client.request("PUT", "/api/products/P2", body=b'{"name": "Pen"}')
        finally:
            client.close()
    assert answer.status == 200
    assert api.state.tokens_issued == ["token-1"]
    assert api.bodies("P1") == [("PUT", {"name": "Pen"})]
    assert api.bodies("P2") == []
