"""The bridge's one HTTP client to its peer (peer/http.py) against the commerce-like API on
127.0.0.1: the OAuth2 flow (one token for requests sent side by side, renewed before it
expires, fetched again once after a 401), the tools' blocking client, what a request the
peer does not answer says, for the relay and for the tools, and redirects left unfollowed."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Coroutine, Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import psycopg
import pytest
import yaml

from cdc_bridge.config import BridgeConfig, RestPeer, parse_config
from cdc_bridge.errors import PollError, RequestFailed, TokenError
from cdc_bridge.inbound.poll import Poller
from cdc_bridge.peer.endpoint import Answer, Delivery, Outgoing
from cdc_bridge.peer.http import BlockingClient, PeerClient, Response
from cdc_bridge.peer.protocol import ResultStatus
from cdc_bridge.peer.rest import RestEndpoint
from tests.commerce_api import CLIENT_ID, CLIENT_SECRET, CommerceApi, Credential
from tests.helpers import install

ENV = {"OAUTH_ID": CLIENT_ID, "OAUTH_S": CLIENT_SECRET, "API_KEY": "key-&-never-logged"}
SIDE_BY_SIDE = 8
NOBODY = "http://127.0.0.1:9"  # the discard port: nothing listens there


def oauth_peer(url: str, **peer: Any) -> RestPeer:
    auth = {
        "kind": "oauth2_client_credentials",
        "token_url": f"{url}/oauth/token",
        "client_id_env": "OAUTH_ID",
        "client_secret_env": "OAUTH_S",
    }
    return RestPeer.model_validate({"adapter": "rest", "name": "shop", "url": url,
                                    "auth": auth, **peer})


@pytest.fixture
def api() -> Iterator[CommerceApi]:
    with CommerceApi(Credential("oauth2")) as api:
        yield api


def put(client: PeerClient, sku: str) -> Coroutine[Any, Any, Response]:
    body = f'{{"sku": "{sku}", "name": "Pen", "price": "1.50"}}'.encode()
    return client.request("PUT", f"/api/products/{sku}", body=body,
                          headers={"content-type": "application/json"})


async def put_side_by_side(client: PeerClient, count: int, prefix: str) -> list[Response]:
    try:
        return list(await asyncio.gather(*(put(client, f"{prefix}{i}") for i in range(count))))
    finally:
        await client.aclose()


def test_requests_side_by_side_share_one_token(
    api: CommerceApi, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    api.state.delay_s = 0.05  # the API requests overlap
    answers = asyncio.run(put_side_by_side(PeerClient(oauth_peer(api.url), ENV), SIDE_BY_SIDE, "P"))
    assert [a.status for a in answers] == [200] * SIDE_BY_SIDE
    assert api.state.tokens_issued == ["token-1"]
    assert api.state.unauthorized == 0
    assert all(api.bodies(f"P{i}")[0][1]["name"] == "Pen" for i in range(SIDE_BY_SIDE))
    assert CLIENT_SECRET not in caplog.text and "token-1" not in caplog.text


def test_a_revoked_token_is_fetched_again_once_for_requests_side_by_side(
    api: CommerceApi,
) -> None:
    async def scenario() -> list[Response]:
        client = PeerClient(oauth_peer(api.url), ENV)
        first = await put(client, "P0")
        assert first.status == 200
        api.revoke_tokens()
        return await put_side_by_side(client, SIDE_BY_SIDE, "Q")

    answers = asyncio.run(scenario())
    assert [a.status for a in answers] == [200] * SIDE_BY_SIDE
    assert api.state.tokens_issued == ["token-1", "token-2"]
    assert api.state.unauthorized == SIDE_BY_SIDE  # each refused once, then sent again
    assert all(len(api.bodies(f"Q{i}")) == 1 for i in range(SIDE_BY_SIDE))


def test_a_token_is_renewed_before_it_expires(api: CommerceApi) -> None:
    api.state.token_lifetime_s = 1  # renewed after half its life (30 s before, if longer)

    async def scenario() -> list[int]:
        client = PeerClient(oauth_peer(api.url), ENV)
        try:
            first = await put(client, "P1")
            await asyncio.sleep(0.6)
            second = await put(client, "P2")
        finally:
            await client.aclose()
        return [first.status, second.status]

    assert asyncio.run(scenario()) == [200, 200]
    assert api.state.tokens_issued == ["token-1", "token-2"]
    assert api.state.unauthorized == 0  # renewed before the API refused it


def test_the_tools_blocking_client_keeps_its_token_and_renews_it_after_a_401(
    api: CommerceApi,
) -> None:
    client = BlockingClient(PeerClient(oauth_peer(api.url), ENV))
    try:
        reads = [client.request("GET", f"/api/products/P{i}").status for i in range(3)]
        api.revoke_tokens()
        reads.append(client.request("GET", "/api/products/P3").status)
    finally:
        client.close()
    assert reads == [200, 200, 200, 200]
    assert api.state.tokens_issued == ["token-1", "token-2"]
    assert api.state.unauthorized == 1


def test_a_refused_client_is_a_token_error_with_the_endpoints_answer(api: CommerceApi) -> None:
    client = BlockingClient(PeerClient(oauth_peer(api.url), {**ENV, "OAUTH_S": "wrong"}))
    try:
        with pytest.raises(TokenError, match=r"got HTTP 401: .*invalid_client") as caught:
            client.request("GET", "/api/products/P1")
    finally:
        client.close()
    assert "wrong" not in str(caught.value)
    assert api.bodies("P1") == []


def test_an_api_key_in_the_query_goes_with_the_requests_own_parameters(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    with CommerceApi(Credential("query", ENV["API_KEY"], name="consumer_key")) as api:
        auth = {"kind": "api_key", "key_env": "API_KEY", "query": "consumer_key"}
        peer = RestPeer.model_validate({"adapter": "rest", "name": "shop", "url": api.url,
                                        "auth": auth})
        client = BlockingClient(PeerClient(peer, ENV))
        try:
            answer = client.request("GET", "/api/customers", params={"page": 2, "per_page": 5})
        finally:
            client.close()
    assert answer.status == 200
    assert api.state.seen_queries == ["page=2&per_page=5&consumer_key=key-%26-never-logged"]
    assert ENV["API_KEY"] not in caplog.text


# ------------------------------------------------------------------ no answer


def one_product() -> list[Outgoing]:
    return [
        Outgoing(
            id=1, idempotency_key="erp:1:1", table="public.products", op="I",
            key={"sku": "P1"}, key_text='{"sku": "P1"}',
            fields={"sku": "P1", "name": "Pen", "price": "1.50", "description": None,
                    "stock": 1},
            old=None, committed_at=datetime.now(UTC), origin="erp",
        )
    ]


def rest_config(url: str, timeout_s: float = 2) -> BridgeConfig:
    """Products to the API with an API key header (`X-Api-Key`, $API_KEY)."""
    auth = {"kind": "api_key", "key_env": "API_KEY", "header": "X-Api-Key"}
    data = {
        "system": "erp",
        "database": {"url": "postgresql://bridge@127.0.0.1/unused"},  # never connected
        "peer": {"name": "shop", "url": url, "adapter": "rest", "timeout_s": timeout_s,
                 "auth": auth},
        "tables": {"public.products": {"key": ["sku"], "sor": "local", "rest": {
            "insert": "PUT /api/products/{sku}",
            "update": "PUT /api/products/{sku}",
            "delete": "DELETE /api/products/{sku}",
        }}},
    }
    return parse_config(yaml.safe_dump(data), "rest.yaml", {})


def deliver(config: BridgeConfig) -> Delivery:
    async def attempt() -> Delivery:
        endpoint = RestEndpoint(config, ENV)
        try:
            return await endpoint.deliver("b1", one_product())
        finally:
            await endpoint.aclose()

    return asyncio.run(attempt())


def test_an_api_that_does_not_answer_is_a_transient_failure_named_by_its_cause() -> None:
    refused = deliver(rest_config(NOBODY))
    assert refused.transient and not refused.permanent, refused
    assert refused.results == {} and refused.status is None
    assert refused.error is not None and refused.error.startswith("ConnectError: ")
    with CommerceApi(Credential("header", ENV["API_KEY"], name="X-Api-Key")) as api:
        api.state.delay_s = 1.0
        slow = deliver(rest_config(api.url, timeout_s=0.2))
    assert slow.transient and slow.results == {} and slow.status is None, slow
    assert slow.error == "Timeout"


def test_the_tools_get_the_same_failure() -> None:
    client = BlockingClient(PeerClient(rest_config(NOBODY).peer, ENV))
    try:
        with pytest.raises(RequestFailed, match=r"^ConnectError: "):
            client.request("GET", "/api/customers")
    finally:
        client.close()


def test_a_poll_of_an_api_that_does_not_answer_says_so(db: str) -> None:
    data = {
        "system": "shop",
        "database": {"url": db},
        "peer": {"name": "erp", "url": NOBODY, "adapter": "rest"},
        "relay": {"metrics_listen": None},
        "inbound": {"polls": [{
            "name": "customers", "table": "public.customers", "path": "/api/customers",
            "modified_since": "modified_after", "modified_field": "/date_modified",
            "fields": {"id": "/id", "name": "/first_name"},
        }]},
        "tables": {"public.customers": {"key": ["id"], "sor": "peer"}},
    }
    config = parse_config(yaml.safe_dump(data), "poll.yaml", {})
    install(config)
    poller = Poller(config, {})
    try:
        with psycopg.connect(db, autocommit=True) as conn, pytest.raises(
            PollError, match=r"^GET /api/customers failed: ConnectError: "
        ):
            poller.poll_once(conn, config.inbound.polls[0])
    finally:
        poller.close()


class _Moved(BaseHTTPRequestHandler):
    """Answers every request with a redirect to the URL in the server's `target`."""

    server: _MovedServer

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _moved(self) -> None:
        self.rfile.read(int(self.headers.get("content-length") or 0))
        self.send_response(307)
        self.send_header("location", self.server.target + self.path)
        self.send_header("content-length", "0")
        self.end_headers()

    do_GET = do_POST = do_PUT = _moved


class _MovedServer(ThreadingHTTPServer):
    daemon_threads = True
    target = ""


def test_a_redirect_is_an_answer_not_followed(api: CommerceApi) -> None:
    """A redirect would send the request (its credential, a signed batch) elsewhere."""
    moved = _MovedServer(("127.0.0.1", 0), _Moved)
    moved.target = api.url
    threading.Thread(target=moved.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{moved.server_address[1]}"
        client = BlockingClient(PeerClient(oauth_peer(url), ENV))
        try:
            with pytest.raises(TokenError, match=r"got HTTP 307"):
                client.request("PUT", "/api/products/P1", body=b'{"name": "Pen"}')
        finally:
            client.close()
        outcome = deliver(rest_config(url))
    finally:
        moved.shutdown()
        moved.server_close()
    assert outcome.results == {1: Answer(ResultStatus.REJECTED, "HTTP 307: ")}  # no body
    assert api.state.tokens_issued == [] and api.bodies("P1") == []
