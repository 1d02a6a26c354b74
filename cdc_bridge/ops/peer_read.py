"""Reading the peer's copy of a table, for reconcile.

The bridge adapter pages through the peer's signed read endpoint (`/v1/read`), in key
order. The REST adapter can only GET one row per key through the table's `rest.read`
template, so it cannot list rows the peer has and this side lacks.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from cdc_bridge.config import BridgeConfig, TableSpec
from cdc_bridge.db import mask_dsn
from cdc_bridge.errors import PeerReadError, UserError
from cdc_bridge.peer import codec
from cdc_bridge.peer.auth import build_auth
from cdc_bridge.peer.client import fill_path, tls_context  # the relay's own rules
from cdc_bridge.peer.protocol import READ_PATH, ReadRequest, Signer, dumps

_KEPT_BODY = 300


def loads(body: bytes | str) -> Any:
    """JSON with exact numbers (nothing is rounded) and no limit on nesting."""
    return codec.loads(body)


@dataclass(frozen=True)
class Page:
    rows: list[dict[str, Any]]
    more: bool


class PagedReader(Protocol):
    def page(self, after: dict[str, Any] | None, limit: int) -> Page: ...

    def close(self) -> None: ...


class KeyedReader(Protocol):
    def row(self, key: dict[str, Any]) -> dict[str, Any] | None: ...

    def close(self) -> None: ...


def _failure(what: str, url: str, response: httpx.Response) -> PeerReadError:
    body = response.content[:_KEPT_BODY].decode("utf-8", errors="replace")
    return PeerReadError(
        f"reading {what} from the peer at {mask_dsn(url)} failed: HTTP "
        f"{response.status_code}: {body}"
    )


def _transport_failure(what: str, url: str, exc: httpx.HTTPError) -> PeerReadError:
    detail = str(exc).strip().splitlines()
    reason = f"{type(exc).__name__}: {detail[0]}" if detail else type(exc).__name__
    return PeerReadError(
        f"reading {what} from the peer at {mask_dsn(url)} failed: {mask_dsn(reason)}; "
        "fix: check that the peer's `cdc-bridge serve` is running and reachable"
    )


class BridgeReader:
    """Key-ordered pages from the peer's `/v1/read`, signed like the relay's batches."""

    def __init__(self, config: BridgeConfig, spec: TableSpec) -> None:
        if not config.peer.secrets:  # the config validator already insists on it
            raise UserError("peer.secret is not set; fix: set it to the peer's shared secret")
        self._signer = Signer(config.peer.secrets)
        self._system, self._label, self._url = config.system, spec.label, config.peer.url
        self._http = httpx.Client(
            base_url=config.peer.url,
            timeout=config.peer.timeout_s,
            verify=tls_context(config.peer) or True,
        )

    def page(self, after: dict[str, Any] | None, limit: int) -> Page:
        request = ReadRequest(source=self._system, table=self._label, after=after, limit=limit)
        body = dumps(request)
        headers = self._signer.headers(f"read-{uuid.uuid4().hex}", body)
        headers["content-type"] = "application/json"
        try:
            response = self._http.post(READ_PATH, content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise _transport_failure(self._label, self._url, exc) from exc
        if response.status_code != 200:
            raise _failure(self._label, self._url, response)
        data = loads(response.content)
        return Page(rows=list(data["rows"]), more=bool(data["more"]))

    def close(self) -> None:
        self._http.close()


class RestReader:
    """One GET per key through `rest.read`; 404 means the peer does not have the row."""

    def __init__(
        self, config: BridgeConfig, spec: TableSpec, environ: Mapping[str, str] | None = None
    ) -> None:
        read = spec.rest.read if spec.rest else None
        if read is None or read.method != "GET":
            raise UserError(
                f"{spec.label} has no `rest.read` GET template; fix: add e.g. "
                f'rest: {{read: "GET /api/items/{{{spec.key[0]}}}"}} to the table'
            )
        self._path, self._label, self._url = read.path, spec.label, config.peer.url
        # The peer's names for our fields, turned back into ours for the comparison.
        renames = spec.rest.rename if spec.rest else {}
        self._ours = {theirs: ours for ours, theirs in renames.items()}
        peer = config.peer
        self._http = httpx.Client(
            base_url=peer.url,
            timeout=peer.timeout_s,
            headers={"accept": "application/json"},
            auth=build_auth(peer, os.environ if environ is None else environ),
            verify=tls_context(peer) or True,
        )

    def row(self, key: dict[str, Any]) -> dict[str, Any] | None:
        try:
            response = self._http.get(fill_path(self._path, key))
        except httpx.HTTPError as exc:
            raise _transport_failure(self._label, self._url, exc) from exc
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise _failure(self._label, self._url, response)
        data = loads(response.content)
        if not isinstance(data, dict):
            raise PeerReadError(
                f"the peer answered GET {fill_path(self._path, key)} with JSON that is not an "
                "object; fix: point rest.read at the endpoint returning one record"
            )
        return {self._ours.get(str(name), str(name)): value for name, value in data.items()}

    def close(self) -> None:
        self._http.close()
