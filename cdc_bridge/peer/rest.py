"""The REST kind of peer (`adapter: rest`): an application's own REST API.

One request per change, built from each table's `rest` mapping; changes of one record go
one after the other, records side by side, as fast as `peer.rate_limit` allows.
Transient: connection errors, timeouts, 408, 429 (which pauses every request for its
`Retry-After`) and 5xx. Permanent: any other 4xx (the change is rejected, its key parked).

- Bodies: `rest.body` maps JSON pointers of the request body to fields of the change,
  constants, or casts (`{field: price, cast: string, scale: 2}` sends "12.50"), building
  nested objects as needed. Without `rest.body`, the body is the change's fields, renamed.
- The cross-reference (`xref`): for an API that gives each record its own id on create,
  the bridge keeps (table, our key) -> the API's id in the bridge schema, and fills `{peer_id}`
  in the update, delete and read paths with it. It is written as soon as the API answered
  a create, before the change is acknowledged, so a relay that dies in between sends an
  update next time, not a second create.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation, localcontext
from typing import Any, ClassVar
from urllib.parse import quote

import psycopg
from aiolimiter import AsyncLimiter
from jsonpointer import JsonPointer, JsonPointerException, resolve_pointer

from cdc_bridge import sql as queries
from cdc_bridge.config import (
    BodyValue,
    BridgeConfig,
    RateLimit,
    RestOperation,
    RestPeer,
    RestTableMapping,
    TableSpec,
)
from cdc_bridge.errors import (
    BodyError,
    CodecError,
    PeerReadError,
    RequestFailed,
    TokenError,
    UserError,
)
from cdc_bridge.outbox import Encoded
from cdc_bridge.peer import codec
from cdc_bridge.peer.endpoint import APPLIED, Answer, Capabilities, Delivery, Outgoing
from cdc_bridge.peer.http import (
    BlockingClient,
    PeerClient,
    Response,
    answer_reason,
    is_transient_status,
    kept,
    note_status,
    read_failure,
    retry_after_seconds,
    transport_failure,
)
from cdc_bridge.peer.protocol import ResultStatus

# How long every request waits after a 429 that gave no Retry-After.
RATE_LIMITED_PAUSE_S = 1.0
_API_HINT = "fix: check that the API is reachable at peer.url"


def body_of(mapping: RestTableMapping, fields: Mapping[str, Any]) -> dict[str, Any]:
    """The request body for a change whose new values are `fields`."""
    if mapping.body is None:
        return {mapping.rename.get(k, k): v for k, v in fields.items()}
    body: dict[str, Any] = {}
    for pointer, value in mapping.body.items():
        if value.field is not None and value.field not in fields:
            continue  # a partial update: fields not in the change are left as they are
        _put(body, pointer, _value(value, fields))
    return body


def _value(spec: BodyValue, fields: Mapping[str, Any]) -> Any:
    if spec.field is None:
        return spec.const
    value = fields[spec.field]
    if value is None or spec.cast is None:
        return value
    try:
        if spec.cast == "integer":
            return int(Decimal(str(value)))
        if spec.cast == "number":
            return Decimal(str(value))
        if spec.scale is not None:
            number = Decimal(str(value))
            # Enough precision for every digit: money of 30 digits is not rounded away.
            with localcontext(prec=max(28, len(number.as_tuple().digits) + spec.scale + 2)):
                step = Decimal(1).scaleb(-spec.scale)
                return str(number.quantize(step, rounding=ROUND_HALF_EVEN))
        return str(value)
    except (InvalidOperation, ValueError):
        raise BodyError(f"{spec.field} = {value!r} cannot be cast to {spec.cast}") from None


def _put(document: dict[str, Any], pointer: str, value: Any) -> None:
    parts = JsonPointer(pointer).parts
    target = document
    for part in parts[:-1]:
        child = target.setdefault(part, {})
        if not isinstance(child, dict):
            raise BodyError(f"{pointer}: {part!r} is both a value and an object in rest.body")
        target = child
    target[parts[-1]] = value


def pointed_id(answer: Any, pointer: str) -> str | None:
    """The API's id at `pointer` in an answer, as text (None when it is not there)."""
    try:
        found = resolve_pointer(answer, pointer)
    except JsonPointerException:
        return None
    return None if found is None or isinstance(found, dict | list) else str(found)


