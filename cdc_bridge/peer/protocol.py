"""Bridge batch protocol v2: the public contract between two bridges (docs/protocol.md).

v2 carries entities and their fields (`entity`), not table and column names: each side
maps its own tables to them (cdc_bridge/entity/). A v1 batch (`table`) is still
accepted: its table name is read as the entity name, which is what a twin's table is.

A sender POSTs one JSON batch to `<peer url>/v1/batches`, signed with HMAC-SHA256 in the
Standard Webhooks scheme (headers webhook-id, webhook-timestamp, webhook-signature). The
receiver answers 200 with one result per change, in the same order. A whole batch is refused
only for transport reasons: 401 (signature or timestamp), 413 (too large), 400 (not a valid
batch); then nothing was applied.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from standardwebhooks import Webhook

from cdc_bridge.errors import SignatureError
from cdc_bridge.peer import codec

PROTOCOL: Literal["cdc-bridge/2"] = "cdc-bridge/2"
PROTOCOL_V1 = "cdc-bridge/1"
Protocol = Literal["cdc-bridge/2", "cdc-bridge/1"]
BATCH_PATH = "/v1/batches"
READ_PATH = "/v1/read"  # reconcile reads the peer's rows through this endpoint

HEADER_ID = "webhook-id"
HEADER_TIMESTAMP = "webhook-timestamp"
HEADER_SIGNATURE = "webhook-signature"


class Op(StrEnum):
    INSERT = "insert"
    UPDATE = "update"
    DELETE = "delete"

    @classmethod
    def from_outbox(cls, code: str) -> Op:
        return {"I": cls.INSERT, "U": cls.UPDATE, "D": cls.DELETE}[code]


class ResultStatus(StrEnum):
    APPLIED = "applied"
    DUPLICATE = "duplicate"  # this idempotency key was applied before: nothing done
    CONFLICT_RESOLVED = "conflict_resolved"  # applied after a concurrent-edit conflict
    REJECTED = "rejected"  # permanent: the sender parks the key and keeps the change for replay
    SKIPPED = "skipped"  # not tried: an earlier change of the same key in this batch was rejected

    @property
    def acknowledged(self) -> bool:
        """The sender may drop the change from its outbox."""
        return self in (self.APPLIED, self.DUPLICATE, self.CONFLICT_RESOLVED)


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Change(_Strict):
    idempotency_key: str = Field(min_length=1, max_length=200)
    # The source transaction. Changes of one txid are applied all or none, in one
    # database transaction; a change without one is a transaction of its own.
    txid: str | None = Field(default=None, min_length=1, max_length=40)
    entity: str = Field(min_length=1)
    op: Op
    key: dict[str, Any] = Field(min_length=1)  # the entity's key fields
    fields: dict[str, Any] | None = None  # new values of entity fields; None for delete
    old: dict[str, Any] | None = None  # previous values of changed fields owned by both sides
    committed_at: datetime  # when the change was made at the source (conflict ordering)
    origin: str  # the system that made the change


def _v1_tables_as_entities(data: Any) -> Any:
    """A v1 message names a table where v2 names an entity: read it as one."""
    if not isinstance(data, dict) or data.get("protocol") != PROTOCOL_V1:
        return data
    data = dict(data)
    if isinstance(data.get("changes"), list):
        data["changes"] = [
            {("entity" if k == "table" else k): v for k, v in c.items()}
            if isinstance(c, dict) else c
            for c in data["changes"]
        ]
    if "table" in data:
        data["entity"] = data.pop("table")
    return data


class Batch(_Strict):
    protocol: Protocol = PROTOCOL
    source: str = Field(min_length=1)  # the sending system's name
    batch_id: str = Field(min_length=1)
    changes: list[Change]
    # The sender's watermark: every change of a source transaction with a lower txid has
    # left its outbox and is never sent again except as a resend of an applied one.
    settled_below: int | None = Field(default=None, ge=0)

    @model_validator(mode="before")
    @classmethod
    def _v1(cls, data: Any) -> Any:
        return _v1_tables_as_entities(data)


class ChangeResult(_Strict):
    idempotency_key: str
    status: ResultStatus
    reason: str | None = None
    # For conflict_resolved: policy, winner and both values, for the sender's records.
    resolution: dict[str, Any] | None = None


class BatchResponse(_Strict):
    protocol: Protocol = PROTOCOL
    results: list[ChangeResult]


class ReadRequest(_Strict):
    """Reconcile: ask the peer for its copy of an entity's records (key-ordered pages)."""

    protocol: Protocol = PROTOCOL
    source: str
    entity: str
    after: dict[str, Any] | None = None  # exclusive lower bound on the key, for paging
    limit: int = Field(default=1000, gt=0, le=10_000)

    @model_validator(mode="before")
    @classmethod
    def _v1(cls, data: Any) -> Any:
        return _v1_tables_as_entities(data)


