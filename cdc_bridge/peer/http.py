"""Every HTTP client the bridge opens to its peer is built here, with one setup: the base
URL, TLS (`peer.tls`: a private CA, a client certificate), the timeout (`peer.timeout_s`),
the credential (`peer.auth`, see auth.py) and TCP_NODELAY. The bridge protocol's requests
are signed here too (`signed_headers`), for the relay's batches and reconcile's reads.

Two client libraries, chosen by measurement (bench/README.md, "HTTP stacks"):
- aiohttp for the relay's batches (`batch_session`): sending a 500-change batch through
  httpx cost 1.65x the CPU of aiohttp and gave 0.60x the batches/s (bench_http.py);
- httpx for everything else: a REST API's requests (`async_client`, with the auth flows
  of auth.py, OAuth2 token refresh included) and the tools' blocking reads (`sync_client`).

Failures read the same from both (`describe_error`: `ConnectError: ...`, `Timeout`).
"""

from __future__ import annotations

import os
import socket
import ssl
import time
from collections.abc import Mapping
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp
import httpx
import orjson

from cdc_bridge.config import PeerBase
from cdc_bridge.db import mask_dsn
from cdc_bridge.errors import PeerReadError
from cdc_bridge.peer.auth import build_auth
from cdc_bridge.peer.endpoint import Delivery
from cdc_bridge.peer.protocol import Signer

# What a client of this module raises when the peer does not answer (connection refused
# or reset, timeout, TLS): the callers need not know which library sent the request.
RequestFailed = httpx.HTTPError

# Kept with an attempt or a failed change: enough to see what the peer said.
MAX_KEPT_BODY = 4000
_TRANSIENT_4XX = (408, 429)
# The request head and body go out in separate writes, and without it Nagle's algorithm
# holds the body until the peer's delayed ACK (~40 ms per request).
_NODELAY = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]


def tls_context(peer: PeerBase) -> ssl.SSLContext | None:
    """TLS as `peer.tls` asks: a private CA to trust, a client certificate to present.
    None: the HTTP client's default (the system's CAs, no client certificate)."""
    if peer.tls is None:
        return None
    context = ssl.create_default_context(cafile=peer.tls.ca)
    if peer.tls.cert is not None:
        context.load_cert_chain(peer.tls.cert, peer.tls.key)
    return context


def batch_session(peer: PeerBase) -> aiohttp.ClientSession:
    """The batch protocol's client: aiohttp (sets TCP_NODELAY itself). It needs the
    running loop: create it on first use."""
    return aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=peer.timeout_s),
        connector=aiohttp.TCPConnector(ssl=_verify(peer)),
    )


def async_client(
    peer: PeerBase,
    environ: Mapping[str, str] | None = None,
    headers: Mapping[str, str] | None = None,
) -> httpx.AsyncClient:
    """An async client for the peer's API, authenticated as `peer.auth` says."""
    transport = httpx.AsyncHTTPTransport(verify=_verify(peer), socket_options=_NODELAY)
    return httpx.AsyncClient(transport=transport, **_setup(peer, environ, headers))


def sync_client(
    peer: PeerBase,
    environ: Mapping[str, str] | None = None,
    headers: Mapping[str, str] | None = None,
) -> httpx.Client:
    """A blocking client for the tools (reconcile, poll), set up like `async_client`."""
    transport = httpx.HTTPTransport(verify=_verify(peer), socket_options=_NODELAY)
    return httpx.Client(transport=transport, **_setup(peer, environ, headers))


def _verify(peer: PeerBase) -> ssl.SSLContext | bool:
    return tls_context(peer) or True


def _setup(
    peer: PeerBase, environ: Mapping[str, str] | None, headers: Mapping[str, str] | None
) -> dict[str, Any]:
    """What every httpx client to the peer shares: base URL, timeout, credential."""
    return {
        "base_url": peer.url,
        "timeout": peer.timeout_s,
        "auth": build_auth(peer, os.environ if environ is None else environ),
        "headers": headers,
    }


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
    # aiohttp's names for the two usual failures take httpx's, so `attempts.error`
    # reads the same whichever client sent the request.
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


def no_answer(exc: Exception, started: float) -> Delivery:
    return Delivery(
        error=describe_error(exc),
        transient=True,
        duration_ms=(time.perf_counter() - started) * 1000,
    )


# ------------------------------------------------------------------ the tools' reads

_KEPT_READ_BODY = 300


def read_failure(what: str, url: str, response: httpx.Response) -> PeerReadError:
    body = response.content[:_KEPT_READ_BODY].decode("utf-8", errors="replace")
    return PeerReadError(
        f"reading {what} from the peer at {mask_dsn(url)} failed: HTTP "
        f"{response.status_code}: {body}"
    )


def transport_failure(what: str, url: str, exc: httpx.HTTPError, fix: str) -> PeerReadError:
    detail = str(exc).strip().splitlines()
    reason = f"{type(exc).__name__}: {detail[0]}" if detail else type(exc).__name__
    return PeerReadError(
        f"reading {what} from the peer at {mask_dsn(url)} failed: {mask_dsn(reason)}; {fix}"
    )
