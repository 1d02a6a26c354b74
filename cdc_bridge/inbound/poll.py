"""`cdc-bridge poll`: read the peer application's records modified since a cursor.

For an application with no webhooks, each configured poll (`inbound.polls`) asks a list
endpoint for the records modified since the cursor minus `overlap_s`, page by page, and
applies each page with the same `Applier` as a bridge batch or a webhook: ownership and
guard, conflicts (a record's modification time is its commit time), idempotency.

What makes it lose nothing:
- The cursor is the newest modification time read, saved only after every page of a read
  was applied. A poller killed mid-read starts again from the old cursor; what it applies
  twice is recognized as a duplicate (the idempotency key is the record's key and its
  modification time).
- A record modified while a read is paging moves in the list, and can shift a record it
  passes onto a page already read. So a read that saw a record modified within
  `overlap_s` of its start (or later) keeps the old cursor: the next read covers the
  same span again. Only a read of a settled span moves the cursor.
- The next read starts `overlap_s` before the cursor: a record committed by the
  application with a modification time a little older than one already read (clock skew,
  a long transaction) is still read.

A record the database refuses is logged with its reason and not retried until it is
modified again (it would otherwise stop the cursor for good); `reconcile` finds it.

A modified-since read cannot see deletions. The full comparison (`poll --full`, or every
`full_interval_s`) reads the whole list, applies every record, and deletes the rows the
list no longer has, under the same rules (a delete from the peer, at the read's start):
- only after a settled read (no record modified within `overlap_s` of its start), as for
  the cursor: a record modified mid-read moves in the list and can push another past it;
- only keys that a second whole read lacks too: a record deleted mid-read shifts the
  records after it back by one, and one of them can slip past the read unseen.
"""

from __future__ import annotations

import logging
import re
import signal
import threading
import time
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from jsonpointer import JsonPointerException, resolve_pointer
from psycopg import sql

from cdc_bridge import sql as queries
from cdc_bridge.config import BridgeConfig, PollSource, TableSpec
from cdc_bridge.entity import EntityMap
from cdc_bridge.errors import CodecError, PollError, RequestFailed
from cdc_bridge.inbound.apply import Applier, json_object
from cdc_bridge.peer import codec
from cdc_bridge.peer.http import BlockingClient, PeerClient
from cdc_bridge.peer.protocol import Batch, Change, Op, ResultStatus

log = logging.getLogger("cdc_bridge.poll")

APPLICATION_NAME = "cdc-bridge poll"
_NEXT_LINK = re.compile(r'<([^>]*)>\s*;[^,]*\brel="?next"?', re.IGNORECASE)


def parse_time(text: str) -> datetime:
    """An application's modification time: ISO 8601, UTC when it names no offset."""
    try:
        parsed = datetime.fromisoformat(text.strip())
    except ValueError:
        raise PollError(f"{text!r} is not an ISO 8601 time") from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def since(cursor: str | None, overlap_s: float) -> str | None:
    """The modified-since value to ask for: the cursor, `overlap_s` earlier."""
    if cursor is None:
        return None
    return (parse_time(cursor) - timedelta(seconds=overlap_s)).isoformat()


def next_link(header: str | None) -> str | None:
    """The `rel="next"` target of an RFC 8288 `Link` header."""
    match = _NEXT_LINK.search(header or "")
    return match.group(1) if match else None