class ReadResponse(_Strict):
    protocol: Protocol = PROTOCOL
    rows: list[dict[str, Any]]  # the entity's fields this side receives, key included
    more: bool
    # Where the next page starts: pass it as `after`. For an entity mapped to other names
    # the rows' order is the peer's own key's, so only this cursor pages through them.
    next: dict[str, Any] | None = None


def dumps(model: BaseModel) -> bytes:
    """A message as JSON; values keep their exact numbers (see codec.py)."""
    return codec.dumps(model.model_dump(exclude_none=True))


# ------------------------------------------------------------------ signing


class Signer:
    """Standard Webhooks signatures with shared secrets (the raw bytes of `peer.secret`).

    It signs with the first secret and accepts a signature made with any of them, so a pair
    can rotate its secret while both keep running (README: rotating the shared secret).
    """

    def __init__(self, secrets: str | Sequence[str]) -> None:
        listed = [secrets] if isinstance(secrets, str) else list(secrets)
        if not listed or not all(listed):
            raise ValueError("the shared secret is empty")
        self._webhooks = [Webhook(s.encode("utf-8")) for s in listed]

    def headers(self, message_id: str, body: bytes, now: float | None = None) -> dict[str, str]:
        timestamp = int(time.time() if now is None else now)
        signature = self._sign(message_id, timestamp, body)
        return {
            HEADER_ID: message_id,
            HEADER_TIMESTAMP: str(timestamp),
            HEADER_SIGNATURE: signature,
        }

    def verify(
        self, headers: dict[str, str], body: bytes, tolerance_s: float, now: float | None = None
    ) -> str:
        """Return the message id, or raise SignatureError saying what is wrong."""
        lowered = {k.lower(): v for k, v in headers.items()}
        message_id = lowered.get(HEADER_ID)
        stamp = lowered.get(HEADER_TIMESTAMP)
        given = lowered.get(HEADER_SIGNATURE)
        if not (message_id and stamp and given):
            raise SignatureError("missing webhook-id, webhook-timestamp or webhook-signature")
        try:
            timestamp = int(stamp)
        except ValueError:
            raise SignatureError("webhook-timestamp is not a Unix timestamp") from None
        current = time.time() if now is None else now
        if abs(current - timestamp) > tolerance_s:
            raise SignatureError(
                f"webhook-timestamp is {current - timestamp:+.0f}s from now, outside "
                f"the {tolerance_s:.0f}s tolerance (replayed, or clocks disagree)"
            )
        # Standard Webhooks: the header may carry several space-separated signatures.
        offered = [
            value
            for version, _, value in (c.partition(",") for c in given.split(" "))
            if version == "v1"
        ]
        for webhook in self._webhooks:
            expected = _sign(webhook, message_id, timestamp, body).split(",", 1)[1]
            if any(hmac.compare_digest(value, expected) for value in offered):
                return message_id
        raise SignatureError("no valid signature (wrong secret, or the body was altered)")

    def _sign(self, message_id: str, timestamp: int, body: bytes) -> str:
        return _sign(self._webhooks[0], message_id, timestamp, body)


def _sign(webhook: Webhook, message_id: str, timestamp: int, body: bytes) -> str:
    when = datetime.fromtimestamp(timestamp, tz=UTC)
    return str(webhook.sign(message_id, when, body.decode("utf-8")))