class Xref:
    """(table, our key) -> the API's id, in the bridge schema (one connection, lazily)."""

    def __init__(self, dsn: str, schema: str) -> None:
        self._dsn, self._schema = dsn, schema
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._opening = asyncio.Lock()  # records are sent side by side: connect once

    async def _connection(self) -> psycopg.AsyncConnection[Any]:
        async with self._opening:
            if self._conn is None or self._conn.closed:
                self._conn = await psycopg.AsyncConnection.connect(
                    self._dsn, autocommit=True, application_name="cdc-bridge relay (xref)"
                )
            return self._conn

    async def get(self, table: str, key_text: str) -> str | None:
        conn = await self._connection()
        cursor = await conn.execute(
            queries.query("peer_xref_get", schema=self._schema), {"table": table, "key": key_text}
        )
        row = await cursor.fetchone()
        return None if row is None else str(row[0])

    async def save(self, table: str, key_text: str, peer_id: str) -> None:
        conn = await self._connection()
        await conn.execute(
            queries.query("peer_xref_save", schema=self._schema),
            {"table": table, "key": key_text, "peer_id": peer_id},
        )

    async def forget(self, table: str, key_text: str) -> None:
        conn = await self._connection()
        await conn.execute(
            queries.query("peer_xref_forget", schema=self._schema),
            {"table": table, "key": key_text},
        )

    async def aclose(self) -> None:
        if self._conn is not None:
            await self._conn.close()


class Pace:
    """How fast this side may call the peer's API: at most `concurrency` requests
    at once, at most `requests_per_s`, and none while a 429's `Retry-After` lasts (a rate
    limit is the API's, for all our requests, not for the one record that hit it).

    A sender holds a `slot()` for as long as it sends, one request after the other, and
    waits its `turn()` before each request. A slot per sender, not per request: the
    semaphore's acquire and release cost a few percent of the relay's CPU per request."""

    def __init__(self, limit: RateLimit) -> None:
        self._slots = asyncio.Semaphore(limit.concurrency)
        self._rate = AsyncLimiter(limit.requests_per_s, 1) if limit.requests_per_s else None
        self._resume_at = 0.0

    def slot(self) -> asyncio.Semaphore:
        """`async with pace.slot():` one sender of requests, one at a time."""
        return self._slots

    def free(self) -> bool:
        """No wait before the next request (checked first: it needs no await)."""
        return self._rate is None and self._resume_at <= time.monotonic()

    async def turn(self) -> None:
        """Wait until the next request may go."""
        while (wait := self._resume_at - time.monotonic()) > 0:
            await asyncio.sleep(wait)
        if self._rate is not None:
            await self._rate.acquire()

    def pause(self, seconds: float) -> None:
        self._resume_at = max(self._resume_at, time.monotonic() + seconds)


_OPERATIONS = {"I": "insert", "U": "update", "D": "delete"}  # outbox op -> rest mapping key

# A change's request (method, target, body); an Answer when it is refused before any
# request; None for a table whose records the API names (`rest.id`).
Planned = tuple[str, str, bytes | None] | Answer | None


