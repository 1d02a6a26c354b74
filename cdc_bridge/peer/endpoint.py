"""The seam between the bridge and a peer: one small interface every kind of peer serves.

A kind of peer (`peer.adapter`) is one config model in config.py and one module here that
implements `Endpoint`: `bridge.py` (another cdc-bridge's `serve`, signed batches) and
`rest.py` (an application's own REST API). `kinds.py` maps the one to the other.

The relay and the tools never ask which kind they talk to; they ask its `Capabilities`.
What a delivery achieved is said the same way for every kind (`Delivery`, `Answer`); an
endpoint that has no HTTP status leaves `status` empty and says what happened in
`error` and `detail`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, Protocol, runtime_checkable

from cdc_bridge.config import TableSpec
from cdc_bridge.outbox import Encoded
from cdc_bridge.peer import codec
from cdc_bridge.peer.protocol import ResultStatus


@dataclass(frozen=True)
class Capabilities:
    """What a kind of peer does, declared once by its module."""

    # Applies a source transaction at once and keeps the idempotency keys of what it
    # applied by source transaction, so it takes the sender's watermark (`settled_below`);
    # else it applies change by change, in order per record.
    whole_transactions: bool
    # What PostgreSQL may encode, as the relay reads them, of this side's own changes of
    # the whole-row tables the kind `takes_encoded`: the batch protocol's change JSON, or
    # the fields (a request body that is the row as it is). Those rows are neither parsed
    # nor filtered by the relay.
    encoded: Encoded
    # Can list its rows in our key order, so reconcile finds rows only it has.
    lists_rows: bool
    # Gives values back exactly as they were sent (reconcile compares them as text);
    # else numbers are compared by value (an API may write 12.50 as 12.5).
    exact_values: bool
    # Names records by ids of its own (learned from its answers and kept in the xref): a
    # reference in a record it sends (a webhook, a polled record) is such an id.
    names_records: bool = False


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
    # What PostgreSQL encoded of the change (`Capabilities.encoded`): sent as is.
    encoded: str | None = None
    txid: str | None = None  # the source transaction: the peer applies it whole
    # The entity on the wire (the table's own name unless the config maps it); then
    # `key`, `fields` and `old` are the entity's, and `table`/`key_text` stay this side's.
    entity: str = ""

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
    # The endpoint's status code for the attempt (an HTTP status for the HTTP kinds);
    # None: no answer (connection error, timeout), or a kind without status codes.
    status: int | None = None
    error: str | None = None
    detail: str | None = None  # what the endpoint answered, kept (an HTTP body)
    transient: bool = False
    permanent: bool = False
    # The endpoint took the request and answered for its changes.
    answered: bool = False
    # The endpoint failed on the request itself, maybe because of a change in it (the
    # relay splits a batch that keeps doing so, to find the change).
    crashed: bool = False
    retry_after_s: float | None = None
    duration_ms: float = 0.0
    # Per-change status and detail, when each change had its own request (REST).
    answers: dict[int, tuple[int | None, str]] = field(default_factory=dict)


@dataclass(frozen=True)
class Page:
    rows: list[dict[str, Any]]
    more: bool
    next: dict[str, Any] | None = None  # where the next page starts (pass as `after`)


@runtime_checkable
class PagedReader(Protocol):
    """The peer's rows in our key order, a page at a time (`lists_rows`)."""

    def page(self, after: dict[str, Any] | None, limit: int) -> Page: ...

    def close(self) -> None: ...


@runtime_checkable
class KeyedReader(Protocol):
    """The peer's row for one key at a time (a kind that cannot list in our order)."""

    def row(self, key: dict[str, Any]) -> dict[str, Any] | None: ...

    def close(self) -> None: ...


class Endpoint(Protocol):
    """One kind of peer: delivers changes, reads rows back for reconcile."""

    capabilities: ClassVar[Capabilities]

    @staticmethod
    def takes_encoded(spec: TableSpec) -> bool:
        """Whether a whole-row table's changes may come as `capabilities.encoded` says."""
        ...

    async def deliver(
        self, batch_id: str, changes: Sequence[Outgoing], settled_below: int | None = None
    ) -> Delivery:
        """Send `changes` (whole transactions, in order); `settled_below` is the outbox
        watermark for a kind that applies whole transactions."""
        ...

    def read(self, spec: TableSpec) -> PagedReader | KeyedReader:
        """A reader of the peer's copy of `spec`'s table (blocking: for the tools)."""
        ...

    async def aclose(self) -> None: ...
