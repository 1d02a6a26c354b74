"""Peer clients: the bridge batch protocol v1, and a per-change REST mapping.

Both answer a `Delivery`: a result per change the peer answered, and whether what is
left failed transiently (retry with backoff) or permanently (park the keys).
Transient: connection errors, timeouts, 408, 429 and 5xx. Permanent: any other 4xx.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import ssl
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Protocol
from urllib.parse import quote

import aiohttp
import httpx
import orjson
from aiolimiter import AsyncLimiter
from pydantic import ValidationError

from cdc_bridge.config import (
    BridgeConfig,
    PeerConfig,
    RateLimit,
    RestOperation,
    RestTableMapping,
)
from cdc_bridge.db import mask_dsn
from cdc_bridge.errors import BodyError, CodecError, TokenError
from cdc_bridge.peer import codec
from cdc_bridge.peer.auth import build_auth
from cdc_bridge.peer.protocol import (
    BATCH_PATH,
    PROTOCOL,
    BatchResponse,
    ChangeResult,
    Op,
    ResultStatus,
    Signer,
)
from cdc_bridge.peer.rest import Xref, body_of, pointed_id

# Kept with an attempt or a failed change: enough to see what the peer said.
MAX_KEPT_BODY = 4000
# How long every request to a REST peer waits after a 429 that gave no Retry-After.
RATE_LIMITED_PAUSE_S = 1.0
_TRANSIENT_4XX = (408, 429)


# Not frozen: a frozen dataclass costs ~1.4 us more to build, and one is built per change sent.
@dataclass(slots=True)
class Outgoing:
    """One change as it will be sent (fields already narrowed by the SOR filter)."""

    id: int
    idempotency_key: str
    table: str
    op: str  # outbox code: 'I' | 'U' | 'D'
    key: dict[str, Any] | None  # None when `encoded` (then only key_text is read)
    key_text: str
    fields: dict[str, Any] | None
    old: dict[str, Any] | None
    committed_at: datetime
    origin: str
    # The whole change already encoded as protocol v1 JSON (by PostgreSQL): sent as is.
    encoded: str | None = None
    txid: str | None = None  # the source transaction: the peer applies it whole

    def key_values(self) -> dict[str, Any]:
        """The key as a dict (parsed from its jsonb text when the row came encoded)."""
        if self.key is not None:
            return self.key
        key: dict[str, Any] = codec.loads(self.key_text)
        return key


@dataclass(frozen=True, slots=True)
class Answer:
    """The peer's result for one change (a plain object: one is built per change)."""

    status: ResultStatus
    reason: str | None = None


APPLIED = Answer(ResultStatus.APPLIED)


@dataclass
class Delivery:
    """What one attempt achieved. Changes without a result were not applied."""

    results: dict[int, Answer] = field(default_factory=dict)
    http_status: int | None = None
    error: str | None = None
    response_body: str | None = None
    transient: bool = False
    permanent: bool = False
    retry_after_s: float | None = None
    duration_ms: float = 0.0
    # Per-change HTTP status and body, when each change had its own request (REST).
    answers: dict[int, tuple[int, str]] = field(default_factory=dict)


class PeerClient(Protocol):
    async def deliver(
        self, batch_id: str, changes: Sequence[Outgoing], settled_below: int | None = None
    ) -> Delivery: ...

    async def aclose(self) -> None: ...


def tls_context(peer: PeerConfig) -> ssl.SSLContext | None:
    """TLS as `peer.tls` asks: a private CA to trust, a client certificate to present.
    None: the HTTP client's default (the system's CAs, no client certificate)."""
    if peer.tls is None:
        return None
    context = ssl.create_default_context(cafile=peer.tls.ca)
    if peer.tls.cert is not None:
        context.load_cert_chain(peer.tls.cert, peer.tls.key)
    return context


