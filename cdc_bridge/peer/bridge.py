"""The bridge kind of peer (`adapter: bridge`): another cdc-bridge's `serve`.

Batches of whole source transactions go to `<peer url>/v1/batches`, signed with the shared
secret; the peer answers a result per change. Reconcile pages through its signed read
endpoint (`/v1/read`) in key order. Transient: connection errors, timeouts, 408, 429 and
5xx. Permanent: any other 4xx (the whole batch is refused).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from typing import Any, ClassVar

import orjson
from pydantic import ValidationError

from cdc_bridge.config import BridgeConfig, BridgePeer, TableSpec
from cdc_bridge.errors import CodecError, RequestFailed
from cdc_bridge.outbox import Encoded
from cdc_bridge.peer import codec
from cdc_bridge.peer.endpoint import (
    APPLIED,
    Answer,
    Capabilities,
    Delivery,
    Outgoing,
    Page,
)
from cdc_bridge.peer.http import (
    BlockingClient,
    PeerClient,
    http_failure,
    kept,
    no_answer,
    note_status,
    read_failure,
    signed_headers,
    transport_failure,
)
from cdc_bridge.peer.protocol import (
    BATCH_PATH,
    PROTOCOL,
    READ_PATH,
    BatchResponse,
    ChangeResult,
    Op,
    ReadRequest,
    ResultStatus,
    Signer,
    dumps,
)

_SERVE_HINT = "fix: check that the peer's `cdc-bridge serve` is running and reachable"


class BridgeEndpoint:
    """POSTs signed batches to `<peer url>/v1/batches` (served by `cdc-bridge serve`)."""

    capabilities: ClassVar[Capabilities] = Capabilities(
        whole_transactions=True,
        encoded=Encoded.CHANGE,
        lists_rows=True,
        exact_values=True,
    )

    @staticmethod
    def takes_encoded(spec: TableSpec) -> bool:
        return True  # a whole row ships as it is

    def __init__(self, config: BridgeConfig) -> None:
        peer = config.peer
        if not isinstance(peer, BridgePeer):
            raise TypeError(f"a BridgeEndpoint for a peer of kind {peer.adapter!r}")
        assert peer.secrets  # the config requires it for this kind
        self._config = config
        self._peer = peer
        self._system = config.system
        self._signer = Signer(peer.secrets)
        self._http = PeerClient(peer)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def deliver(
        self, batch_id: str, changes: Sequence[Outgoing], settled_below: int | None = None
    ) -> Delivery:
        body = batch_body(self._system, batch_id, changes, settled_below)
        headers = signed_headers(self._signer, batch_id, body)
        started = time.perf_counter()
        try:
            response = await self._http.request("POST", BATCH_PATH, body=body, headers=headers)
        except RequestFailed as exc:
            return no_answer(exc, started)
        if response.status != 200:
            retry_after = response.headers.get("retry-after")
            return http_failure(response.status, response.content, retry_after, started)
        return read_results(response.content, changes, started)

    def read(self, spec: TableSpec) -> BridgeReader:
        return BridgeReader(self._config, self._peer, spec, self._signer)


def batch_body(
    system: str, batch_id: str, changes: Sequence[Outgoing], settled_below: int | None = None
) -> bytes:
    """The protocol batch as JSON (same shape as `Batch`, built without model overhead)."""
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
        "entity": change.entity or change.table,
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
    delivery = Delivery(
        results=results,
        detail=kept(content) if rejected else None,
        duration_ms=elapsed,
    )
    note_status(delivery, 200)
    return delivery


_STATUSES = {status.value: status for status in ResultStatus}
_RESULT_FIELDS = frozenset(ChangeResult.model_fields)
_RESPONSE_FIELDS = frozenset(BatchResponse.model_fields)


def fast_results(content: bytes) -> list[tuple[str, Answer]] | None:
    """The results of a well-formed batch response, or None to validate it in full.

    Checks what `BatchResponse` checks, without building models through the validator
    (which cost ~30 % of the relay's CPU at batch 500): one answer per change is the
    hot path. The relay reads no number of an answer (a resolution's values are the
    peer's record of a conflict), so orjson's parse serves; the exact one only for an
    answer too deep for it.
    """
    try:
        data = orjson.loads(content)
    except orjson.JSONDecodeError:
        try:
            data = codec.loads(content)
        except CodecError:
            return None
    if type(data) is not dict or not data.keys() <= _RESPONSE_FIELDS:
        return None
    items = data.get("results")
    if data.get("protocol", PROTOCOL) != PROTOCOL or type(items) is not list:
        return None
    results = []
    for item in items:
        result = _fast_result(item)
        if result is None:
            return None
        results.append(result)
    return results


def _fast_result(item: object) -> tuple[str, Answer] | None:
    if type(item) is not dict:
        return None
    key, status = item.get("idempotency_key"), item.get("status")
    if type(key) is not str or type(status) is not str:
        return None
    if len(item) == 2 and status == "applied":  # the usual answer: nothing else to check
        return key, APPLIED
    if not item.keys() <= _RESULT_FIELDS or (known := _STATUSES.get(status)) is None:
        return None
    reason, resolution = item.get("reason"), item.get("resolution")
    if not (reason is None or type(reason) is str):
        return None
    if not (resolution is None or type(resolution) is dict):
        return None
    if known is ResultStatus.APPLIED and reason is None:
        return key, APPLIED
    return key, Answer(known, reason)


def _bad_answer(content: bytes, error: str, elapsed: float) -> Delivery:
    # Nothing is known to be applied: resend later (the idempotency keys make it safe).
    delivery = Delivery(
        error=error[:500], detail=kept(content), transient=True, duration_ms=elapsed
    )
    note_status(delivery, 200)
    return delivery


class BridgeReader:
    """Key-ordered pages from the peer's `/v1/read`, signed like the relay's batches."""

    def __init__(
        self, config: BridgeConfig, peer: BridgePeer, spec: TableSpec, signer: Signer
    ) -> None:
        self._signer = signer
        self._system, self._label, self._url = config.system, spec.label, peer.url
        self._entity = spec.entity
        self._http = BlockingClient(PeerClient(peer))

    def page(self, after: dict[str, Any] | None, limit: int) -> Page:
        request = ReadRequest(source=self._system, entity=self._entity, after=after, limit=limit)
        body = dumps(request)
        headers = signed_headers(self._signer, f"read-{uuid.uuid4().hex}", body)
        try:
            response = self._http.request("POST", READ_PATH, body=body, headers=headers)
        except RequestFailed as exc:
            raise transport_failure(self._label, self._url, exc, _SERVE_HINT) from exc
        if response.status != 200:
            raise read_failure(self._label, self._url, response)
        data = codec.loads(response.content)
        return Page(rows=list(data["rows"]), more=bool(data["more"]), next=data.get("next"))

    def close(self) -> None:
        self._http.close()

