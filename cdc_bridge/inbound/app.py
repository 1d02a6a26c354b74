"""`cdc-bridge serve`: the HTTP side of the batch protocol (Starlette on uvicorn).

Every request is checked before it touches the database, in this order: body size (413),
signature and timestamp (401), JSON and batch shape, and a batch id equal to the signed
`webhook-id` (400). Only then is the batch applied,
in a worker thread, on a pooled connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import psycopg
import uvicorn
from psycopg import sql
from psycopg_pool import ConnectionPool
from pydantic import BaseModel, ValidationError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from cdc_bridge import sql as queries
from cdc_bridge.capture.function import wire_function_name
from cdc_bridge.config import BridgeConfig, InboundTls, TableSpec
from cdc_bridge.db import error_line, mask_dsn
from cdc_bridge.entity.outbound import Outbound
from cdc_bridge.errors import CodecError, Refused, SignatureError
from cdc_bridge.inbound.apply import Applier, prune_applied_keys
from cdc_bridge.inbound.webhooks import Webhooks, change_of, verify
from cdc_bridge.peer import codec
from cdc_bridge.peer.protocol import (
    BATCH_PATH,
    READ_PATH,
    Batch,
    BatchResponse,
    ReadRequest,
    ReadResponse,
    Signer,
    dumps,
)

log = logging.getLogger("cdc_bridge.inbound")

M = TypeVar("M", bound=BaseModel)

# Applied keys above the sender's watermark are all that is kept: pruning (and vacuuming)
# every 10 s keeps the table at about 10 s of changes, with or without autovacuum.
PRUNE_EVERY_S = 10.0
APPLICATION_NAME = "cdc-bridge serve"  # in pg_stat_activity
HEALTH_TIMEOUT_S = 5.0  # /healthz waits this long for a pooled connection


class Inbound:
    """What the request handlers share: config, signer, applier and the connection pool."""

    def __init__(self, config: BridgeConfig, pool_size: int = 4) -> None:
        # A bridge peer always has a shared secret (the config insists); an application
        # peer sends only its own webhooks, verified by their own secrets, so without
        # one `serve` takes no bridge batches at all.
        self.config = config
        self.signer = Signer(config.peer.secrets) if config.peer.secrets else None
        self.applier = Applier(config)
        self._left_to_grow: set[str] = set()  # tables said to grow (pruning)
        self.outbound = Outbound(config)  # reads this side's rows as entities (reconcile)
        self.webhooks = [
            Webhooks.build(route, config.table(route.table), os.environ)
            for route in config.inbound.webhooks
        ]
        self.pool = ConnectionPool(
            config.database.url.get_secret_value(),
            min_size=1,
            max_size=pool_size,
            kwargs={"autocommit": True, "application_name": APPLICATION_NAME},
            configure=codec.use_exact_json,
            open=False,
            name="cdc-bridge-inbound",
        )

    # -------------------------------------------------------------- checks

    async def read_body(self, request: Request) -> bytes:
        """The raw body, refused with 413 past `inbound.max_body_bytes` (nothing verified)."""
        limit = self.config.inbound.max_body_bytes
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise Refused(413, f"body of {declared} bytes is over the {limit}-byte limit")
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:  # a lying or missing Content-Length
                raise Refused(413, f"body is over the {limit}-byte limit")
            chunks.append(chunk)
        return b"".join(chunks)

    async def body(self, request: Request) -> tuple[bytes, str]:
        """The request's body and its signed `webhook-id`, once size and signature check out."""
        body = await self.read_body(request)
        if self.signer is None:
            raise Refused(
                401,
                "this side takes no bridge batches: its peer is an application "
                "(no peer.secret is set)",
            )
        try:
            message_id = self.signer.verify(
                dict(request.headers), body, self.config.inbound.timestamp_tolerance_s
            )
        except SignatureError as exc:
            raise Refused(401, str(exc)) from None
        return body, message_id

    def parse(self, body: bytes, model: type[M]) -> M:
        try:
            # The wire codec, not pydantic's parser: exact numbers, any depth.
            parsed = model.model_validate(codec.loads(body))
        except CodecError as exc:
            raise Refused(400, f"body is {exc}") from None
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "(top level)"
            raise Refused(
                400,
                f"not a valid {model.__name__}: {where}: {first['msg']} "
                f"({exc.error_count()} problem(s))",
            ) from None
        source = getattr(parsed, "source", None)
        if source != self.config.peer.name:
            raise Refused(400, f"source {source!r} is not this bridge's peer")
        return parsed

    # -------------------------------------------------------------- work

    def apply(self, batch: Batch) -> bytes:
        return dumps(self.apply_batch(batch))

    def apply_batch(self, batch: Batch) -> BatchResponse:
        with self.pool.connection() as conn:
            response = self.applier.apply(conn, batch)
        counts = Counter(r.status.value for r in response.results)
        log.debug("batch %s from %s: %s", batch.batch_id, batch.source, dict(counts))
        return response

    async def webhook(self, hooks: Webhooks, request: Request) -> bytes:
        """Verify, map and apply one webhook of the peer application."""
        body = await self.read_body(request)
        headers = dict(request.headers)  # lower-case names
        verify(
            hooks.route.signature,
            hooks.secret,
            headers,
            body,
            self.config.inbound.timestamp_tolerance_s,
        )
        batch = change_of(hooks, headers, body, self.config.peer.name)
        result = (await run_in_threadpool(self.apply_batch, batch)).results[0]
        if not result.status.acknowledged:
            raise Refused(422, f"{batch.changes[0].entity}: {result.reason}")
        return codec.dumps({"status": result.status.value})

    def read(self, request: ReadRequest) -> bytes:
        spec = self._readable(request.entity)
        with self.pool.connection() as conn:
            columns = self._read_columns(conn, spec)
            query = queries.query(
                "inbound_read_rows",
                table=spec.name.identifier,
                wire=sql.Identifier(self.config.bridge_schema, wire_function_name(spec)),
                columns=sql.SQL(", ").join(
                    sql.SQL("t.{}").format(sql.Identifier(c)) for c in columns
                ),
                key=sql.SQL(", ").join(sql.Identifier(c) for c in spec.key),
            )
            after = None if request.after is None else codec.dumps_text(request.after)
            rows = [r[0] for r in conn.execute(query, {"after": after, "limit": request.limit + 1})]
            more = len(rows) > request.limit
            rows = rows[: request.limit]
            cursor = {k: rows[-1][k] for k in spec.key} if more and rows else None
            if spec.mapped:
                rows = self._entity_rows(conn, spec, rows)
        return dumps(
            ReadResponse(protocol=request.protocol, rows=rows, more=more, next=cursor)
        )

    def _entity_rows(
        self, conn: psycopg.Connection[Any], spec: TableSpec, rows: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        """This side's rows as the entity records they hold (reconcile compares those)."""
        keyed = [({k: r[k] for k in spec.key}, r) for r in rows]
        entities = []
        for result in self.outbound.entity_rows(conn, spec.label, keyed):
            if isinstance(result, Exception):
                raise Refused(422, f"{spec.label}: a row cannot be read as {spec.entity}: {result}")
            entities.append({**(result.fields or {}), **result.key})
        for part in self.applier.entities.parts_of(spec.entity):
            found = self._part_rows(conn, part.spec, spec, [k for k, _ in keyed])
            for (key, _), entity in zip(keyed, entities, strict=True):
                entity.update(part.outbound_values(found.get(_token(key, spec.key), {}), {}) or {})
        return entities

    def _part_rows(
        self,
        conn: psycopg.Connection[Any],
        part: TableSpec,
        main: TableSpec,
        keys: list[dict[str, Any]],
    ) -> dict[str, dict[str, Any]]:
        """A side table's rows of these main keys, by the main key's text."""
        if not keys:
            return {}
        query = queries.query(
            "inbound_read_part_rows",
            table=part.name.identifier,
            key=sql.SQL(", ").join(sql.Identifier(c) for c in part.key),
        )
        renamed = [dict(zip(part.key, (k[c] for c in main.key), strict=True)) for k in keys]
        rows = conn.execute(query, {"keys": codec.dumps_text(renamed)})
        return {
            _token({c: row[p] for p, c in zip(part.key, main.key, strict=True)}, main.key): row
            for (row,) in rows
        }

    def _readable(self, entity: str) -> TableSpec:
        spec = self.config.spec_of_entity(entity)
        if spec is None:
            raise Refused(400, f"entity {entity!r} is not configured on this side")
        if not (spec.receives_whole_rows or spec.received_fields):
            raise Refused(400, f"{spec.label} holds nothing this side receives from the peer")
        return spec

    def _read_columns(self, conn: psycopg.Connection[Any], spec: TableSpec) -> list[str]:
        if spec.receives_whole_rows:
            # From the catalog on every page: a column dropped since the last batch must
            # not be selected (one catalog lookup next to a page of rows).
            return sorted(self.applier.read_columns(conn, spec))
        return [*spec.key, *spec.received_fields]

    def prune(self) -> int:
        with self.pool.connection() as conn:
            return prune_applied_keys(conn, self.config, self._left_to_grow)

    def database_problem(self) -> str | None:
        """Why no batch could be applied now, or None: one `SELECT 1` on a pooled connection."""
        try:
            with self.pool.connection(timeout=HEALTH_TIMEOUT_S) as conn:
                conn.execute("SELECT 1")
        except psycopg.Error as exc:  # the pool's timeout is one too
            return error_line(exc)
        return None


def _refusal(exc: Refused) -> Response:
    return JSONResponse({"error": exc.reason}, status_code=exc.status)


def _endpoint(
    inbound: Inbound, work: Callable[[Request], Awaitable[bytes]]
) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        try:
            body = await work(request)
        except Refused as exc:
            log.warning("refused %s %s: %s", request.url.path, exc.status, exc.reason)
            return _refusal(exc)
        except psycopg.OperationalError as exc:
            # Transient (deadlock, lock timeout, lost connection): nothing was committed.
            log.error("batch not applied: %s", mask_dsn(str(exc).strip().splitlines()[0]))
            return JSONResponse(
                {"error": "database busy or unavailable; nothing applied, retry later"},
                status_code=503,
            )
        return Response(body, media_type="application/json")

    return endpoint


def create_app(config: BridgeConfig, pool_size: int = 4) -> Starlette:
    inbound = Inbound(config, pool_size)

    async def batches(request: Request) -> bytes:
        body, message_id = await inbound.body(request)
        batch = inbound.parse(body, Batch)
        if batch.batch_id != message_id:
            # Both are signed, but they must agree: a batch is accepted only under its own id.
            raise Refused(
                400,
                f"webhook-id {message_id!r} differs from the body's batch_id "
                f"{batch.batch_id!r}; a batch is signed under its own id",
            )
        return await run_in_threadpool(inbound.apply, batch)

    async def read(request: Request) -> bytes:
        body, _message_id = await inbound.body(request)
        read_request = inbound.parse(body, ReadRequest)
        return await run_in_threadpool(inbound.read, read_request)

    async def health(_request: Request) -> Response:
        problem = await run_in_threadpool(inbound.database_problem)
        if problem is None:
            return JSONResponse({"status": "ok"})
        body = {"status": "unhealthy", "problems": [f"database unreachable: {problem}"]}
        return JSONResponse(body, status_code=503)

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        await run_in_threadpool(inbound.pool.open, True)
        pruner = asyncio.create_task(_prune_forever(inbound))
        try:
            yield
        finally:
            pruner.cancel()
            await run_in_threadpool(inbound.pool.close)

    def webhook(hooks: Webhooks) -> Callable[[Request], Awaitable[bytes]]:
        return lambda request: inbound.webhook(hooks, request)

    return Starlette(
        routes=[
            Route(BATCH_PATH, _endpoint(inbound, batches), methods=["POST"]),
            Route(READ_PATH, _endpoint(inbound, read), methods=["POST"]),
            Route("/healthz", health, methods=["GET"]),
            *(
                Route(h.route.path, _endpoint(inbound, webhook(h)), methods=["POST"])
                for h in inbound.webhooks
            ),
        ],
        lifespan=lifespan,
    )


async def _prune_forever(inbound: Inbound) -> None:
    while True:
        try:
            removed = await run_in_threadpool(inbound.prune)
            if removed:
                log.info("pruned %d applied idempotency keys", removed)
        except psycopg.Error as exc:
            log.warning("pruning applied keys failed: %s", str(exc).splitlines()[0])
        await asyncio.sleep(PRUNE_EVERY_S)


def split_listen(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    return host.strip("[]"), int(port)


def tls_options(tls: InboundTls | None) -> dict[str, Any]:
    """uvicorn's options for `inbound.tls`: HTTPS, and with a client CA, mutual TLS (a
    client without a certificate that CA signed fails the handshake)."""
    if tls is None:
        return {}
    options: dict[str, Any] = {"ssl_certfile": tls.cert, "ssl_keyfile": tls.key}
    if tls.client_ca is not None:
        options |= {"ssl_ca_certs": tls.client_ca, "ssl_cert_reqs": ssl.CERT_REQUIRED}
    return options


def serve(config: BridgeConfig, listen: str | None = None) -> None:
    """Run the server until SIGINT/SIGTERM."""
    host, port = split_listen(listen or config.inbound.listen)
    # Logging is configured by the caller (cdc_bridge.logs); uvicorn must not replace it.
    uvicorn.run(
        create_app(config),
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        **tls_options(config.inbound.tls),
    )


def _token(key: dict[str, Any], columns: tuple[str, ...]) -> str:
    return codec.dumps_text([key[c] for c in columns])