def http_client(peer: PeerConfig, auth: httpx.Auth | None = None) -> httpx.AsyncClient:
    # TCP_NODELAY: the request head and body go out in separate writes, and without it
    # Nagle's algorithm holds the body until the peer's delayed ACK (~40 ms per request).
    transport = httpx.AsyncHTTPTransport(
        verify=tls_context(peer) or True,
        socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
    )
    return httpx.AsyncClient(
        base_url=peer.url, timeout=peer.timeout_s, transport=transport, auth=auth
    )


class Pace:
    """How fast the REST adapter may call the peer's API: at most `concurrency` requests
    at once, at most `requests_per_s`, and none while a 429's `Retry-After` lasts (a rate
    limit is the API's, for all our requests, not for the one record that hit it)."""

    def __init__(self, limit: RateLimit) -> None:
        self._slots = asyncio.Semaphore(limit.concurrency)
        self._rate = AsyncLimiter(limit.requests_per_s, 1) if limit.requests_per_s else None
        self._resume_at = 0.0

    @contextlib.asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        async with self._slots:
            while (wait := self._resume_at - time.monotonic()) > 0:
                await asyncio.sleep(wait)
            if self._rate is not None:
                await self._rate.acquire()
            yield

    def pause(self, seconds: float) -> None:
        self._resume_at = max(self._resume_at, time.monotonic() + seconds)


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
    # aiohttp's names for the two usual failures take httpx's (which the REST adapter
    # still uses), so `attempts.error` reads the same whichever client sent the request.
    if isinstance(exc, aiohttp.ClientConnectorError):
        return "ConnectError"
    if isinstance(exc, TimeoutError):
        return "Timeout"
    return type(exc).__name__


def _kept(body: bytes) -> str:
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


def _http_failure(
    status: int, content: bytes, retry_after: str | None, started: float
) -> Delivery:
    reason = answer_reason(content)
    return Delivery(
        http_status=status,
        response_body=_kept(content),
        error=f"HTTP {status}: {reason}" if reason else f"HTTP {status}",
        transient=is_transient_status(status),
        permanent=not is_transient_status(status),
        retry_after_s=retry_after_seconds(retry_after),
        duration_ms=(time.perf_counter() - started) * 1000,
    )


def _no_answer(exc: Exception, started: float) -> Delivery:
    return Delivery(
        error=describe_error(exc),
        transient=True,
        duration_ms=(time.perf_counter() - started) * 1000,
    )


# ------------------------------------------------------------------ bridge protocol


def batch_body(
    system: str, batch_id: str, changes: Sequence[Outgoing], settled_below: int | None = None
) -> bytes:
    """The protocol v1 batch as JSON (same shape as `Batch`, built without model overhead)."""
    body: dict[str, Any] = {
        "protocol": PROTOCOL,
        "source": system,
        "batch_id": batch_id,
        "changes": [
            _change_json(c) if c.encoded is None else orjson.Fragment(c.encoded)
            for c in changes
        ],
    }
    if settled_below is not None:
        body["settled_below"] = settled_below
    return codec.dumps(body)


def _change_json(change: Outgoing) -> dict[str, Any]:
    item: dict[str, Any] = {
        "idempotency_key": change.idempotency_key,
        **({"txid": change.txid} if change.txid is not None else {}),
        "table": change.table,
        "op": Op.from_outbox(change.op).value,
        "key": change.key_values(),
        "committed_at": change.committed_at,
        "origin": change.origin,
    }
    if change.fields is not None:
        item["fields"] = change.fields
    if change.old is not None:
        item["old"] = change.old
    return item


def batch_session(peer: PeerConfig) -> aiohttp.ClientSession:
    """The batch protocol's HTTP client: aiohttp, which costs a fraction of httpx's CPU
    per request (httpx was a quarter of the relay's CPU at batch 500). aiohttp sets
    TCP_NODELAY on its connections itself. Created on first use: it needs the loop."""
    return aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=peer.timeout_s),
        connector=aiohttp.TCPConnector(ssl=tls_context(peer) or True),
    )


