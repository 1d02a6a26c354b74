"""Prometheus metrics and a tiny HTTP endpoint for /metrics and /healthz.

The endpoint is a few lines on asyncio streams rather than a web framework, so it
shares the relay's event loop and leaves signal handling to the relay.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

log = logging.getLogger(__name__)


class RelayMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.changes = Counter(
            "cdc_bridge_relay_changes",
            "Changes that left the outbox, by result (applied, duplicate, ..., failed)",
            ["result"],
            registry=self.registry,
        )
        self.attempts = Counter(
            "cdc_bridge_relay_attempts",
            "Delivery attempts, by outcome (ok, transient, permanent)",
            ["outcome"],
            registry=self.registry,
        )
        self.batch_seconds = Histogram(
            "cdc_bridge_relay_batch_seconds",
            "Time to send one batch and get the peer's answer",
            registry=self.registry,
        )
        self.leader = Gauge(
            "cdc_bridge_relay_leader", "1 when this relay holds the lock", registry=self.registry
        )
        self.last_delivery = Gauge(
            "cdc_bridge_relay_last_delivery_timestamp_seconds",
            "When the peer last acknowledged a change",
            registry=self.registry,
        )
        self.filtered_divergent = Counter(
            "cdc_bridge_relay_filtered_divergent",
            "Changes made on this side that the SOR filter did not ship (the peer may differ)",
            ["table"],
            registry=self.registry,
        )
        self.outbox_rotations = Counter(
            "cdc_bridge_relay_outbox_rotations",
            "Rotations of the outbox (a drained slot emptied by TRUNCATE)",
            registry=self.registry,
        )
        self.oldest_pending = Gauge(
            "cdc_bridge_relay_oldest_pending_seconds",
            "Age of the oldest undelivered change in the outbox, read at each scrape "
            "(0: none pending; NaN: the database does not answer)",
            registry=self.registry,
        )


Health = Callable[[], Awaitable[dict[str, object]]]


async def serve_metrics(listen: str, metrics: RelayMetrics, health: Health) -> asyncio.Server:
    """Serve /metrics and /healthz. `health` is awaited for both: it also brings the
    gauges read from the database up to date, so a scrape never shows a stale backlog."""
    host, _, port = listen.rpartition(":")

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5)
            path = request.split(b" ", 2)[1].decode("ascii", errors="replace")
            state = await health() if path.startswith(("/metrics", "/healthz")) else {}
            status, ctype, body = _respond(path, metrics, state)
            head = (
                f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            )
            writer.write(head.encode() + body)
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, IndexError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, host, int(port))
    log.info("metrics on http://%s/metrics and /healthz", listen)
    return server


def _respond(
    path: str, metrics: RelayMetrics, state: dict[str, object]
) -> tuple[str, str, bytes]:
    if path.startswith("/metrics"):
        return "200 OK", CONTENT_TYPE_LATEST, generate_latest(metrics.registry)
    if path.startswith("/healthz"):
        status = "200 OK" if state.get("healthy") else "503 Service Unavailable"
        return status, "application/json", orjson.dumps(state)
    return "404 Not Found", "text/plain", b"not found\n"
