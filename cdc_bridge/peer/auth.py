"""Credentials for a peer application's API (`peer.auth`), as httpx auth objects.

Every secret is read from the environment variable the config names, when the client is
built, and only ever placed in the request it authenticates: never in a log line, an
error, or the bookkeeping tables.

OAuth2 client credentials: the token is cached, renewed shortly before it expires, and
fetched again once when the API answers 401 with the cached one (a token revoked early).
"""

from __future__ import annotations

import asyncio
import base64
import threading
import time
from collections.abc import AsyncGenerator, Generator, Mapping
from urllib.parse import quote_plus

import httpx

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


def env_secret(environ: Mapping[str, str], key: str, name: str) -> str:
    """The value of the variable `name`, which the config key `key` names."""
    value = environ.get(name)
    if not value:
        raise UserError(f"{key} names {name}, which is not set; fix: export {name}=... first")
    return value


class _Header(httpx.Auth):
    def __init__(self, header: str, value: str) -> None:
        self._header, self._value = header, value

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers[self._header] = self._value
        yield request


class _QueryKey(httpx.Auth):
    def __init__(self, param: str, value: str) -> None:
        self._param, self._value = param, value

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.url = request.url.copy_add_param(self._param, self._value)
        yield request


class _ClientCredentials(httpx.Auth):
    """Bearer tokens from an OAuth2 token endpoint (RFC 6749 section 4.4).

    The token request is sent from inside the auth flow, by whichever client (sync or
    async) sends the API request, so there is no second HTTP stack and no blocking call
    on the relay's event loop.
    """

    def __init__(self, auth: ClientCredentialsAuth, client_id: str, secret: str) -> None:
        self._url, self._scope = auth.token_url, auth.scope
        # Client authentication: HTTP Basic of the form-encoded id and secret (2.3.1).
        pair = f"{quote_plus(client_id)}:{quote_plus(secret)}".encode()
        self._client_auth = "Basic " + base64.b64encode(pair).decode()
        self._token: str | None = None
        self._expires_at = 0.0
        self._async_lock = asyncio.Lock()
        self._sync_lock = threading.Lock()

    def _token_request(self) -> httpx.Request:
        form = {"grant_type": "client_credentials"}
        if self._scope:
            form["scope"] = self._scope
        return httpx.Request(
            "POST", self._url, data=form,
            headers={"Authorization": self._client_auth, "Accept": "application/json"},
        )

    def _take(self, response: httpx.Response) -> str:
        if response.status_code != 200:
            raise TokenError(_token_failure(self._url, response))
        try:
            body = response.json()
            token = str(body["access_token"])
            lifetime = float(body.get("expires_in") or 3600)
        except (ValueError, KeyError, TypeError):
            raise TokenError(_token_failure(self._url, response)) from None
        renew_before = min(EARLY_RENEWAL_S, lifetime / 2)
        self._token, self._expires_at = token, time.monotonic() + lifetime - renew_before
        return token

    def _stale(self, rejected: str | None) -> bool:
        """No token yet, about to expire, or the one the API just refused (401)."""
        return (
            self._token is None
            or self._token == rejected
            or time.monotonic() >= self._expires_at
        )

    # One token request at a time (the lock is held across it), so requests sent side by
    # side share the token the first of them fetched.

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        rejected: str | None = None
        for _ in range(2):  # the first try, and one more with a new token after a 401
            async with self._async_lock:
                if self._stale(rejected):
                    answer = yield self._token_request()
                    await answer.aread()
                    self._take(answer)
                token = str(self._token)
            request.headers["Authorization"] = f"Bearer {token}"
            response = yield request
            if response.status_code != 401:
                return
            await response.aread()
            rejected = token

    def sync_auth_flow(
        self, request: httpx.Request
    ) -> Generator[httpx.Request, httpx.Response, None]:
        rejected: str | None = None
        for _ in range(2):
            with self._sync_lock:
                if self._stale(rejected):
                    answer = yield self._token_request()
                    answer.read()
                    self._take(answer)
                token = str(self._token)
            request.headers["Authorization"] = f"Bearer {token}"
            response = yield request
            if response.status_code != 401:
                return
            response.read()
            rejected = token


def _token_failure(url: str, response: httpx.Response) -> str:
    # The endpoint's answer (an OAuth2 error code and description), never the request,
    # which holds the client secret.
    return (
        f"OAuth2 token request to {url} got HTTP {response.status_code}: "
        f"{response.text[:200].strip() or '(empty)'}"
    )


def build_auth(peer: PeerBase, environ: Mapping[str, str]) -> httpx.Auth | None:
    """The httpx auth for `peer.auth` (or the older `peer.auth_env`), secrets from `environ`."""
    credentials = peer.credentials
    return None if credentials is None else _auth_of(credentials, environ, peer)


def _auth_of(auth: PeerAuth, environ: Mapping[str, str], peer: PeerBase) -> httpx.Auth:
    if isinstance(auth, HeaderAuth):
        key = "peer.auth.value_env" if getattr(peer, "auth", None) else "peer.auth_env"
        return _Header(auth.header or "Authorization", env_secret(environ, key, auth.value_env))
    if isinstance(auth, BearerAuth):
        token = env_secret(environ, "peer.auth.token_env", auth.token_env)
        return _Header("Authorization", f"Bearer {token}")
    if isinstance(auth, BasicAuth):
        return httpx.BasicAuth(
            env_secret(environ, "peer.auth.username_env", auth.username_env),
            env_secret(environ, "peer.auth.password_env", auth.password_env),
        )
    if isinstance(auth, ApiKeyAuth):
        key = env_secret(environ, "peer.auth.key_env", auth.key_env)
        return _Header(auth.header, key) if auth.header else _QueryKey(str(auth.query), key)
    return _ClientCredentials(
        auth,
        env_secret(environ, "peer.auth.client_id_env", auth.client_id_env),
        env_secret(environ, "peer.auth.client_secret_env", auth.client_secret_env),
    )
