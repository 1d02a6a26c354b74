"""The bridge's one HTTP client to its peer (aiohttp), and what its answers mean.

Every request to the peer goes through a `PeerClient`: the relay's batches, a REST API's
requests and its OAuth2 token requests, and the tools' reads (reconcile, poll), which run
the same client on a private event loop (`BlockingClient`). One setup for all of them:
- the base URL (`peer.url`; a path in it prefixes every request's path);
- TLS as `peer.tls` asks (a private CA to trust, a client certificate to present), else
  the system's CAs;
- the timeout of one request (`peer.timeout_s`, the whole request and its answer);
- the credential (`peer.auth`, auth.py), added to each request;
- TCP_NODELAY (aiohttp sets it on every connection it opens);
- no redirects followed: a 3xx is an answer like any other.
The bridge protocol's requests are signed here too (`signed_headers`).

aiohttp was chosen by measurement (bench/README.md, "HTTP stacks"): a 500-change batch
through httpx cost 1.65x the CPU of aiohttp and gave 0.60x the batches/s.

A peer that does not answer (connection refused or reset, timeout, TLS) raises
`RequestFailed`, whose message is `describe_error`'s (`ConnectError: ...`, `Timeout`).
"""

from __future__ import annotations

import asyncio
import os
import re
import ssl
import time
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Any, TypedDict, Unpack

import aiohttp
import orjson
from yarl import URL

from cdc_bridge.config import PeerBase
from cdc_bridge.db import mask_dsn
from cdc_bridge.errors import PeerReadError, RequestFailed
from cdc_bridge.peer.auth import Credential, build_auth
from cdc_bridge.peer.endpoint import Delivery
from cdc_bridge.peer.protocol import Signer

# Kept with an attempt or a failed change: enough to see what the peer said.
MAX_KEPT_BODY = 4000
_TRANSIENT_4XX = (408, 429)


def tls_context(peer: PeerBase) -> ssl.SSLContext | None:
    """TLS as `peer.tls` asks: a private CA to trust, a client certificate to present.
    None: the HTTP client's default (the system's CAs, no client certificate)."""
    if peer.tls is None:
        return None
    context = ssl.create_default_context(cafile=peer.tls.ca)
    if peer.tls.cert is not None:
        context.load_cert_chain(peer.tls.cert, peer.tls.key)
    return context


@dataclass(frozen=True, slots=True)
class Response:
    """The peer's answer, read whole."""

    status: int
    headers: Mapping[str, str]  # case-insensitive
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")


def peer_url(base: str, target: str, params: Mapping[str, Any] | None = None) -> URL:
    """`target` under `base` (a path is appended to the base's path, as in
    `https://host/api/` + `/v1/batches`; an absolute URL is taken as it is), with `params`
    added to its query."""
    if target.startswith(("http://", "https://")):
        url = URL(target)
    else:
        url = URL(base.rstrip("/") + "/" + target.lstrip("/"))
    if params:
        url = url.extend_query({name: _query_value(v) for name, v in params.items()})
    return url


# A path already percent-encoded (every fixed path, and what rest.fill_path makes): only
# unreserved and sub-delimiter characters, ':', '@', '/' and %XX escapes; no query.
_ENCODED_PATH = re.compile(r"/(?:[A-Za-z0-9\-._~!$&'()*+,;=:@/]|%[0-9A-Fa-f]{2})*")


class PeerUrls:
    """`peer_url` for one base URL. A path that is already percent-encoded is joined to
    the base parsed once, instead of parsing the whole URL again at every request (about
    2 us of the relay's CPU per REST request); any other target goes through `peer_url`."""

    def __init__(self, base: str) -> None:
        self._base = base
        parsed = URL(base)
        self._parsed = None if parsed.query_string or parsed.fragment else parsed
        self._prefix = parsed.raw_path.rstrip("/")

    def __call__(self, target: str, params: Mapping[str, Any] | None = None) -> URL:
        if not params and self._parsed is not None and _ENCODED_PATH.fullmatch(target):
            return self._parsed.with_path(self._prefix + "/" + target.lstrip("/"), encoded=True)
        return peer_url(self._base, target, params)