class RestEndpoint:
    """One request per change from the table's `rest` mapping; same key sequential."""

    capabilities: ClassVar[Capabilities] = Capabilities(
        whole_transactions=False,
        encoded=Encoded.FIELDS,
        lists_rows=False,
        exact_values=False,
        names_records=True,
    )

    @staticmethod
    def takes_encoded(spec: TableSpec) -> bool:
        """A table whose request body is its row as it is (no `rest.body`, no renames):
        the body is the fields as PostgreSQL prints them, with every number exact."""
        return spec.rest is not None and spec.rest.body is None and not spec.rest.rename

    def __init__(self, config: BridgeConfig, environ: Mapping[str, str] | None = None) -> None:
        peer = config.peer
        if not isinstance(peer, RestPeer):
            raise TypeError(f"a RestEndpoint for a peer of kind {peer.adapter!r}")
        self._peer, self._environ = peer, environ
        self._mappings = {s.label: s for s in config.table_specs if s.rest is not None}
        self._http = PeerClient(peer, environ, headers={"content-type": "application/json"})
        self._pace = Pace(peer.rate_limit)
        self._xref = Xref(config.database.url.get_secret_value(), config.bridge_schema)

    async def aclose(self) -> None:
        await self._http.aclose()
        await self._xref.aclose()

    def read(self, spec: TableSpec) -> RestReader:
        return RestReader(self._peer, spec, self._environ)

    async def deliver(
        self, batch_id: str, changes: Sequence[Outgoing], settled_below: int | None = None
    ) -> Delivery:
        """One request per change; `settled_below` concerns the batch protocol only."""
        by_record: dict[tuple[str, str], list[Outgoing]] = {}
        for change in changes:
            by_record.setdefault((change.table, change.key_text), []).append(change)
        started = time.perf_counter()
        outcome = Delivery()
        # As many workers as requests may be in flight, each taking the next record: a
        # task per record made a 10,000-change batch 10,000 tasks queued on one semaphore.
        records = iter(by_record.values())

        async def worker() -> None:
            async with self._pace.slot():
                for group in records:
                    await self._deliver_record(group, outcome)

        workers = min(self._peer.rate_limit.concurrency, len(by_record))
        await asyncio.gather(*(worker() for _ in range(workers)))
        outcome.duration_ms = (time.perf_counter() - started) * 1000
        return outcome

    async def _deliver_record(self, group: list[Outgoing], outcome: Delivery) -> None:
        """One record's changes one after the other, in order (records go side by side).

        The usual request is awaited here, not in a coroutine of its own: each coroutine
        between the worker and the HTTP client is resumed at every step of every request
        (two fewer cost 2-3 us of CPU per change)."""
        for index, change in enumerate(group):
            planned = self._planned(change)
            if type(planned) is tuple and self._pace.free():
                try:
                    response = await self._http.request(planned[0], planned[1], body=planned[2])
                except (RequestFailed, TokenError) as exc:
                    outcome.transient, outcome.error = True, str(exc)
                    return  # transient: the rest of this key waits for the retry
                result = self._result(change, response, outcome)
            else:
                result = await self._send(change, planned, outcome)
            if result is None:  # transient: the rest of this key waits for the retry
                return
            outcome.results[change.id] = result
            if result.status is ResultStatus.REJECTED:
                for later in group[index + 1 :]:
                    outcome.results[later.id] = Answer(ResultStatus.SKIPPED)
                return

    async def _send(self, change: Outgoing, planned: Planned, outcome: Delivery) -> Answer | None:
        """A change that is not the usual request: refused before any request, for a
        table whose records the API names (`rest.id`), or one that waits its turn."""
        if isinstance(planned, Answer):
            return planned
        if planned is None:
            mapping = self._mappings[change.table].rest
            assert mapping is not None
            try:
                return await self._send_tracked(change, mapping, outcome)
            except KeyError as exc:
                return _url_names(change, exc)
            except BodyError as exc:
                return _rejected(change, str(exc))
        await self._pace.turn()
        try:
            response = await self._http.request(planned[0], planned[1], body=planned[2])
        except (RequestFailed, TokenError) as exc:
            outcome.transient, outcome.error = True, str(exc)
            return None
        return self._result(change, response, outcome)

    def _planned(self, change: Outgoing) -> Planned:
        """The request for a change (method, target, body); an Answer when it is refused
        before any request; None for a table whose records the API names (`rest.id`)."""
        operation = self._operation(change)
        if isinstance(operation, str):
            return _rejected(change, operation)
        mapping = self._mappings[change.table].rest
        assert mapping is not None
        if mapping.id is not None:
            return None
        try:
            target = fill_path(operation.path, change.key_values())
            body = self._body(change) if change.op != "D" else None
        except KeyError as exc:
            return _url_names(change, exc)
        except BodyError as exc:
            return _rejected(change, str(exc))
        return operation.method, target, body

    async def _request(
        self,
        operation: RestOperation,
        change: Outgoing,
        outcome: Delivery,
        peer_id: str | None = None,
        with_body: bool = True,
    ) -> Response | None:
        """One request for a change; None when it failed transiently (noted in `outcome`)."""
        values = dict(change.key_values())
        if peer_id is not None:
            values["peer_id"] = peer_id
        body = self._body(change) if with_body and change.op != "D" else None
        target = fill_path(operation.path, values)
        if not self._pace.free():
            await self._pace.turn()
        try:
            return await self._http.request(operation.method, target, body=body)
        except (RequestFailed, TokenError) as exc:
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
            if response is None or response.status != 404:
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
        if 200 <= response.status < 300:
            missing = f"the create's answer has no id at {mapping.id}"
            learned = await self._learn(change, response, mapping.id, missing)
            return APPLIED if isinstance(learned, str) else learned
        if response.status in mapping.exists and mapping.search is not None:
            return await self._adopt(change, mapping, outcome)
        return self._result(change, response, outcome)

    async def _adopt(
        self, change: Outgoing, mapping: RestTableMapping, outcome: Delivery
    ) -> Answer | None:
        """The API has the record already: find its id by our key, keep it, update it."""
        assert mapping.search is not None and mapping.found is not None
        response = await self._request(mapping.search, change, outcome, with_body=False)
        if response is None or response.status != 200:
            return None if response is None else self._result(change, response, outcome)
        missing = f"the API says the record exists, but its search finds none at {mapping.found}"
        learned = await self._learn(change, response, mapping.found, missing)
        if not isinstance(learned, str):
            return learned
        if mapping.update is None:
            return APPLIED
        updated = await self._request(mapping.update, change, outcome, learned)
        return None if updated is None else self._result(change, updated, outcome)

    async def _learn(
        self, change: Outgoing, response: Response, pointer: str, missing: str
    ) -> str | Answer:
        """Keep the API's id for the record, found at `pointer` in its answer, and return
        it; the change is rejected when the answer has none."""
        peer_id = pointed_id(_json_or_none(response), pointer)
        if peer_id is None:
            return _rejected(change, f"{missing}: {kept(response.content)[:200]}")
        await self._xref.save(change.table, change.key_text, peer_id)
        return peer_id

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
        if response.status == 404 or 200 <= response.status < 300:
            await self._xref.forget(change.table, change.key_text)
            return APPLIED
        return self._result(change, response, outcome)

    def _operation(self, change: Outgoing) -> RestOperation | str:
        spec = self._mappings.get(change.table)
        if spec is None or spec.rest is None:
            return f"no REST mapping for table {change.table}"
        name = _OPERATIONS[change.op]
        operation: RestOperation | None = getattr(spec.rest, name)
        return operation or f"no REST operation for {name} on {change.table}"

    def _body(self, change: Outgoing) -> bytes:
        if change.encoded is not None:  # the row's fields, as PostgreSQL printed them
            return change.encoded.encode()
        mapping = self._mappings[change.table].rest
        assert mapping is not None
        return codec.dumps(body_of(mapping, change.fields or {}))  # numbers as written

    def _result(
        self, change: Outgoing, response: Response, outcome: Delivery
    ) -> Answer | None:
        status = response.status
        note_status(outcome, status)
        if 200 <= status < 300:
            return APPLIED
        outcome.detail = kept(response.content)
        outcome.answers[change.id] = (status, outcome.detail)
        if is_transient_status(status):
            outcome.transient, outcome.error = True, f"HTTP {status}"
            outcome.retry_after_s = retry_after_seconds(response.headers.get("retry-after"))
            if status == 429:
                self._pace.pause(outcome.retry_after_s or RATE_LIMITED_PAUSE_S)
            return None
        return _rejected(change, f"HTTP {status}: {answer_reason(response.content, 200)}")


