"""`cdc-bridge run`: wake, read whole transactions, filter, batch per lane, deliver, record.

Leadership: one relay per (database, peer) ships. It holds a session advisory lock on a
dedicated connection, which also LISTENs for the capture triggers' NOTIFY. A second
relay waits as a hot standby, trying the lock, and takes over when the first dies.
If the lock connection drops, shipping stops until the lock is held again. Only the
leader serves `relay.metrics_listen`, so a standby on the same host with the same config
binds the port when it takes over (a port held by anything else stops it: exit 2).
A new leader closes the batches an earlier one left unfinished as `abandoned`.

Order (docs/delivery.md): the outbox head is read as whole source transactions, ordered
by their last id (relay/transactions.py). A batch carries whole transactions, and the
peer applies each in one database transaction. Up to `relay.concurrency` batches are in
flight at once over disjoint tokens (records, or groups of tables linked by foreign
keys): a transaction whose token has a batch in flight waits until the peer has applied
that one whole (its outcome is then recorded while the next goes; its rows stay out of
reads until recorded), or, if any of it was refused or is retried, until it is recorded.
Every read starts from the outbox head again (minus the rows in flight), as soon as a
batch finishes: reading and sending overlap.

Batching is Nagle-like: with nothing in flight a NOTIFY is shipped at once; while batches
are in flight, new changes gather until one finishes and go out together, and a free lane
waits at most `relay.max_wait_ms` for that. NOTIFYs are taken by a listener task that owns
the lock connection, so they are seen while batches are in flight too. One batch more
than `relay.concurrency` is read ahead and waits for a lane, so a lane that frees sends
at once.

A batch the peer keeps answering with HTTP 500 is split after SPLIT_AFTER attempts: the
first half is retried, the rest goes back to the outbox for the next read, until the
transaction at fault is alone; after SPLIT_AFTER more attempts it is failed (its keys
park) and everything else flows.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import math
import time
import uuid
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from cdc_bridge import outbox, retention
from cdc_bridge.config import BridgeConfig, TableMode
from cdc_bridge.db import mask_dsn
from cdc_bridge.entity.outbound import Lookups, Outbound
from cdc_bridge.errors import IncompleteInstall, PortInUse, Unmapped, Unresolved
from cdc_bridge.outbox import Encoded, Failure, OutboxRow
from cdc_bridge.peer import codec, kinds
from cdc_bridge.peer.endpoint import Delivery, Endpoint, Outgoing
from cdc_bridge.peer.protocol import ResultStatus
from cdc_bridge.relay.health import Observed, OutboxProbe, report
from cdc_bridge.relay.metrics import RelayMetrics, serve_metrics
from cdc_bridge.relay.retry import Outage, backoff_delay
from cdc_bridge.relay.sor import Drop, Ship, decide
from cdc_bridge.relay.transactions import Token, Txn, families, group, plan_lanes
from cdc_bridge.relay.wakeup import Wakeup
from cdc_bridge.sql import query

log = logging.getLogger(__name__)

APPLICATION_NAME = "cdc-bridge relay"
STANDBY_RETRY_S = 0.5  # how often a standby tries the lock
# Batches read (and encoded) ahead of a free lane: the next batch is ready when a lane
# frees, instead of the lane waiting for a read. At most `concurrency` are sent at once.
READ_AHEAD = 1
LOCK_CHECK_S = 1.0  # how often a busy leader checks that its lock connection still lives
WATERMARK_EVERY_S = 1.0  # how often the watermark sent with batches is computed again
# Attempts answered with HTTP 500 before a batch is split (and, once a transaction is
# alone, before it is failed): a change the peer cannot take must not stall the others.
SPLIT_AFTER = 3
# Outbox rotation (outbox.rotate): at most this many rows still pending in the slot being
# emptied are moved (a larger backlog is shipped first), and the wait for a writer still
# in that slot is this short (the relay's loop waits with it; writers never do).
ROTATE_MOST_MOVED = 10_000
ROTATE_LOCK_MS = 50
ROTATION_LATE_S = 60.0  # a rotation not done for this long is logged as a warning


def lock_name(config: BridgeConfig) -> str:
    """The advisory lock key's source: one relay per (bridge schema, peer) in a database."""
    return f"cdc-bridge relay:{config.bridge_schema}:{config.peer.name}"


@dataclass
class _Verdict:
    acked: dict[int, str]
    failures: list[Failure]
    handoffs: list[tuple[str, str]]  # (table, key text)
    retry: list[Outgoing]