class BridgeClient:
    """POSTs signed batches to `<peer url>/v1/batches` (served by `cdc-bridge serve`)."""

    def __init__(
        self, peer: PeerConfig, system: str, http: aiohttp.ClientSession | None = None
    ):
        assert peer.secrets  # the config requires it for this adapter
        self._peer = peer
        self._system = system
        self._signer = Signer(peer.secrets)
        self._http = http
        self._url = peer.url + BATCH_PATH

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.close()

    async def deliver(
        self, batch_id: str, changes: Sequence[Outgoing], settled_below: int | None = None
    ) -> Delivery:
        if self._http is None:
            self._http = batch_session(self._peer)
        body = batch_body(self._system, batch_id, changes, settled_below)
        headers = self._signer.headers(batch_id, body)
        headers["content-type"] = "application/json"
        started = time.perf_counter()
        try:
            async with self._http.post(self._url, data=body, headers=headers) as response:
                content = await response.read()
                status, retry_after = response.status, response.headers.get("retry-after")
        except (aiohttp.ClientError, TimeoutError) as exc:
            return _no_answer(exc, started)
        if status != 200:
            return _http_failure(status, content, retry_after, started)
        return read_results(content, changes, started)


def read_results(content: bytes, changes: Sequence[Outgoing], started: float) -> Delivery:
    """The per-change results of a 200 answer (`content` is its body)."""
    elapsed = (time.perf_counter() - started) * 1000
    parsed = fast_results(content)
    if parsed is None:  # not the plain shape: full validation says what is wrong
        try:
            validated = BatchResponse.model_validate_json(content).results
        except ValidationError as exc:
            error = f"the peer's answer is not a batch response: {exc}"
            return _bad_answer(content, error, elapsed)
        parsed = [(r.idempotency_key, Answer(r.status, r.reason)) for r in validated]
    by_key = {c.idempotency_key: c.id for c in changes}
    results = {by_key[key]: answer for key, answer in parsed if key in by_key}
    if len(results) != len(changes):
        return _bad_answer(content, "the peer answered for other changes than sent", elapsed)
    rejected = any(r.status is ResultStatus.REJECTED for r in results.values())
    return Delivery(
        results=results,
        http_status=200,
        response_body=_kept(content) if rejected else None,
        duration_ms=elapsed,
    )


_STATUSES = {status.value: status for status in ResultStatus}
_RESULT_FIELDS = frozenset(ChangeResult.model_fields)
_RESPONSE_FIELDS = frozenset(BatchResponse.model_fields)


def fast_results(content: bytes) -> list[tuple[str, Answer]] | None:
    """The results of a well-formed batch response, or None to validate it in full.

    Checks what `BatchResponse` checks, without building models through the validator
    (which cost ~30 % of the relay's CPU at batch 500): one answer per change is the
    hot path.
    """
    try:
        data = codec.loads(content)
    except CodecError:
        return None
    if not isinstance(data, dict) or not data.keys() <= _RESPONSE_FIELDS:
        return None
    items = data.get("results")
    if data.get("protocol", PROTOCOL) != PROTOCOL or not isinstance(items, list):
        return None
    results = []
    for item in items:
        result = _fast_result(item)
        if result is None:
            return None
        results.append(result)
    return results


def _fast_result(item: object) -> tuple[str, Answer] | None:
    if not isinstance(item, dict) or not item.keys() <= _RESULT_FIELDS:
        return None
    key, status = item.get("idempotency_key"), _STATUSES.get(item.get("status"))  # type: ignore[arg-type]
    reason, resolution = item.get("reason"), item.get("resolution")
    if type(key) is not str or status is None:
        return None
    if not (reason is None or type(reason) is str):
        return None
    if not (resolution is None or type(resolution) is dict):
        return None
    if status is ResultStatus.APPLIED and reason is None:
        return key, APPLIED
    return key, Answer(status, reason)


def _bad_answer(content: bytes, error: str, elapsed: float) -> Delivery:
    # Nothing is known to be applied: resend later (the idempotency keys make it safe).
    return Delivery(
        http_status=200,
        error=error[:500],
        response_body=_kept(content),
        transient=True,
        duration_ms=elapsed,
    )


# ------------------------------------------------------------------ REST mapping


