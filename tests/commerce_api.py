"""A real HTTP server on 127.0.0.1 that behaves like a commerce application's API.

- `/oauth/token`: OAuth2 client credentials (client authenticated with HTTP Basic); it
  issues numbered tokens and can revoke them.
- `/api/products/{sku}`: PUT creates or replaces, PATCH updates, DELETE deletes; every
  accepted request is kept per product, in the order it was applied.
- Every API request must carry the credential of the configured scheme, else 401.
- Rate limiting on request: the next N API requests get 429 with `Retry-After`.
- It counts the requests it serves at once, so a test can check a client-side limit.
- `GET /api/customers?modified_after=T&page=N&per_page=M`: customers modified after T,
  oldest modification first, paged by number, with a `Link: <...>; rel="next"` header.
  A test can act between pages (`on_page`), e.g. modify a customer mid-read.
- HTTPS when given a server TLS context (which may require a client certificate).
- `/api/v3/products`: a catalog that names its records. POST creates and answers the new
  id (409 when the SKU exists), PUT and DELETE take `/api/v3/products/{id}` (404 when
  unknown), and `GET /api/v3/products?sku=X` searches.
"""

from __future__ import annotations

import base64
import contextlib
import json
import ssl
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

CLIENT_ID = "bridge-client"
CLIENT_SECRET = "client-secret-for-tests"
PRODUCTS = "/api/products/"
CATALOG = "/api/v3/products"


def _merge(target: dict[str, Any], update: dict[str, Any]) -> None:
    for name, value in update.items():
        if isinstance(value, dict) and isinstance(target.get(name), dict):
            _merge(target[name], value)
        else:
            target[name] = value


@dataclass
class Credential:
    """What the API accepts: `scheme` is bearer, basic, header, query or oauth2."""

    scheme: str
    secret: str = ""
    name: str = ""  # header or query parameter name (header, query schemes)
    user: str = ""  # basic scheme


