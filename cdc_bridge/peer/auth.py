"""Credentials for a peer application's API (`peer.auth`), applied by the peer's HTTP
client (http.py) to every request it sends.

Every secret is read from the environment variable the config names, when the client is
built, and only ever placed in the request it authenticates: never in a log line, an
error, or the bookkeeping tables.

A credential wraps the sending of one request (`Credential.send`): it adds its headers or
query parameters, and may send requests of its own first (a token request). The client
that calls it is the only HTTP stack: the relay's event loop, or the private loop of a
blocking tool's client.

OAuth2 client credentials: the token is cached, renewed shortly before it expires, fetched
once for requests sent side by side, and fetched again once when the API answers 401 with
the cached one (a token revoked early).
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Protocol
from urllib.parse import quote_plus, urlencode

import orjson

from cdc_bridge.config import (
    ApiKeyAuth,
    BasicAuth,
    BearerAuth,
    ClientCredentialsAuth,
    HeaderAuth,
    PeerAuth,
    PeerBase,
)
from cdc_bridge.errors import TokenError, UserError

EARLY_RENEWAL_S = 30  # a token this close to its expiry is renewed before use
_FORM = "application/x-www-form-urlencoded"


class Reply(Protocol):
    """What a credential reads of an answer (http.Response has it)."""

    @property
    def status(self) -> int: ...

    @property
    def content(self) -> bytes: ...


# Sends the API request with these extra headers and query parameters.
Send = Callable[[Mapping[str, str], Mapping[str, str]], Awaitable[Reply]]
# POSTs `body` to an absolute URL with exactly `headers` (a token request).
Post = Callable[[str, bytes, Mapping[str, str]], Awaitable[Reply]]


class Credential(Protocol):
    async def send(self, send: Send, post: Post) -> Reply:
        """Send the request (through `send`) with this credential."""
        ...


def env_secret(environ: Mapping[str, str], key: str, name: str) -> str:
    """The value of the variable `name`, which the config key `key` names."""
    value = environ.get(name)
    if not value:
        raise UserError(f"{key} names {name}, which is not set; fix: export {name}=... first")
    return value


def basic_value(username: str, password: str) -> str:
    """An HTTP Basic `Authorization` value (RFC 7617, UTF-8)."""
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


class Fixed:
    """The same header or query parameter on every request."""

    def __init__(
        self, headers: Mapping[str, str] | None = None, query: Mapping[str, str] | None = None
    ) -> None:
        self._headers, self._query = dict(headers or {}), dict(query or {})

    async def send(self, send: Send, post: Post) -> Reply:
        return await send(self._headers, self._query)


class ClientCredentials:
    """Bearer tokens from an OAuth2 token endpoint (RFC 6749 section 4.4)."""

    def __init__(self, auth: ClientCredentialsAuth, client_id: str, secret: str) -> None:
        self._url = auth.token_url
        form = {"grant_type": "client_credentials"}
        if auth.scope:
            form["scope"] = auth.scope
        self._form = urlencode(form).encode()
        # Client authentication: HTTP Basic of the form-encoded id and secret (2.3.1).
        self._headers = {
            "Authorization": basic_value(quote_plus(client_id), quote_plus(secret)),
            "Accept": "application/json",
            "Content-Type": _FORM,
        }
        self._token: str | None = None
        self._expires_at = 0.0
        # One token request at a time (held across it), so requests sent side by side
        # share the token the first of them fetched.
        self._fetching = asyncio.Lock()

    async def send(self, send: Send, post: Post) -> Reply:
        rejected: str | None = None
        for _ in range(2):  # the first try, and one more with a new token after a 401
            token = await self._current(post, rejected)
            reply = await send({"Authorization": f"Bearer {token}"}, {})
            if reply.status != 401:
                break
            rejected = token
        return reply

    async def _current(self, post: Post, rejected: str | None) -> str:
        async with self._fetching:
            if self._stale(rejected):
                self._take(await post(self._url, self._form, self._headers))
            return str(self._token)

    def _stale(self, rejected: str | None) -> bool:
        """No token yet, about to expire, or the one the API just refused (401)."""
        return (
            self._token is None
            or self._token == rejected
            or time.monotonic() >= self._expires_at
        )

    def _take(self, reply: Reply) -> None:
        if reply.status != 200:
            raise TokenError(_token_failure(self._url, reply))
        try:
            body = orjson.loads(reply.content)
            token = str(body["access_token"])
            lifetime = float(body.get("expires_in") or 3600)
        except (KeyError, TypeError, ValueError):  # not JSON, or no token in it
            raise TokenError(_token_failure(self._url, reply)) from None
        renew_before = min(EARLY_RENEWAL_S, lifetime / 2)
        self._token, self._expires_at = token, time.monotonic() + lifetime - renew_before


def _token_failure(url: str, reply: Reply) -> str:
    # The endpoint's answer (an OAuth2 error code and description), never the request,
    # which holds the client secret.
    text = reply.content.decode("utf-8", errors="replace")[:200].strip()
    return f"OAuth2 token request to {url} got HTTP {reply.status}: {text or '(empty)'}"


def build_auth(peer: PeerBase, environ: Mapping[str, str]) -> Credential | None:
    """The credential of `peer.auth` (or the older `peer.auth_env`), secrets from `environ`."""
    credentials = peer.credentials
    return None if credentials is None else _auth_of(credentials, environ, peer)


def _auth_of(auth: PeerAuth, environ: Mapping[str, str], peer: PeerBase) -> Credential:
    if isinstance(auth, HeaderAuth):
        key = "peer.auth.value_env" if getattr(peer, "auth", None) else "peer.auth_env"
        value = env_secret(environ, key, auth.value_env)
        return Fixed(headers={auth.header or "Authorization": value})
    if isinstance(auth, BearerAuth):
        token = env_secret(environ, "peer.auth.token_env", auth.token_env)
        return Fixed(headers={"Authorization": f"Bearer {token}"})
    if isinstance(auth, BasicAuth):
        username = env_secret(environ, "peer.auth.username_env", auth.username_env)
        password = env_secret(environ, "peer.auth.password_env", auth.password_env)
        return Fixed(headers={"Authorization": basic_value(username, password)})
    if isinstance(auth, ApiKeyAuth):
        key = env_secret(environ, "peer.auth.key_env", auth.key_env)
        if auth.header:
            return Fixed(headers={auth.header: key})
        return Fixed(query={str(auth.query): key})
    return ClientCredentials(
        auth,
        env_secret(environ, "peer.auth.client_id_env", auth.client_id_env),
        env_secret(environ, "peer.auth.client_secret_env", auth.client_secret_env),
    )