def _query_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class PeerClient:
    """Requests to the peer, set up as `peer` says (see the module's docstring).

    The aiohttp session needs the running loop: it is opened on the first request.
    """

    def __init__(
        self,
        peer: PeerBase,
        environ: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self._url = PeerUrls(peer.url)
        self._ssl: ssl.SSLContext | bool = tls_context(peer) or True
        self._timeout = aiohttp.ClientTimeout(total=peer.timeout_s)
        self._credential: Credential | None = build_auth(
            peer, os.environ if environ is None else environ
        )
        self._headers = dict(headers or {})
        self._session: aiohttp.ClientSession | None = None

    def request(
        self,
        method: str,
        target: str,
        *,
        body: bytes | None = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Coroutine[Any, Any, Response]:
        """Send one request (`target`: a path under `peer.url`, or an absolute URL) with
        the peer's credential; raises `RequestFailed` when the peer does not answer.

        A plain function returning the sending coroutine: one coroutine less to resume
        at every step of every request."""
        url = self._url(target, params)
        sent = {**self._headers, **headers} if headers else self._headers
        if self._credential is None:
            return self._send(method, url, body, sent)
        return self._authorized(self._credential, method, url, body, sent)

    async def _authorized(
        self,
        credential: Credential,
        method: str,
        url: URL,
        body: bytes | None,
        sent: Mapping[str, str],
    ) -> Response:
        async def send(extra: Mapping[str, str], query: Mapping[str, str]) -> Response:
            return await self._send(
                method, url.extend_query(query) if query else url, body, {**sent, **extra}
            )

        reply = await credential.send(send, self._post)
        assert isinstance(reply, Response)
        return reply

    async def _post(self, url: str, body: bytes, headers: Mapping[str, str]) -> Response:
        """A request of the credential's own (an OAuth2 token request): only its headers."""
        return await self._send("POST", URL(url), body, headers)

    async def _send(
        self, method: str, url: URL, body: bytes | None, headers: Mapping[str, str]
    ) -> Response:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=self._timeout, connector=aiohttp.TCPConnector(ssl=self._ssl)
            )
        try:
            async with self._session.request(
                method, url, data=body, headers=headers, allow_redirects=False
            ) as answer:
                return Response(answer.status, answer.headers, await answer.read())
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise RequestFailed(describe_error(exc)) from exc

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class RequestOptions(TypedDict, total=False):
    """`PeerClient.request`'s options."""

    body: bytes | None
    params: Mapping[str, Any] | None
    headers: Mapping[str, str] | None


class BlockingClient:
    """A `PeerClient` for the blocking tools (reconcile, poll): each request runs to its
    end on the client's own event loop, which keeps its connections (and an OAuth2
    token) from one request to the next. For one thread at a time."""

    def __init__(self, client: PeerClient) -> None:
        self._client = client
        self._loop = asyncio.Runner()

    def request(self, method: str, target: str, **options: Unpack[RequestOptions]) -> Response:
        return self._loop.run(self._client.request(method, target, **options))

    def close(self) -> None:
        try:
            self._loop.run(self._client.aclose())
        finally:
            self._loop.close()


def signed_headers(signer: Signer, message_id: str, body: bytes) -> dict[str, str]:
    """The headers of a bridge protocol request: its Standard Webhooks signature of
    `body` under `message_id` (a batch id, or a read's id), and its content type."""
    headers = signer.headers(message_id, body)
    headers["content-type"] = "application/json"
    return headers


# ------------------------------------------------------------------ answers


def is_transient_status(status: int) -> bool:
    return status in _TRANSIENT_4XX or status >= 500


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """`Retry-After` as seconds: either a number or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)


def describe_error(exc: Exception) -> str:
    """A transport error as text safe for logs (no credentials from the URL)."""
    text = str(exc).strip().splitlines()
    detail = f": {text[0]}" if text else ""
    return mask_dsn(f"{_error_name(exc)}{detail}")


def _error_name(exc: Exception) -> str:
    # Short names for the two usual failures (`attempts.error` has read this way since
    # the first version).
    if isinstance(exc, aiohttp.ClientConnectorError):
        return "ConnectError"
    if isinstance(exc, TimeoutError):
        return "Timeout"
    return type(exc).__name__


def kept(body: bytes) -> str:
    return body[:MAX_KEPT_BODY].decode("utf-8", errors="replace")


def answer_reason(content: bytes, limit: int = 300) -> str:
    """What a peer's error answer says: its JSON `error` (what `serve` sends), or the text."""
    try:
        data = orjson.loads(content)
    except orjson.JSONDecodeError:
        data = None
    if isinstance(data, dict) and isinstance(data.get("error"), str):
        text = data["error"]
    else:
        text = content.decode("utf-8", errors="replace")
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def note_status(delivery: Delivery, status: int) -> None:
    """What an HTTP status says of an attempt, in the terms of every kind of peer."""
    delivery.status = status
    delivery.answered = status == 200
    delivery.crashed = status == 500


def http_failure(status: int, content: bytes, retry_after: str | None, started: float) -> Delivery:
    reason = answer_reason(content)
    delivery = Delivery(
        detail=kept(content),
        error=f"HTTP {status}: {reason}" if reason else f"HTTP {status}",
        transient=is_transient_status(status),
        permanent=not is_transient_status(status),
        retry_after_s=retry_after_seconds(retry_after),
        duration_ms=(time.perf_counter() - started) * 1000,
    )
    note_status(delivery, status)
    return delivery


def no_answer(exc: RequestFailed, started: float) -> Delivery:
    return Delivery(
        error=str(exc),
        transient=True,
        duration_ms=(time.perf_counter() - started) * 1000,
    )


# ------------------------------------------------------------------ the tools' reads

_KEPT_READ_BODY = 300


def read_failure(what: str, url: str, response: Response) -> PeerReadError:
    body = response.content[:_KEPT_READ_BODY].decode("utf-8", errors="replace")
    return PeerReadError(
        f"reading {what} from the peer at {mask_dsn(url)} failed: HTTP "
        f"{response.status}: {body}"
    )


def transport_failure(what: str, url: str, exc: RequestFailed, fix: str) -> PeerReadError:
    return PeerReadError(f"reading {what} from the peer at {mask_dsn(url)} failed: {exc}; {fix}")