@dataclass
class ApiState:
    products: dict[str, list[tuple[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    unauthorized: int = 0
    rate_limited: int = 0
    limit_next: int = 0  # answer this many API requests with 429
    retry_after: str = "1"
    tokens_issued: list[str] = field(default_factory=list)
    revoked: set[str] = field(default_factory=set)
    token_lifetime_s: int = 3600
    delay_s: float = 0.0  # each API request takes this long (to make requests overlap)
    active: int = 0
    most_active: int = 0
    seen_queries: list[str] = field(default_factory=list)
    customers: dict[int, dict[str, Any]] = field(default_factory=dict)
    catalog: dict[int, dict[str, Any]] = field(default_factory=dict)
    creates: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    next_id: int = 1000
    on_page: Callable[[int], None] | None = None  # called before page N is answered


class CommerceApi:
    def __init__(self, credential: Credential, tls: ssl.SSLContext | None = None) -> None:
        self.credential = credential
        self.state = ApiState()
        self.lock = threading.Lock()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.api = self
        self._scheme = "http" if tls is None else "https"
        if tls is not None:  # the handshake happens on accept (a refused one drops it)
            self._server.socket = tls.wrap_socket(self._server.socket, server_side=True)

    @property
    def url(self) -> str:
        return f"{self._scheme}://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> CommerceApi:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def revoke_tokens(self) -> None:
        with self.lock:
            self.state.revoked.update(self.state.tokens_issued)

    def rate_limit_next(self, requests: int, retry_after: str = "1") -> None:
        with self.lock:
            self.state.limit_next, self.state.retry_after = requests, retry_after

    def put_customer(self, customer_id: int, modified: datetime, **values: Any) -> None:
        """Create or change a customer, as modified at `modified`."""
        with self.lock:
            record = self.state.customers.setdefault(customer_id, {"id": customer_id})
            record.update(values, date_modified=modified.isoformat())

    def delete_customer(self, customer_id: int) -> None:
        """Delete a customer: it leaves the list, and no modified-since read shows it."""
        with self.lock:
            del self.state.customers[customer_id]

    def list_customers(self, query: dict[str, list[str]]) -> tuple[list[Any], dict[str, str]]:
        after = query.get("modified_after", [None])[0]
        page, size = int(query.get("page", ["1"])[0]), int(query.get("per_page", ["10"])[0])
        if self.state.on_page is not None:
            self.state.on_page(page)
        with self.lock:
            found = sorted(
                (dict(c) for c in self.state.customers.values()
                 if after is None
                 or datetime.fromisoformat(c["date_modified"]) > datetime.fromisoformat(after)),
                key=lambda c: (c["date_modified"], c["id"]),
            )
        chunk = found[(page - 1) * size : page * size]
        headers = {}
        if page * size < len(found):
            headers["Link"] = f'<{self.url}/api/customers?page={page + 1}&per_page={size}' + (
                f"&modified_after={quote(after)}" if after else ""
            ) + '>; rel="next"'
        return chunk, headers

    def catalog_call(self, method: str, path: str, query: dict[str, list[str]], body: Any) -> Any:
        """The named-records catalog (`/api/v3/products`), under the API lock."""
        tail = path[len(CATALOG) :].strip("/")
        if method == "GET":
            sku = query.get("sku", [""])[0]
            return 200, [p for p in self.state.catalog.values() if p["sku"] == sku], {}
        if method == "POST" and not tail:
            if any(p["sku"] == body.get("sku") for p in self.state.catalog.values()):
                return 409, {"code": "product_invalid_sku", "message": "SKU exists"}, {}
            self.state.next_id += 1
            record = {**body, "id": self.state.next_id}
            self.state.catalog[self.state.next_id] = record
            self.state.creates[str(body.get("sku"))] += 1
            return 201, record, {}
        if not tail.isdigit() or int(tail) not in self.state.catalog:
            return 404, {"code": "not_found"}, {}
        if method == "DELETE":
            return 200, self.state.catalog.pop(int(tail)), {}
        _merge(self.state.catalog[int(tail)], body)
        return 200, self.state.catalog[int(tail)], {}

    def bodies(self, sku: str) -> list[tuple[str, Any]]:
        with self.lock:
            return list(self.state.products.get(sku, []))

    # ------------------------------------------------------------ request handling

    def issue_token(self, authorization: str, form: dict[str, list[str]]) -> tuple[int, Any]:
        expected = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
        if authorization != f"Basic {expected}":
            return 401, {"error": "invalid_client"}
        if form.get("grant_type") != ["client_credentials"]:
            return 400, {"error": "unsupported_grant_type"}
        with self.lock:
            token = f"token-{len(self.state.tokens_issued) + 1}"
            self.state.tokens_issued.append(token)
            lifetime = self.state.token_lifetime_s
        return 200, {"access_token": token, "token_type": "Bearer", "expires_in": lifetime}

    def authorized(self, headers: dict[str, str], query: dict[str, list[str]]) -> bool:
        cred = self.credential
        header = {k.lower(): v for k, v in headers.items()}
        if cred.scheme == "oauth2":
            token = header.get("authorization", "").removeprefix("Bearer ")
            with self.lock:
                return token in self.state.tokens_issued and token not in self.state.revoked
        if cred.scheme == "bearer":
            return header.get("authorization") == f"Bearer {cred.secret}"
        if cred.scheme == "basic":
            pair = base64.b64encode(f"{cred.user}:{cred.secret}".encode()).decode()
            return header.get("authorization") == f"Basic {pair}"
        if cred.scheme == "header":
            return header.get(cred.name.lower()) == cred.secret
        return query.get(cred.name) == [cred.secret]

    def answer(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Any:
        parts = urlsplit(path)
        query = parse_qs(parts.query)
        with self.lock:
            self.state.seen_queries.append(parts.query)
            if self.state.limit_next > 0:
                self.state.limit_next -= 1
                self.state.rate_limited += 1
                return 429, {"error": "rate limited"}, {"Retry-After": self.state.retry_after}
        if not self.authorized(headers, query):
            with self.lock:
                self.state.unauthorized += 1
            return 401, {"error": "unauthorized"}, {}
        if method == "GET" and parts.path == "/api/customers":
            records, extra = self.list_customers(query)
            return 200, records, extra
        if parts.path.startswith(CATALOG):
            with self.lock:
                return self.catalog_call(
                    method, parts.path, query, json.loads(body) if body else None
                )
        if not parts.path.startswith(PRODUCTS):
            return 404, {"error": "no such endpoint"}, {}
        sku = unquote(parts.path[len(PRODUCTS) :])
        time.sleep(self.state.delay_s)
        with self.lock:
            self.state.products[sku].append((method, json.loads(body) if body else None))
        return (204 if method == "DELETE" else 200), {"sku": sku}, {}


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    api: CommerceApi


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _body(self) -> bytes:
        length = int(self.headers.get("content-length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, payload: Any, extra: dict[str, str]) -> None:
        data = b"" if status == 204 else json.dumps(payload).encode()
        with contextlib.suppress(OSError):
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            for name, value in extra.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

    def _api(self) -> None:
        api = self.server.api
        body = self._body()
        with api.lock:
            api.state.active += 1
            api.state.most_active = max(api.state.most_active, api.state.active)
        try:
            if self.path == "/oauth/token":
                form = parse_qs(body.decode())
                status, payload = api.issue_token(self.headers.get("authorization", ""), form)
                self._send(status, payload, {})
                return
            self._send(*api.answer(self.command, self.path, dict(self.headers.items()), body))
        finally:
            with api.lock:
                api.state.active -= 1

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _api