class Poller:
    """Reads every configured poll of one config; `poll_once` is one read of one source."""

    def __init__(self, config: BridgeConfig, environ: Mapping[str, str]) -> None:
        self.config = config
        self.applier = Applier(config)
        # peer.url, peer.tls (a private CA, mTLS), peer.timeout_s and peer.auth
        self.http = BlockingClient(
            PeerClient(config.peer, environ, headers={"accept": "application/json"})
        )

    def close(self) -> None:
        self.http.close()

    def poll_once(self, conn: psycopg.Connection[Any], source: PollSource) -> int:
        """Read everything modified since the cursor, apply it, save the new cursor."""
        spec = self.config.table(source.table)
        cursor = self._cursor(conn, source)
        newest = None if cursor is None else parse_time(cursor)
        # A record modified since this moment may have moved between pages while they
        # were read, shifting an unmodified one onto a page already read: then the read
        # is not trusted to be whole, and the cursor stays where it was.
        unsettled_after = datetime.now(UTC) - timedelta(seconds=source.overlap_s)
        settled = True
        applied = 0
        for page in self._pages(source, since(cursor, source.overlap_s)):
            changes = [self._change(source, spec, record) for record in page]
            if not changes:
                continue
            latest = max(c.committed_at for c in changes)
            settled = settled and latest < unsettled_after
            newest = latest if newest is None else max(newest, latest)
            applied += self._apply(source, conn, changes)
        if settled and newest is not None and newest.isoformat() != cursor:
            conn.execute(
                queries.query("inbound_save_poll_cursor", schema=self.config.bridge_schema),
                {"name": source.name, "cursor": newest.isoformat()},
            )
        return applied

    def compare_once(self, conn: psycopg.Connection[Any], source: PollSource) -> int:
        """Read the whole list, apply it, delete the rows it lacks; returns the deletions."""
        spec = self.config.table(source.table)
        if spec.xref is not None:
            raise PollError(
                f"inbound.polls {source.name}: {spec.label} generates its own keys (xref), "
                "so a whole read cannot tell which of its rows the list lacks; fix: use the "
                "application's tombstone endpoint, or map the entity key to a column"
            )
        emap = EntityMap.of(spec)
        gone = self._unlisted(conn, source, spec)
        if gone:  # confirmed by a second read (see the module's docstring)
            again = {codec.dumps_text(k) for k in self._unlisted(conn, source, spec)}
            gone = [k for k in gone if codec.dumps_text(k) in again]
        started = datetime.now(UTC)
        changes = [
            Change(
                idempotency_key=f"poll:{source.name}:gone:{started.isoformat()}:"
                f"{codec.dumps_text(key)}"[:200],
                entity=spec.entity,
                op=Op.DELETE,
                key=emap.outbound_key(key, {}),
                committed_at=started,
                origin=self.config.peer.name,
            )
            for key in gone
        ]
        return self._apply(source, conn, changes) if changes else 0

    def _unlisted(
        self, conn: psycopg.Connection[Any], source: PollSource, spec: TableSpec
    ) -> list[dict[str, Any]]:
        """One whole read, applied; the keys of local rows it did not list (none when the
        read was not settled)."""
        unsettled_after = datetime.now(UTC) - timedelta(seconds=source.overlap_s)
        listed: list[dict[str, Any]] = []
        settled = True
        for page in self._pages(source, None):
            changes = [self._change(source, spec, record) for record in page]
            if changes:
                settled = settled and max(c.committed_at for c in changes) < unsettled_after
                listed.extend(EntityMap.of(spec).inbound_key(c.key) for c in changes)
                self._apply(source, conn, changes)
        if not settled:
            log.info("poll %s: records changed during the whole read; deleting none", source.name)
            return []
        match = sql.SQL(" AND ").join(
            sql.SQL("t.{c} = k.{c}").format(c=sql.Identifier(c)) for c in spec.key
        )
        query = queries.query(
            "inbound_poll_gone", table=spec.name.identifier, key_json=json_object(spec.key),
            match=match,
        )
        rows = conn.execute(query, {"keys": codec.dumps_text(listed)})
        return [codec.loads(row[0]) for row in rows]  # exact numbers, as listed

    def _cursor(self, conn: psycopg.Connection[Any], source: PollSource) -> str | None:
        row = conn.execute(
            queries.query("inbound_poll_cursor", schema=self.config.bridge_schema),
            {"name": source.name},
        ).fetchone()
        return None if row is None else str(row[0])

    def _pages(self, source: PollSource, modified_since: str | None) -> Iterator[list[Any]]:
        page = source.page
        params: dict[str, Any] = {}
        if modified_since is not None:
            params[source.modified_since] = modified_since
        if page.size_param:
            params[page.size_param] = page.size
        position = page.first if page.kind == "page" else 0
        url: str | None = source.path
        followed: set[str] = set()
        while url is not None:
            if page.kind in ("page", "offset"):
                params[page.position_param] = position
            body, link = self._get(url, params)
            records = self._records(source, body)
            yield records
            if page.kind == "link":
                url, params = next_link(link), {}  # the next link carries its own query
                if url is not None and url in followed:
                    raise PollError(f"GET {url}: the API's next link points back; stopped")
                followed.add(str(url))
            elif page.kind == "cursor":
                token = _pointed(body, str(page.next), "the next cursor")
                url = None if token in (None, "") else url
                params[page.position_param] = token
            elif not records or (page.size_param and len(records) < page.size):
                url = None
            else:
                position += 1 if page.kind == "page" else len(records)

    def _get(self, url: str, params: dict[str, Any]) -> tuple[Any, str | None]:
        try:
            response = self.http.request("GET", url, params=params)
        except RequestFailed as exc:
            raise PollError(f"GET {url} failed: {exc}") from None
        if response.status != 200:
            raise PollError(f"GET {url} answered HTTP {response.status}: {response.text[:200]}")
        try:
            return codec.loads(response.content), response.headers.get("link")
        except CodecError as exc:
            raise PollError(f"GET {url} answered with invalid JSON: {exc}") from None

    def _records(self, source: PollSource, body: Any) -> list[Any]:
        records = _pointed(body, source.records, "the records") if source.records else body
        if not isinstance(records, list):
            raise PollError(
                f"inbound.polls {source.name}: `records` ({source.records or '/'}) is not a "
                "list in the answer; fix: point it at the array of records"
            )
        return records

    def _change(self, source: PollSource, spec: TableSpec, record: Any) -> Change:
        modified = _pointed(record, source.modified_field, "the modification time")
        fields = {c: resolve_pointer(record, p, None) for c, p in source.fields.items()}
        key = {k: fields[k] for k in spec.entity_key}
        stamp = parse_time(str(modified))
        return Change(
            idempotency_key=f"poll:{source.name}:{codec.dumps_text(key)}:{modified}"[:200],
            entity=spec.entity,
            op=Op.UPDATE,
            key=key,
            fields=fields,
            committed_at=stamp,
            origin=self.config.peer.name,
        )

    def _apply(
        self, source: PollSource, conn: psycopg.Connection[Any], changes: list[Change]
    ) -> int:
        peer = self.config.peer.name
        batch = Batch(source=peer, batch_id=f"poll:{source.name}", changes=changes)
        response = self.applier.apply(conn, batch)
        applied = 0
        for change, result in zip(changes, response.results, strict=True):
            if result.status in (ResultStatus.REJECTED, ResultStatus.SKIPPED):
                log.warning(
                    "poll %s: %s %s not applied: %s",
                    source.name, change.entity, codec.dumps_text(change.key), result.reason,
                )
            elif result.status is not ResultStatus.DUPLICATE:
                applied += 1
        return applied


