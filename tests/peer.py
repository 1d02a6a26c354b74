"""A minimal, real HTTP peer on 127.0.0.1 for relay tests.

It verifies Standard Webhooks signatures, applies each idempotency key once, records the
changes it applied per record, and misbehaves on request: answer 500, time out, be slow,
refuse connections (stop listening), reject one record for good, or fail with 500 every
batch that holds a change of a given record. Paths other than the
batch endpoint are recorded as REST calls and answered from `rest_status`.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from cdc_bridge.errors import SignatureError
from cdc_bridge.peer.protocol import (
    BATCH_PATH,
    Batch,
    BatchResponse,
    ChangeResult,
    ResultStatus,
    Signer,
    dumps,
)
from tests.helpers import SECRET

Record = tuple[str, str]  # (table, canonical key JSON)


def record_of(table: str, key: dict[str, Any]) -> Record:
    return (table, json.dumps(key, sort_keys=True))


@dataclass
class RestCall:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class PeerState:
    mode: str = "ok"  # ok | error500 | timeout | slow
    delay_s: float = 0.0  # for timeout and slow
    rejected_records: set[Record] = field(default_factory=set)
    crash_records: set[Record] = field(default_factory=set)  # a batch holding one: HTTP 500
    applied: dict[Record, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    seen: set[str] = field(default_factory=set)
    deliveries: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    requests: int = 0
    bad_signatures: int = 0
    rest_calls: list[RestCall] = field(default_factory=list)
    rest_status: dict[str, int] = field(default_factory=dict)  # path prefix -> status


class PeerServer:
    """Start with `start()`; `refuse()` stops listening, `start()` listens again (same port)."""

    def __init__(self, secret: str = SECRET) -> None:
        self.signer = Signer(secret)
        self.state = PeerState()
        self.lock = threading.Lock()
        self.port = 0
        self._server: ThreadingHTTPServer | None = None
        self.open_sockets: set[socket.socket] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> PeerServer:
        server = _Server(("127.0.0.1", self.port), _Handler)
        server.peer = self
        self.port = server.server_address[1]
        self._server = server
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return self

    def refuse(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        # Kept-alive connections would go on being served: cut them too.
        with self.lock:
            sockets, self.open_sockets = self.open_sockets, set()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def set_mode(self, mode: str, delay_s: float = 0.0) -> None:
        with self.lock:
            self.state.mode, self.state.delay_s = mode, delay_s

    def applied_ids(self) -> dict[Record, list[int]]:
        """Outbox ids (from the idempotency keys) applied per record, in applied order."""
        with self.lock:
            return {
                record: [int(c["idempotency_key"].rsplit(":", 1)[1]) for c in changes]
                for record, changes in self.state.applied.items()
            }

    def applied_names(self) -> dict[Record, list[str]]:
        """The `name` field of each applied change per record, in applied order."""
        with self.lock:
            return {
                record: [c["fields"]["name"] for c in changes if c.get("fields")]
                for record, changes in self.state.applied.items()
            }

    def applied_count(self) -> int:
        with self.lock:
            return len(self.state.seen)

    def __enter__(self) -> PeerServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.refuse()

    # ------------------------------------------------------------ request handling

    def answer_batch(self, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
        with self.lock:
            self.state.requests += 1
            mode, delay = self.state.mode, self.state.delay_s
        try:
            self.signer.verify(headers, body, tolerance_s=300)
        except SignatureError as exc:
            with self.lock:
                self.state.bad_signatures += 1
            return 401, str(exc).encode()
        if mode == "error500":
            return 500, b"internal error"
        if mode in ("timeout", "slow"):
            time.sleep(delay)
        if mode == "timeout":
            return 503, b"too late"
        batch = Batch.model_validate_json(body)
        with self.lock:
            crash = self.state.crash_records
            if any(record_of(c.entity, c.key) in crash for c in batch.changes):
                return 500, b"internal error"
        rejected_here: set[Record] = set()
        with self.lock:
            results = [self._apply(change, rejected_here) for change in batch.changes]
        return 200, dumps(BatchResponse(results=results))

    def _apply(self, change: Any, rejected_here: set[Record]) -> ChangeResult:
        state = self.state
        state.deliveries[change.idempotency_key] += 1
        record = record_of(change.entity, change.key)
        if record in state.rejected_records:
            # Protocol: the first change of a refused record is rejected, later ones skipped.
            if record in rejected_here:
                return ChangeResult(
                    idempotency_key=change.idempotency_key, status=ResultStatus.SKIPPED
                )
            rejected_here.add(record)
            return ChangeResult(
                idempotency_key=change.idempotency_key,
                status=ResultStatus.REJECTED,
                reason="this record is refused",
            )
        if change.idempotency_key in state.seen:
            return ChangeResult(
                idempotency_key=change.idempotency_key, status=ResultStatus.DUPLICATE
            )
        state.seen.add(change.idempotency_key)
        state.applied[record].append(change.model_dump(mode="json"))
        return ChangeResult(idempotency_key=change.idempotency_key, status=ResultStatus.APPLIED)

    def answer_rest(self, method: str, path: str, headers: dict[str, str], body: bytes) -> int:
        with self.lock:
            self.state.rest_calls.append(
                RestCall(method, path, headers, json.loads(body) if body else None)
            )
            for prefix, status in self.state.rest_status.items():
                if path.startswith(prefix):
                    return status
        return 200


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    peer: PeerServer


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def setup(self) -> None:
        super().setup()
        with self.server.peer.lock:
            self.server.peer.open_sockets.add(self.connection)

    def finish(self) -> None:
        with self.server.peer.lock:
            self.server.peer.open_sockets.discard(self.connection)
        with contextlib.suppress(OSError):
            super().finish()

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _body(self) -> bytes:
        length = int(self.headers.get("content-length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, body: bytes) -> None:
        try:
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except OSError:
            pass  # the client gave up (timeout) or the peer is refusing: nothing to do

    def do_POST(self) -> None:
        body = self._body()
        if self.path == BATCH_PATH:
            self._send(*self.server.peer.answer_batch(dict(self.headers.items()), body))
        else:
            self._rest(body)

    def _rest(self, body: bytes) -> None:
        peer = self.server.peer
        status = peer.answer_rest(self.command, self.path, dict(self.headers.items()), body)
        self._send(status, b"{}")

    def do_PUT(self) -> None:
        self._rest(self._body())

    def do_PATCH(self) -> None:
        self._rest(self._body())

    def do_DELETE(self) -> None:
        self._rest(self._body())
