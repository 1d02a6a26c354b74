"""A real `serve` app on 127.0.0.1 (uvicorn in a thread) and signed-batch helpers."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
import psycopg
import uvicorn

from cdc_bridge.config import BridgeConfig, parse_config
from cdc_bridge.inbound.app import create_app, tls_options
from cdc_bridge.peer.protocol import BATCH_PATH, Batch, BatchResponse, Change, Op, Signer, dumps
from tests.helpers import FIXTURES, SECRET, install


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def load(name: str, dsn: str, replace: dict[str, str] | None = None) -> BridgeConfig:
    """A fixture config for this database; `replace` edits its text (e.g. the policy)."""
    text = (FIXTURES / name).read_text()
    for old, new in (replace or {}).items():
        text = text.replace(old, new)
    env = {"ERP_DATABASE_URL": dsn, "SHOP_DATABASE_URL": dsn, "BRIDGE_SECRET": SECRET}
    return parse_config(text, name, env)


@dataclass
class Server:
    url: str
    config: BridgeConfig

    @property
    def dsn(self) -> str:
        return self.config.database.url.get_secret_value()

    def post(self, body: bytes, headers: dict[str, str] | None = None) -> httpx.Response:
        """POST a batch, signed under its own batch_id unless `headers` are given."""
        sent = Signer(SECRET).headers(signed_id(body), body) if headers is None else headers
        return httpx.post(
            self.url + BATCH_PATH,
            content=body,
            headers={**sent, "content-type": "application/json"},
            timeout=60,
        )

    def send(self, *changes: Change) -> BatchResponse:
        response = self.post(batch_body(self.config.peer.name, list(changes)))
        assert response.status_code == 200, response.text
        return BatchResponse.model_validate_json(response.content)


@contextmanager
def running(config: BridgeConfig) -> Iterator[Server]:
    """Install the bridge on the config's database and serve it until the block ends."""
    install(config)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(config, pool_size=2),
            host="127.0.0.1",
            port=port,
            log_level="warning",
            lifespan="on",
            ws="none",
            **tls_options(config.inbound.tls),
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.02)
    try:
        scheme = "http" if config.inbound.tls is None else "https"
        yield Server(url=f"{scheme}://127.0.0.1:{port}", config=config)
    finally:
        server.should_exit = True
        thread.join(timeout=60)


_counter = iter(range(1, 1_000_000_000))


def change(
    table: str,
    op: str,
    key: dict[str, Any],
    fields: dict[str, Any] | None = None,
    old: dict[str, Any] | None = None,
    origin: str = "erp",
    committed_at: datetime | None = None,
    idempotency_key: str | None = None,
) -> Change:
    return Change(
        idempotency_key=idempotency_key or f"test:{next(_counter)}:{uuid.uuid4().hex[:8]}",
        entity=table,
        op=Op(op),
        key=key,
        fields=fields,
        old=old,
        committed_at=committed_at or datetime.now(UTC),
        origin=origin,
    )


def signed_id(body: bytes) -> str:
    """The id a sender signs a body under: its batch_id, or a fresh one for anything else."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return uuid.uuid4().hex
    found = parsed.get("batch_id") if isinstance(parsed, dict) else None
    return found if isinstance(found, str) and found else uuid.uuid4().hex


def batch_body(source: str, changes: list[Change]) -> bytes:
    return dumps(Batch(source=source, batch_id=uuid.uuid4().hex, changes=changes))


def rows(dsn: str, query: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(query, params or None).fetchall()


def snapshot(dsn: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every sample table and the bridge's own tables, to prove nothing changed."""
    tables = ["customers", "orders", "invoices", "products", "accounts"]
    found = {t: rows(dsn, f"SELECT * FROM public.{t} ORDER BY 1") for t in tables}  # noqa: S608
    for t in ("outbox", "applied_keys", "conflicts"):
        found[t] = rows(dsn, f"SELECT * FROM cdc_bridge.{t} ORDER BY 1")  # noqa: S608
    return found


def statuses(response: BatchResponse) -> list[str]:
    return [r.status.value for r in response.results]


def post_webhook(url: str, record: Any, secret: str, **headers: str) -> httpx.Response:
    """POST `record` as a shop signs its webhooks: base64 HMAC-SHA256 of the raw body in
    X-WC-Webhook-Signature, plus `headers`."""
    body = json.dumps(record).encode()
    signature = base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest())
    return httpx.post(
        url,
        content=body,
        headers={
            "content-type": "application/json",
            "X-WC-Webhook-Signature": signature.decode(),
            **headers,
        },
        timeout=30,
    )