def _pointed(document: Any, pointer: str, what: str) -> Any:
    try:
        return resolve_pointer(document, pointer)
    except JsonPointerException as exc:
        raise PollError(f"{what} ({pointer}) is not in the answer: {exc}") from None


def run(
    config: BridgeConfig,
    environ: Mapping[str, str],
    names: tuple[str, ...],
    once: bool,
    full: bool = False,
) -> None:
    """Poll each source every `interval_s` until SIGINT/SIGTERM (or one round: `once`);
    a full comparison first with `full`, and every `full_interval_s` where it is set."""
    sources = [s for s in config.inbound.polls if not names or s.name in names]
    stop = threading.Event()
    if not once:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
    poller = Poller(config, environ)
    due = {s.name: 0.0 for s in sources}
    full_due = {s.name: 0.0 if full else _next_full(s) for s in sources}
    try:
        with psycopg.connect(
            config.database.url.get_secret_value(),
            autocommit=True,
            application_name=APPLICATION_NAME,
        ) as conn:
            while not stop.is_set():
                for source in sources:
                    if time.monotonic() >= full_due[source.name]:
                        _round(poller, conn, source, raise_errors=once, full=True)
                        full_due[source.name] = _next_full(source)
                    if time.monotonic() >= due[source.name]:
                        _round(poller, conn, source, raise_errors=once)
                        due[source.name] = time.monotonic() + source.interval_s
                if once:
                    return
                wake = min(*due.values(), *full_due.values())
                stop.wait(max(0.0, wake - time.monotonic()))
    finally:
        poller.close()


def _round(
    poller: Poller,
    conn: psycopg.Connection[Any],
    source: PollSource,
    raise_errors: bool,
    full: bool = False,
) -> None:
    """One read of `source` (a whole one with `full`), logged; a failure ends the round."""
    try:
        count = poller.compare_once(conn, source) if full else poller.poll_once(conn, source)
    except PollError as exc:
        if raise_errors:
            raise
        kind = " (full comparison)" if full else ""
        log.warning("poll %s%s failed, next try in %.0f s: %s",
                    source.name, kind, source.interval_s, exc)
        return
    done = "row(s) the list no longer has deleted" if full else "record(s) applied"
    log.info("poll %s: %d %s", source.name, count, done)


def _next_full(source: PollSource) -> float:
    """When the source's next full comparison is due (never without full_interval_s)."""
    if source.full_interval_s is None:
        return float("inf")
    return time.monotonic() + source.full_interval_s