class InFlight:
    """Batches being delivered, with their outbox ids and tokens (kept out of new batches)."""

    def __init__(self) -> None:
        self.tasks: set[asyncio.Task[None]] = set()
        self.ids: set[int] = set()
        self.tokens: set[Token] = set()
        # Each batch's ids as bigint[] literal elements, built once per batch: every read
        # sends all in-flight ids (~2000), and rebuilding that text cost ~3 % of the CPU.
        self._id_texts: dict[int, str] = {}
        self.finished = asyncio.Event()  # set when a batch ends (cleared before each read)
        self.error: BaseException | None = None

    def free(self, concurrency: int) -> int:
        return concurrency - len(self.tasks)

    def start(self, batch: Shipment, work: Coroutine[Any, Any, None]) -> None:
        self.hold(batch)
        task = asyncio.create_task(work)
        self.tasks.add(task)

        def done(_task: asyncio.Task[None]) -> None:
            self.tasks.discard(task)
            self.release(batch)
            if not task.cancelled() and task.exception() is not None and self.error is None:
                self.error = task.exception()
            self.finished.set()

        task.add_done_callback(done)

    def hold(self, batch: Shipment) -> None:
        ids = batch.ids
        self.ids |= ids
        self.tokens |= batch.tokens
        batch.settled = False
        self._id_texts[id(batch)] = ",".join(map(str, ids))

    def settle(self, batch: Shipment) -> None:
        """The peer applied every change of `batch`: transactions that wait for its tokens
        may go now, while its outcome is recorded. Its rows stay out of reads until then.
        (Only then: a refused change must park its key before a later change is read.)"""
        if not batch.settled:
            batch.settled = True
            self.tokens -= batch.tokens
            self.finished.set()

    def release(self, batch: Shipment) -> None:
        """`batch` is done, or shrank: what it no longer holds can be read again."""
        self._id_texts.pop(id(batch), None)
        self.ids -= batch.ids
        if not batch.settled:  # else its tokens went at settle (maybe to a later batch)
            self.tokens -= batch.tokens

    def ids_array(self) -> str:
        """The in-flight ids as a bigint[] literal."""
        return "{" + ",".join(t for t in self._id_texts.values() if t) + "}"

    async def raise_error(self) -> None:
        """A database error of any batch stops them all."""
        if self.error is not None:
            await self.cancel()
            raise self.error

    async def cancel(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    async def finish(self) -> None:
        """On stop, let in-flight batches end (they stop retrying once stopping is set)."""
        results = await asyncio.gather(*self.tasks, return_exceptions=True)
        for result in results:
            if isinstance(result, psycopg.OperationalError):
                raise result


@dataclass(slots=True)
class Part:
    """One source transaction's changes to send (or one part of a large one)."""

    changes: list[Outgoing]
    tokens: frozenset[Token]


@dataclass(eq=False)
class Shipment:
    """Whole transactions (their changes in order) that go to the peer as one batch."""

    parts: list[Part]
    settled: bool = False  # applied whole by the peer: its tokens are free (InFlight.settle)

    @property
    def changes(self) -> list[Outgoing]:
        return [c for part in self.parts for c in part.changes]

    @property
    def ids(self) -> set[int]:
        return {c.id for part in self.parts for c in part.changes}

    @property
    def tokens(self) -> set[Token]:
        return set().union(*(part.tokens for part in self.parts))


class Relay:
    def __init__(self, config: BridgeConfig, client: Endpoint | None = None) -> None:
        self.config = config
        self.relay = config.relay
        self.schema = config.bridge_schema
        self.specs = {spec.label: spec for spec in config.table_specs}
        self.metrics = RelayMetrics()
        self.stopping = asyncio.Event()
        self._client = client
        self._dsn = config.database.url.get_secret_value()
        self._db_outage = Outage(log, "database")
        self._peer_outage = Outage(log, "peer")
        self._record_lock = asyncio.Lock()
        self._notified = asyncio.Event()
        self.role = "starting"
        # The watermark sent with each batch (relay_settled_below), and when it was read.
        self._settled_below: int | None = None
        self._settled_read_at = 0.0
        self._rotate_at = 0.0  # monotonic time of the next outbox rotation
        self._rotation_waits = time.monotonic()  # since when no rotation was done
        self._slots = self.relay.concurrency + READ_AHEAD
        self._families: dict[str, str] = {}  # table label -> its group of linked tables
        self._left_to_grow: set[str] = set()  # tables said to grow (retention)
        self._answered_at = 0.0  # when the last batch the peer answered with 200 left
        self._suspects: dict[str, float] = {}  # txid -> when a batch of it first got 500
        self._sending = asyncio.Semaphore(self.relay.concurrency)
        self._probe = OutboxProbe(self._connect, self.schema)
        self._outage_server: asyncio.Server | None = None  # /healthz while the database is down
        self.outbound = Outbound(config)
        # Tables whose rows are translated to entities here (unless PostgreSQL encoded them).
        self._mapped = frozenset(
            s.label for s in config.table_specs if self.outbound.mapped(s.label)
        )
        capabilities = client.capabilities if client else kinds.capabilities(config.peer)
        self._encoded = capabilities.encoded
        self._encoded_tables = kinds.encoded_tables(config)
        # Mapped tables PostgreSQL can translate too (renames and text code maps).
        self._encoded_entities = codec.dumps_text(
            self.outbound.encoded_entities() if self._encoded is Encoded.CHANGE else {}
        )
        # The watermark is for a peer that keeps its idempotency keys by transaction.
        self._sends_watermark = capabilities.whole_transactions

    def stop(self) -> None:
        if not self.stopping.is_set():
            log.info("stopping: taking no new work, finishing what is in flight")
        self.stopping.set()

    async def health(self) -> dict[str, object]:
        """The /healthz body; reads the outbox's oldest pending age into its gauge too."""
        oldest = await self._probe.oldest_pending_s()
        # Unknown (the database does not answer) is NaN, never a reassuring 0.
        self.metrics.oldest_pending.set(math.nan if self._probe.error else oldest or 0.0)
        database_error = self._probe.error or (
            "the relay's connection is down" if self._db_outage.ongoing else None
        )
        observed = Observed(
            self.role, database_error, self._peer_outage.lasted_s, oldest
        )
        return report(observed, self.relay)

    # ------------------------------------------------------------ lifecycle

    async def run(self) -> None:
        """Ship until stop(); then finish or release in-flight work within the timeout."""
        client = self._client or kinds.endpoint(self.config)
        work = asyncio.create_task(self._lead_forever(client))
        stop = asyncio.create_task(self.stopping.wait())
        try:
            await asyncio.wait({work, stop}, return_when=asyncio.FIRST_COMPLETED)
            if not work.done():
                try:
                    await asyncio.wait_for(work, self.relay.shutdown_timeout_s)
                except TimeoutError:
                    log.warning("in-flight work did not finish in time; released to the outbox")
            if work.done() and not work.cancelled():
                work.result()  # surface a crash of the shipping loop
        finally:
            stop.cancel()
            if self._client is None:
                await client.aclose()
            await self._probe.aclose()
            self.metrics.leader.set(0)
            log.info("relay stopped")

    async def _lead_forever(self, client: Endpoint) -> None:
        attempt = 0
        try:
            while not self.stopping.is_set():
                try:
                    await self._lead(client)
                    attempt = 0
                except psycopg.OperationalError as exc:
                    self._db_outage.failed(_first_line(exc))
                    self.metrics.leader.set(0)
                    self.role = "reconnecting"
                    await self._serve_outage()
                    await self._sleep(backoff_delay(attempt, 0.2, self.relay.retry_max_s))
                    attempt += 1
        finally:
            await self._end_outage_serving()

    async def _serve_outage(self) -> None:
        """While the database does not answer, nobody can tell who leads: serve /healthz
        (503, database unreachable) if the port is free, so the outage is seen. A relay
        on this host that already serves it is left to answer."""
        listen = self.relay.metrics_listen
        if listen and self._outage_server is None:
            with contextlib.suppress(OSError):
                self._outage_server = await serve_metrics(listen, self.metrics, self.health)

    async def _end_outage_serving(self) -> None:
        server, self._outage_server = self._outage_server, None
        if server is not None:
            server.close()
            await server.wait_closed()

    async def _connect(self) -> psycopg.AsyncConnection[Any]:
        return await psycopg.AsyncConnection.connect(
            self._dsn, autocommit=True, application_name=APPLICATION_NAME, connect_timeout=10
        )

    async def _lead(self, client: Endpoint) -> None:
        async with await self._connect() as lock_conn:
            self._db_outage.recovered()
            await self._end_outage_serving()  # the leader serves it from now on
            if not await self._acquire(lock_conn):
                return
            async with self._metrics_served():
                await self._ship_as_leader(lock_conn, client)

    @contextlib.asynccontextmanager
    async def _metrics_served(self) -> AsyncIterator[None]:
        """Serve /metrics and /healthz while leading (a standby leaves the port free)."""
        listen = self.relay.metrics_listen
        if not listen:
            yield
            return
        try:
            server = await serve_metrics(listen, self.metrics, self.health)
        except OSError as exc:
            raise PortInUse("relay.metrics_listen", listen, exc.strerror or str(exc)) from None
        try:
            yield
        finally:
            server.close()
            await server.wait_closed()

    async def _ship_as_leader(
        self, lock_conn: psycopg.AsyncConnection[Any], client: Endpoint
    ) -> None:
        await lock_conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.schema)))
        # Reads and acknowledgements use a connection each, so they overlap.
        async with await self._connect() as conn, await self._connect() as record_conn:
            codec.use_exact_json(conn)
            await conn.execute(query("relay_read_settings"))
            await record_conn.execute(query("relay_record_settings"))
            await self._take_over(conn)
            self.role = "leader"
            self.metrics.leader.set(1)
            log.info("leader: shipping to %s", self.config.peer.name)
            keepers = [asyncio.create_task(self._retain_forever())]
            try:
                await self._ship(lock_conn, conn, record_conn, client)
            finally:
                for task in keepers:
                    task.cancel()
                await asyncio.gather(*keepers, return_exceptions=True)

    async def _take_over(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """Close what an earlier leader left unfinished; learn the foreign keys."""
        try:
            cur = await conn.execute(query("relay_abandon_batches", schema=self.schema))
        except psycopg.errors.CheckViolation:
            log.warning(
                "unfinished batches cannot be closed as abandoned: the bridge schema "
                "predates it; reinstall (see `triggers status`)"
            )
        else:
            if cur.rowcount:
                log.info(
                    "closed %d batches an earlier relay left unfinished as abandoned; "
                    "their changes go out again",
                    cur.rowcount,
                )
        shipped = [s for s in self.config.table_specs if s.captures]
        cur = await conn.execute(
            query("relay_foreign_keys"),
            {
                "labels": outbox.text_array(s.label for s in shipped),
                "relations": outbox.text_array(s.name.quoted for s in shipped),
            },
        )
        self._families = families([(child, parent) for child, parent in await cur.fetchall()])

    async def _acquire(self, lock_conn: psycopg.AsyncConnection[Any]) -> bool:
        announced = False
        while not self.stopping.is_set():
            cur = await lock_conn.execute(
                query("relay_try_lock"), {"lock_name": lock_name(self.config)}
            )
            row = await cur.fetchone()
            if row is not None and row[0]:
                return True
            if not announced:
                self.role = "standby"
                log.info("standby: another relay holds the lock; waiting to take over")
                announced = True
            await self._sleep(STANDBY_RETRY_S)
        return False

    async def _sleep(self, seconds: float) -> None:
        """Sleep, but wake at once when asked to stop."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), seconds)

    # ------------------------------------------------------------ shipping

    async def _ship(
        self,
        lock_conn: psycopg.AsyncConnection[Any],
        conn: psycopg.AsyncConnection[Any],
        record_conn: psycopg.AsyncConnection[Any],
        client: Endpoint,
    ) -> None:
        """Read and start batches on `conn`; each batch records its outcome on `record_conn`."""
        flight = InFlight()
        wakeup = Wakeup(self.schema)
        listener = asyncio.create_task(self._listen(lock_conn))
        try:
            while not self.stopping.is_set():
                if listener.done():
                    listener.result()  # the lock connection is gone: stop shipping
                await flight.raise_error()
                caught_up = True
                flight.finished.clear()
                await self._rotate_when_due(conn)
                if flight.free(self._slots):
                    caught_up = await self._dispatch(conn, record_conn, client, flight)
                if flight.tasks:
                    await wakeup.busy(conn)
                elif caught_up:
                    recheck = await wakeup.idle(conn)
                    if recheck is not None:
                        await self._sleep(recheck)
                        continue
                await self._wait_for_work(flight, caught_up, listener)
        except BaseException:
            await flight.cancel()  # unacknowledged rows simply stay in the outbox
            raise
        finally:
            listener.cancel()
            await asyncio.gather(listener, return_exceptions=True)
        await flight.finish()

    async def _dispatch(
        self,
        conn: psycopg.AsyncConnection[Any],
        record_conn: psycopg.AsyncConnection[Any],
        client: Endpoint,
        flight: InFlight,
    ) -> bool:
        """Read the head of the outbox (minus what is in flight) and start batches.

        Returns whether the read found fewer rows than asked (caught up).
        """
        # Read only what the free lanes can take: the rest would be read again next time.
        free = flight.free(self._slots)
        limit = self.relay.batch_size * free
        self._notified.clear()
        # What is in flight, taken once for the read and for the plan: a batch that splits
        # while the read runs puts rows back that this read left out, and frees their
        # tokens; planned with the tokens of after, a later transaction of the same record
        # would go before them.
        in_flight, busy = flight.ids_array(), frozenset(flight.tokens)
        # Only this loop uses `conn` (batches record on record_conn): no lock needed.
        rows = await outbox.fetch_pending(
            conn,
            self.schema,
            limit,
            in_flight,
            system=self.config.system,
            whole_tables=self._encoded_tables,
            entities=self._encoded_entities,
            max_txn=self.relay.max_transaction_changes,
            encoded=self._encoded,
        )
        await self._read_watermark(conn)
        txns = group(rows, self._families, self.relay.max_transaction_changes)
        lanes = plan_lanes(txns, free, self.relay.batch_size, busy)
        started = False
        for lane in lanes:
            shipment = await self._filter(conn, lane)
            if shipment.parts:
                flight.start(shipment, self._deliver_batch(record_conn, client, shipment, flight))
                started = True
        # A full read that could start nothing (all of it waits) waits like a caught-up one.
        return not rows or rows[0].txn_rows is None or not started

    async def _read_watermark(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """Read the watermark again if it is older than WATERMARK_EVERY_S.

        Any value read earlier stays true (it only ever rises), so batches may carry one
        a little old: the peer then keeps a few more keys, nothing else.
        """
        if not self._sends_watermark:
            return  # stays None: not sent
        if time.monotonic() - self._settled_read_at < WATERMARK_EVERY_S:
            return
        cur = await conn.execute(query("relay_settled_below", schema=self.schema))
        row = await cur.fetchone()
        self._settled_below = int(row[0]) if row and row[0] is not None else None
        self._settled_read_at = time.monotonic()

    async def _listen(self, lock_conn: psycopg.AsyncConnection[Any]) -> None:
        """Own the lock connection: flag each NOTIFY at once, and check the connection lives.

        A lost lock connection raises here, which stops shipping until re-elected.
        """
        while True:
            async for _ in lock_conn.notifies(timeout=LOCK_CHECK_S):
                self._notified.set()
            await lock_conn.execute("SELECT 1")

    async def _wait_for_work(
        self, flight: InFlight, caught_up: bool, listener: asyncio.Task[None]
    ) -> None:
        """Wait until the outbox is worth reading again (Nagle-like, see the module doc)."""
        poll = self.relay.poll_interval_s
        watch: list[_Waitable] = [self.stopping, listener]
        if not flight.tasks:
            if caught_up:  # a NOTIFY is shipped at once: nothing is in flight to wait for
                await _first_of([self._notified, *watch], poll)
            return
        if not flight.free(self._slots):
            await _first_of([flight.finished, *watch], poll)
            return
        await _first_of([flight.finished, self._notified, *watch], poll)
        if self._notified.is_set() and not flight.finished.is_set():
            # New work and a free lane: let it gather behind the in-flight batches, but
            # no longer than max_wait_ms.
            await _first_of([flight.finished, *watch], self.relay.max_wait_ms / 1000)

    async def _retain_forever(self) -> None:
        """The leader prunes past-retention history every `retention_interval_s`.

        On a connection of its own, in bounded transactions: shipping never waits for it.
        A failure is logged and retried at the next interval (an outage of the database
        is reported by the shipping loop).
        """
        items = retention.targets(self.config)
        while not self.stopping.is_set():
            try:
                async with await self._connect() as conn:
                    counts = await retention.prune_async(conn, self.schema, items)
                    pruned = [table for table, n in counts.items() if n]
                    # Their space is reused at once, with or without autovacuum.
                    vacuumed = await retention.vacuum_async(conn, self.schema, pruned)
                    retention.warn_left_to_grow(self.schema, vacuumed, self._left_to_grow)
            except psycopg.Error as exc:
                log.warning(
                    "retention prune failed, next try in %.0f s: %s",
                    self.relay.retention_interval_s,
                    _first_line(exc),
                )
            else:
                removed = ", ".join(f"{table} {n}" for table, n in counts.items() if n)
                if removed:
                    log.info("retention pruned rows past their age: %s", removed)
            await self._sleep(self.relay.retention_interval_s)

    async def _rotate_when_due(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """Rotate the outbox every `relay.rotate_interval_s` (outbox.rotate), on the read
        connection between two reads, so no read of this relay ever overlaps a rotation.

        Writers never wait for it (they fill the other slot). A rotation that cannot be
        done now (a backlog still to ship, or a long transaction still writing the slot)
        is tried again at the next interval; one still not done after a minute is said.
        """
        every = self.relay.rotate_interval_s
        now = time.monotonic()
        if every is None or now < self._rotate_at:
            return
        self._rotate_at = now + every
        try:
            done = await outbox.rotate(
                conn, self.schema, most_moved=ROTATE_MOST_MOVED, lock_timeout_ms=ROTATE_LOCK_MS
            )
        except psycopg.errors.InsufficientPrivilege as exc:
            log.warning("cannot rotate %s.outbox as this role, rotation is off: %s; fix: "
                        "install again (it grants TRUNCATE on %s.outbox_0 and outbox_1)",
                        self.schema, _first_line(exc), self.schema)
            self._rotate_at = math.inf
            return
        except IncompleteInstall as exc:
            log.warning("%s; rotation is off; fix: install again (it writes that row)", exc)
            self._rotate_at = math.inf
            return
        if done.moved is not None:
            self._rotation_waits = now
            self.metrics.outbox_rotations.inc()
            log.debug("outbox rotated, %d pending rows moved", done.moved)
        elif now - self._rotation_waits >= ROTATION_LATE_S:
            self._rotation_waits = now
            log.warning("the outbox has not rotated for %.0f s: %s (it grows until then)",
                        ROTATION_LATE_S, done.waiting)

    async def _filter(self, conn: psycopg.AsyncConnection[Any], lane: list[Txn]) -> Shipment:
        """The lane's transactions as they ship: each row through the SOR filter, then
        (tables with a mapping) translated to its entity. A transaction with a change that
        cannot be translated fails whole, each change with its reason."""
        dropped: dict[int, str] = {}
        decided = [(txn, self._decided(txn, dropped)) for txn in lane]
        mapped = (
            [row for _, rows in decided for row, _ in rows if self._translated(row)]
            if self._mapped
            else []
        )
        lookups = await self.outbound.prepare(conn, mapped) if mapped else Lookups()
        parts: list[Part] = []
        failures: list[Failure] = []
        for txn, rows in decided:
            changes, refused = self._entity_changes(rows, lookups)
            if refused:
                failures.extend(_whole_transaction_fails(rows, refused))
            elif changes:
                parts.append(Part(changes, txn.tokens))
        if dropped or failures:
            async with conn.transaction():
                await outbox.acknowledge(conn, self.schema, None, dropped)
                await outbox.fail(conn, self.schema, None, failures)
            self.metrics.changes.labels(outbox.FILTERED).inc(len(dropped))
            for failure in failures:
                log.error("not shipped, parked for replay: outbox id %d: %s",
                          failure.id, failure.reason)
        return Shipment(parts)

    def _decided(self, txn: Txn, dropped: dict[int, str]) -> list[tuple[OutboxRow, Ship | None]]:
        """The rows of a transaction that ship, each with what the SOR filter kept (None:
        the row came encoded whole)."""
        if txn.large:
            log.warning(
                "source transaction %s has more than %d changes "
                "(relay.max_transaction_changes): it ships in parts, each applied "
                "at once, so the peer can see part of it",
                txn.txid,
                self.relay.max_transaction_changes,
            )
        kept: list[tuple[OutboxRow, Ship | None]] = []
        for row in txn.rows:
            if row.change_json is not None:
                # PostgreSQL encoded it: this side's own change of a whole-row table
                # (`sor: local` if mapped, then translated too), which the SOR filter
                # would ship whole.
                kept.append((row, None))
                continue
            decision = decide(row, self.specs.get(row.table_name), self.config.system)
            if isinstance(decision, Drop):
                dropped[row.id] = outbox.FILTERED
                if decision.diverges:
                    self._report_divergent(row, decision.reason)
                continue
            kept.append((row, decision))
        return kept

    def _translated(self, row: OutboxRow) -> bool:
        return row.change_json is None and row.table_name in self._mapped

    def _entity_changes(
        self, rows: list[tuple[OutboxRow, Ship | None]], lookups: Lookups
    ) -> tuple[list[Outgoing], dict[int, str]]:
        changes: list[Outgoing] = []
        refused: dict[int, str] = {}
        system = self.config.system
        for row, ship in rows:
            if ship is None:
                changes.append(outgoing_of(row, system, None, None))
            elif not self._translated(row):
                changes.append(outgoing_of(row, system, ship.fields, ship.old))
            else:
                try:
                    entity = self.outbound.translate(row, ship.fields, ship.old, lookups)
                except (Unmapped, Unresolved) as exc:
                    refused[row.id] = str(exc)
                    continue
                change = outgoing_of(row, system, entity.fields, entity.old)
                change.entity, change.key = entity.entity, entity.key
                changes.append(change)
        return changes, refused

    def _report_divergent(self, row: OutboxRow, reason: str) -> None:
        """A change of this side's own that is not shipped: the peer may now differ."""
        self.metrics.filtered_divergent.labels(row.table_name).inc()
        log.warning(
            "not shipped: %s %s of %s row %s (outbox id %d): %s; the peer may now differ",
            "insert" if row.op == "I" else "update" if row.op == "U" else "delete",
            "made here", row.table_name, row.key_text, row.id, reason,
        )

    async def _deliver_batch(
        self,
        conn: psycopg.AsyncConnection[Any],
        client: Endpoint,
        shipment: Shipment,
        flight: InFlight,
    ) -> None:
        batch_id = self._batch_id()
        pending = shipment.changes
        attempt = errors = 0
        while pending:
            async with self._sending:  # read-ahead batches wait here for a lane
                if self.stopping.is_set() and attempt == 0:
                    return  # never sent: released, the rows are still in the outbox
                # The peer's last answer before this attempt left: only an answer that
                # came before it was sent shows the peer working while this one fails.
                answered_before = self._answered_at
                sent_at = time.monotonic()
                with self.metrics.batch_seconds.time():
                    delivery = await client.deliver(batch_id, pending, self._settled_below)
            if delivery.answered:
                # When the answered request left, not when its answer came: an answer to a
                # request sent before an outage began shows nothing about the peer since.
                self._answered_at = max(self._answered_at, sent_at)
            crashed = delivery.crashed
            errors = errors + 1 if crashed else 0
            since = self._suspect(pending, crashed)
            verdict = judge(delivery, pending, self.specs_with_handoff)
            if settled(verdict, pending):
                flight.settle(shipment)  # the next batch over its tokens goes while it records
            # Alone, and sent again after other batches went through since it first failed:
            # the fault is this one's. (A peer failing every batch is retried, never blamed
            # on a change; nor is a batch whose failing attempt left before the peer
            # recovered and answered others.)
            if errors >= SPLIT_AFTER and len(shipment.parts) == 1 and answered_before > since:
                verdict = _give_up(verdict, pending, delivery)
            log_refusals(batch_id, pending, delivery, verdict)
            await self._record(conn, batch_id, pending, delivery, verdict)
            if not verdict.retry:
                self._peer_outage.recovered()
                return
            self._peer_outage.failed(delivery.error or "no answer")
            if self.stopping.is_set():
                return  # released: the rows are still in the outbox
            if errors >= SPLIT_AFTER and len(shipment.parts) > 1:
                batch_id = await self._split(conn, batch_id, shipment, flight, verdict.retry)
                attempt = errors = 0
                pending = shipment.changes
                continue
            await self._sleep(
                backoff_delay(
                    attempt,
                    self.relay.retry_initial_s,
                    self.relay.retry_max_s,
                    delivery.retry_after_s,
                )
            )
            attempt += 1
            pending = verdict.retry

    async def _split(
        self,
        conn: psycopg.AsyncConnection[Any],
        batch_id: str,
        shipment: Shipment,
        flight: InFlight,
        unanswered: list[Outgoing],
    ) -> str:
        """Keep the first half of what is still unanswered; the rest goes back to the outbox.

        Returns the new batch's id. The rest is read again by the next pass, so changes
        independent of the half kept flow at once; dependent ones wait for it.
        """
        left = {c.id for c in unanswered}
        parts = [
            Part([c for c in p.changes if c.id in left], p.tokens)
            for p in shipment.parts
            if any(c.id in left for c in p.changes)
        ]
        kept = parts[: max(1, len(parts) // 2)]
        flight.release(shipment)
        shipment.parts = kept
        flight.hold(shipment)
        # (a bridge schema from before 'split' keeps the batch 'pending')
        async with self._record_lock:
            with contextlib.suppress(psycopg.errors.CheckViolation):
                await conn.execute(
                    query("relay_close_batch", schema=self.schema),
                    {"batch_id": batch_id, "status": "split"},
                )
        log.warning(
            "batch %s failed %d times with HTTP 500: retrying %d of its %d transactions "
            "alone to find the change at fault",
            batch_id,
            SPLIT_AFTER,
            len(kept),
            len(parts),
        )
        flight.finished.set()  # the rest can be read again now
        return self._batch_id()

    def _suspect(self, sent: list[Outgoing], crashed: bool) -> float:
        """When the peer first failed (HTTP 500) a batch holding these transactions.

        Kept per transaction across splits and new batches, until one is answered.
        """
        txids = {c.txid or "" for c in sent}
        if not crashed:
            for txid in txids:
                self._suspects.pop(txid, None)
            return time.monotonic()
        now = time.monotonic()
        return min(self._suspects.setdefault(txid, now) for txid in txids)

    def _batch_id(self) -> str:
        return f"{self.config.system}-{uuid.uuid4().hex}"

    @property
    def specs_with_handoff(self) -> frozenset[str]:
        return frozenset(s.label for s in self.specs.values() if s.mode is TableMode.HANDOFF)

    async def _record(
        self,
        conn: psycopg.AsyncConnection[Any],
        batch_id: str,
        sent: list[Outgoing],
        delivery: Delivery,
        verdict: _Verdict,
    ) -> None:
        status = "pending" if verdict.retry else ("failed" if verdict.failures else "delivered")
        attempt = outbox.Attempt(
            delivery.status, delivery.error, delivery.detail, delivery.duration_ms
        )
        ids = [c.id for c in sent]
        async with self._record_lock:
            if not (verdict.failures or verdict.handoffs):
                # The usual outcome is one statement: atomic without a transaction block.
                await outbox.record_outcome(
                    conn, self.schema, batch_id, status, ids, attempt, verdict.acked
                )
            else:
                # Pipeline mode: the whole transaction costs about one round trip.
                async with conn.transaction(), conn.pipeline():
                    await outbox.record_outcome(
                        conn, self.schema, batch_id, status, ids, attempt, verdict.acked
                    )
                    await outbox.fail(conn, self.schema, batch_id, verdict.failures)
                    await outbox.record_handoffs(conn, self.schema, verdict.handoffs)
        self._count(delivery, verdict)

    def _count(self, delivery: Delivery, verdict: _Verdict) -> None:
        outcome = "transient" if delivery.transient else "permanent" if delivery.permanent else "ok"
        self.metrics.attempts.labels(outcome).inc()
        for result, count in collections.Counter(verdict.acked.values()).items():
            self.metrics.changes.labels(result).inc(count)
        if verdict.failures:
            self.metrics.changes.labels("failed").inc(len(verdict.failures))
        if verdict.acked:
            self.metrics.last_delivery.set_to_current_time()


_Waitable = asyncio.Event | asyncio.Task[None]


def _whole_transaction_fails(
    rows: list[tuple[OutboxRow, Ship | None]], refused: dict[int, str]
) -> list[Failure]:
    """Every change of a transaction with an untranslatable one: it never ships in part."""
    first = min(refused)
    return [
        Failure(
            row.id,
            refused.get(row.id)
            or f"not shipped: change {first} of its source transaction cannot be "
            f"translated ({refused[first]})",
        )
        for row, _ in rows
    ]


def outgoing_of(
    row: outbox.OutboxRow,
    system: str,
    fields: dict[str, Any] | None,
    old: dict[str, Any] | None,
) -> Outgoing:
    """The change to send for an outbox row, with the fields the SOR filter kept."""
    # Positional (in Outgoing's field order): one is built per change sent, and keyword
    # arguments cost a third more.
    return Outgoing(
        row.id,
        f"{system}:{row.txid}:{row.id}",  # row.idempotency_key(system)
        row.table_name,
        row.op,
        row.key,
        row.key_text,
        fields,
        old,
        row.captured_at,
        row.origin,
        row.change_json,
        row.txid,
        row.table_name,
    )


async def _first_of(waitables: list[_Waitable], timeout: float) -> None:
    """Return when any event is set or task is done, or after `timeout` seconds."""
    if timeout <= 0 or any(_ready(w) for w in waitables):
        return
    waiters: list[asyncio.Future[Any]] = []
    created: list[asyncio.Task[Any]] = []
    for item in waitables:
        if isinstance(item, asyncio.Event):
            created.append(asyncio.create_task(item.wait()))
            waiters.append(created[-1])
        else:
            waiters.append(item)
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in created:
            task.cancel()


def _ready(item: _Waitable) -> bool:
    return item.is_set() if isinstance(item, asyncio.Event) else item.done()


def judge(delivery: Delivery, sent: list[Outgoing], handoff_tables: frozenset[str]) -> _Verdict:
    """What happens to each sent change after one attempt (pure: no I/O).

    - acknowledged results leave the outbox for `delivered`;
    - a per-change `rejected` goes to `failed`, parking its key; `skipped` stays parked;
    - a whole batch refused for good (4xx other than 408/429): every change without a
      result goes to `failed` (a transaction never half-fails), parking its keys; a
      replay of the failed changes sends them again, whole and in order;
    - transient: what has no result is retried after a backoff.
    """
    acked: dict[int, str] = {}
    failures: list[Failure] = []
    handoffs: list[tuple[str, str]] = []
    results = delivery.results
    for change in sent:
        result = results.get(change.id)
        if result is None:
            continue
        text = _ACKED.get(result.status)
        if text is not None:
            acked[change.id] = text
            if handoff_tables and change.table in handoff_tables and change.op != "D":
                handoffs.append((change.table, change.key_text))
        elif result.status is ResultStatus.REJECTED:
            status, body = delivery.answers.get(change.id, (delivery.status, delivery.detail))
            failures.append(
                Failure(change.id, result.reason or "rejected by the peer", status, body)
            )
    if delivery.permanent:
        failures.extend(_all_unanswered(sent, delivery))
        return _Verdict(acked, failures, handoffs, retry=[])
    retry = [c for c in sent if c.id not in delivery.results] if delivery.transient else []
    return _Verdict(acked, failures, handoffs, retry)


# Acknowledged statuses, as recorded (a lookup per change instead of enum properties).
_ACKED = {s: s.value for s in ResultStatus if s.acknowledged}

LOGGED_REJECTIONS = 10  # per batch; `batches show` lists them all


def settled(verdict: _Verdict, sent: list[Outgoing]) -> bool:
    """Whether the peer acknowledged every change sent, and nothing else is to be recorded
    before a later change of their records may be read (failures park keys; handoffs
    change what this side may edit)."""
    return (
        not (verdict.retry or verdict.failures or verdict.handoffs)
        and len(verdict.acked) == len(sent)
    )


def log_refusals(
    batch_id: str, sent: list[Outgoing], delivery: Delivery, verdict: _Verdict
) -> None:
    """Log each refusal by the peer with its reason: a whole batch, or single changes."""
    where = {"event": "refused", "batch_id": batch_id, "http_status": delivery.status}
    if delivery.permanent:
        log.warning(
            "peer refused batch %s of %d change(s): %s; its changes are failed and park "
            "their keys (cdc-bridge batches show %s)",
            batch_id, len(sent), delivery.error, batch_id, extra=where,
        )
        return
    tables = {c.id: c.table for c in sent}
    for failure in verdict.failures[:LOGGED_REJECTIONS]:
        log.warning(
            "peer rejected change %d of %s in batch %s: %s; its key is parked",
            failure.id, tables.get(failure.id, "?"), batch_id, failure.reason,
            extra={**where, "http_status": failure.status, "change_id": failure.id},
        )
    unlogged = len(verdict.failures) - LOGGED_REJECTIONS
    if unlogged > 0:
        log.warning(
            "peer rejected %d more change(s) of batch %s (cdc-bridge batches show %s)",
            unlogged, batch_id, batch_id, extra=where,
        )


def _give_up(verdict: _Verdict, sent: list[Outgoing], delivery: Delivery) -> _Verdict:
    """A transaction alone in its batch that the peer keeps failing: fail it, park its keys."""
    reason = (
        f"the peer failed this transaction {SPLIT_AFTER} times with HTTP "
        f"{delivery.status} while it was alone in its batch"
    )
    failures = [
        Failure(c.id, reason, delivery.status, delivery.detail)
        for c in sent
        if c.id not in delivery.results
    ]
    return _Verdict(verdict.acked, [*verdict.failures, *failures], verdict.handoffs, retry=[])


def _all_unanswered(sent: list[Outgoing], delivery: Delivery) -> list[Failure]:
    reason = f"the peer refused the whole batch: {delivery.error or 'HTTP error'}"
    return [
        Failure(c.id, reason, delivery.status, delivery.detail)
        for c in sent
        if c.id not in delivery.results
    ]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return mask_dsn(text.splitlines()[0]) if text else type(exc).__name__