class RestClient:
    """One request per change from the table's `rest` mapping; same key sequential."""

    def __init__(self, config: BridgeConfig, environ: Mapping[str, str] | None = None):
        peer = config.peer
        self._mappings = {s.label: s for s in config.table_specs if s.rest is not None}
        self._headers = {"content-type": "application/json"}
        self._http = http_client(peer, build_auth(peer, os.environ if environ is None else environ))
        self._pace = Pace(peer.rate_limit)
        self._xref = Xref(config.database.url.get_secret_value(), config.bridge_schema)

    async def aclose(self) -> None:
        await self._http.aclose()
        await self._xref.aclose()

    async def deliver(
        self, batch_id: str, changes: Sequence[Outgoing], settled_below: int | None = None
    ) -> Delivery:
        """One request per change; `settled_below` concerns the batch protocol only."""
        by_record: dict[tuple[str, str], list[Outgoing]] = {}
        for change in changes:
            by_record.setdefault((change.table, change.key_text), []).append(change)
        started = time.perf_counter()
        outcome = Delivery()
        await asyncio.gather(*(self._deliver_record(g, outcome) for g in by_record.values()))
        outcome.duration_ms = (time.perf_counter() - started) * 1000
        return outcome

    async def _deliver_record(self, group: list[Outgoing], outcome: Delivery) -> None:
        # One record's changes one after the other, in order; records side by side.
        for index, change in enumerate(group):
            result = await self._send(change, outcome)
            if result is None:  # transient: the rest of this key waits for the retry
                return
            outcome.results[change.id] = result
            if result.status is ResultStatus.REJECTED:
                for later in group[index + 1 :]:
                    outcome.results[later.id] = Answer(ResultStatus.SKIPPED)
                return

    async def _send(self, change: Outgoing, outcome: Delivery) -> Answer | None:
        operation = self._operation(change)
        if isinstance(operation, str):
            return _rejected(change, operation)
        mapping = self._mappings[change.table].rest
        assert mapping is not None
        try:
            if mapping.id is not None:
                return await self._send_tracked(change, mapping, outcome)
            response = await self._request(operation, change, outcome)
        except KeyError as exc:
            return _rejected(change, f"the URL template names {exc}, which is not a key column")
        except BodyError as exc:
            return _rejected(change, str(exc))
        return None if response is None else self._result(change, response, outcome)

    async def _request(
        self,
        operation: RestOperation,
        change: Outgoing,
        outcome: Delivery,
        peer_id: str | None = None,
        with_body: bool = True,
    ) -> httpx.Response | None:
        """One request for a change; None when it failed transiently (noted in `outcome`)."""
        values = dict(change.key_values())
        if peer_id is not None:
            values["peer_id"] = peer_id
        body = self._body(change) if with_body and change.op != "D" else None
        try:
            async with self._pace.turn():
                return await self._http.request(
                    operation.method,
                    fill_path(operation.path, values),
                    content=body,
                    headers=self._headers,
                )
        except httpx.HTTPError as exc:
            outcome.transient, outcome.error = True, describe_error(exc)
        except TokenError as exc:
            outcome.transient, outcome.error = True, str(exc)
        return None

    async def _send_tracked(
        self, change: Outgoing, mapping: RestTableMapping, outcome: Delivery
    ) -> Answer | None:
        """An API that names its records: update what the xref knows, create the rest."""
        peer_id = await self._xref.get(change.table, change.key_text)
        if change.op == "D":
            return await self._delete_tracked(change, mapping, peer_id, outcome)
        if peer_id is not None and mapping.update is not None:
            response = await self._request(mapping.update, change, outcome, peer_id)
            if response is None or response.status_code != 404:
                return None if response is None else self._result(change, response, outcome)
            await self._xref.forget(change.table, change.key_text)  # gone there: create it
        return await self._create(change, mapping, outcome)

    async def _create(
        self, change: Outgoing, mapping: RestTableMapping, outcome: Delivery
    ) -> Answer | None:
        assert mapping.insert is not None and mapping.id is not None
        response = await self._request(mapping.insert, change, outcome)
        if response is None:
            return None
        if 200 <= response.status_code < 300:
            peer_id = pointed_id(_json_or_none(response), mapping.id)
            if peer_id is None:
                return _rejected(
                    change, f"the create's answer has no id at {mapping.id}: "
                    f"{_kept(response.content)[:200]}"
                )
            await self._xref.save(change.table, change.key_text, peer_id)
            return APPLIED
        if response.status_code in mapping.exists and mapping.search is not None:
            return await self._adopt(change, mapping, outcome)
        return self._result(change, response, outcome)

    async def _adopt(
        self, change: Outgoing, mapping: RestTableMapping, outcome: Delivery
    ) -> Answer | None:
        """The API has the record already: find its id by our key, keep it, update it."""
        assert mapping.search is not None and mapping.found is not None
        response = await self._request(mapping.search, change, outcome, with_body=False)
        if response is None or response.status_code != 200:
            return None if response is None else self._result(change, response, outcome)
        peer_id = pointed_id(_json_or_none(response), mapping.found)
        if peer_id is None:
            return _rejected(
                change, f"the API says the record exists, but its search finds none at "
                f"{mapping.found}: {_kept(response.content)[:200]}"
            )
        await self._xref.save(change.table, change.key_text, peer_id)
        if mapping.update is None:
            return APPLIED
        updated = await self._request(mapping.update, change, outcome, peer_id)
        return None if updated is None else self._result(change, updated, outcome)

    async def _delete_tracked(
        self,
        change: Outgoing,
        mapping: RestTableMapping,
        peer_id: str | None,
        outcome: Delivery,
    ) -> Answer | None:
        if peer_id is None or mapping.delete is None:
            return APPLIED  # never created there: nothing to delete
        response = await self._request(mapping.delete, change, outcome, peer_id)
        if response is None:
            return None
        if response.status_code == 404 or 200 <= response.status_code < 300:
            await self._xref.forget(change.table, change.key_text)
            return APPLIED
        return self._result(change, response, outcome)

    def _operation(self, change: Outgoing) -> RestOperation | str:
        spec = self._mappings.get(change.table)
        if spec is None or spec.rest is None:
            return f"no REST mapping for table {change.table}"
        name = {"I": "insert", "U": "update", "D": "delete"}[change.op]
        operation: RestOperation | None = getattr(spec.rest, name)
        return operation or f"no REST operation for {name} on {change.table}"

    def _body(self, change: Outgoing) -> bytes:
        mapping = self._mappings[change.table].rest
        assert mapping is not None
        return codec.dumps(body_of(mapping, change.fields or {}))  # numbers as written

    def _result(
        self, change: Outgoing, response: httpx.Response, outcome: Delivery
    ) -> Answer | None:
        status = response.status_code
        outcome.http_status = status
        if 200 <= status < 300:
            return APPLIED
        outcome.response_body = _kept(response.content)
        outcome.answers[change.id] = (status, outcome.response_body)
        if is_transient_status(status):
            outcome.transient, outcome.error = True, f"HTTP {status}"
            outcome.retry_after_s = retry_after_seconds(response.headers.get("retry-after"))
            if status == 429:
                self._pace.pause(outcome.retry_after_s or RATE_LIMITED_PAUSE_S)
            return None
        return _rejected(change, f"HTTP {status}: {answer_reason(response.content, 200)}")


def _json_or_none(response: httpx.Response) -> Any:
    try:
        return codec.loads(response.content)  # a created id past 64 bits stays exact
    except CodecError:
        return None


def _rejected(change: Outgoing, reason: str) -> Answer:
    return Answer(ResultStatus.REJECTED, reason)


def fill_path(template: str, key: Mapping[str, Any]) -> str:
    """`/api/products/{sku}` with each key value URL-quoted (a '/' in a value stays inside)."""
    return template.format_map({name: quote(str(value), safe="") for name, value in key.items()})


def make_client(config: BridgeConfig) -> PeerClient:
    if config.peer.adapter == "rest":
        return RestClient(config)
    return BridgeClient(config.peer, config.system)