def _json_or_none(response: Response) -> Any:
    try:
        return codec.loads(response.content)  # a created id past 64 bits stays exact
    except CodecError:
        return None


def _rejected(change: Outgoing, reason: str) -> Answer:
    return Answer(ResultStatus.REJECTED, reason)


def _url_names(change: Outgoing, exc: KeyError) -> Answer:
    return _rejected(change, f"the URL template names {exc}, which is not a key column")


def fill_path(template: str, key: Mapping[str, Any]) -> str:
    """`/api/products/{sku}` with each key value URL-quoted (a '/' in a value stays inside)."""
    return template.format_map({name: quote(str(value), safe="") for name, value in key.items()})


class RestReader:
    """One GET per key through `rest.read`; 404 means the peer does not have the row."""

    def __init__(
        self, peer: RestPeer, spec: TableSpec, environ: Mapping[str, str] | None = None
    ) -> None:
        read = spec.rest.read if spec.rest else None
        if read is None or read.method != "GET":
            raise UserError(
                f"{spec.label} has no `rest.read` GET template; fix: add e.g. "
                f'rest: {{read: "GET /api/items/{{{spec.key[0]}}}"}} to the table'
            )
        self._path, self._label, self._url = read.path, spec.label, peer.url
        # The peer's names for our fields, turned back into ours for the comparison.
        renames = spec.rest.rename if spec.rest else {}
        self._ours = {theirs: ours for ours, theirs in renames.items()}
        self._http = BlockingClient(
            PeerClient(peer, environ, headers={"accept": "application/json"})
        )

    def row(self, key: dict[str, Any]) -> dict[str, Any] | None:
        try:
            response = self._http.request("GET", fill_path(self._path, key))
        except RequestFailed as exc:
            raise transport_failure(self._label, self._url, exc, _API_HINT) from exc
        if response.status == 404:
            return None
        if response.status != 200:
            raise read_failure(self._label, self._url, response)
        data = codec.loads(response.content)
        if not isinstance(data, dict):
            raise PeerReadError(
                f"the peer answered GET {fill_path(self._path, key)} with JSON that is not an "
                "object; fix: point rest.read at the endpoint returning one record"
            )
        return {self._ours.get(str(name), str(name)): value for name, value in data.items()}

    def close(self) -> None:
        self._http.close()
