"""The peer application's own webhooks (`inbound.webhooks`): verify, map, apply.

A webhook is turned into one change of the bridge protocol and applied by the same
`Applier` as a bridge batch, so the same rules hold: the table must be one the peer owns
(or the fields must be), the guard's origin is the peer, conflicts are settled by the
table's policy, and an idempotency key is applied once. The key is the webhook's delivery
id when the application sends one, else a hash of the body: a replayed webhook is a
duplicate either way.

Checked before anything touches the database: the body's size (413), its signature and
timestamp (401), then that it is a JSON object holding every key field (422).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from jsonpointer import JsonPointerException, resolve_pointer

from cdc_bridge.config import TableSpec, WebhookRoute, WebhookSignature
from cdc_bridge.errors import CodecError, Refused, UserError
from cdc_bridge.peer import codec
from cdc_bridge.peer.protocol import Batch, Change, Op

_ABSENT = object()


@dataclass(frozen=True)
class Webhooks:
    """One configured route, with its secret read from the environment."""

    route: WebhookRoute
    spec: TableSpec
    secret: bytes

    @classmethod
    def build(cls, route: WebhookRoute, spec: TableSpec, environ: Mapping[str, str]) -> Webhooks:
        name = route.signature.secret_env
        secret = environ.get(name)
        if not secret:
            raise UserError(
                f"inbound.webhooks ({route.path}) signature.secret_env names {name}, which is "
                f"not set; fix: export {name}=... (the secret the application signs with)"
            )
        return cls(route, spec, secret.encode())


def expected_signature(signature: WebhookSignature, secret: bytes, signed: bytes) -> str:
    digest = hmac.new(secret, signed, signature.algorithm).digest()
    encoded = base64.b64encode(digest).decode() if signature.encoding == "base64" else digest.hex()
    return signature.prefix + encoded


def verify(
    signature: WebhookSignature,
    secret: bytes,
    headers: Mapping[str, str],
    body: bytes,
    tolerance_s: float,
    now: float | None = None,
) -> None:
    """Raise Refused(401) unless the headers carry a valid, timely signature."""
    given = headers.get(signature.header.lower())
    if not given:
        raise Refused(401, f"no {signature.header} header: the webhook is not signed")
    signed = body
    if signature.timestamp_header is not None:
        stamp = headers.get(signature.timestamp_header.lower(), "")
        if not stamp.isdigit():
            raise Refused(401, f"no numeric {signature.timestamp_header} header")
        current = time.time() if now is None else now
        if abs(current - int(stamp)) > tolerance_s:
            raise Refused(401, f"{signature.timestamp_header} is outside the tolerance")
        signed = stamp.encode() + b"." + body
    expected = expected_signature(signature, secret, signed)
    if not hmac.compare_digest(given.strip().encode(), expected.encode()):
        raise Refused(401, f"{signature.header} does not match the body")


def change_of(hooks: Webhooks, headers: Mapping[str, str], body: bytes, peer: str) -> Batch:
    """The webhook as a one-change batch from the peer (the Applier's input)."""
    try:
        document = codec.loads(body)  # exact numbers: an amount of 12.50 stays 12.50
    except CodecError as exc:
        raise Refused(422, f"body is {exc}") from None
    if not isinstance(document, dict):
        raise Refused(422, "body is not a JSON object")
    route = hooks.route
    fields = {column: _pointed(document, column, ptr) for column, ptr in route.fields.items()}
    missing = [k for k in hooks.spec.entity_key if fields.get(k, _ABSENT) in (_ABSENT, None)]
    if missing:
        raise Refused(
            422, f"{hooks.spec.label}: key field(s) {', '.join(missing)} not in the webhook body"
        )
    present = {c: v for c, v in fields.items() if v is not _ABSENT}
    op = _op_of(route, headers)
    key = {k: present[k] for k in hooks.spec.entity_key}
    delivery = headers.get(route.delivery_id_header.lower()) if route.delivery_id_header else None
    idempotency = f"webhook:{route.path}:{delivery or hashlib.sha256(body).hexdigest()}"
    change = Change(
        idempotency_key=idempotency[:200],
        entity=hooks.spec.entity,
        op=op,
        key=key,
        fields=None if op is Op.DELETE else present,
        committed_at=datetime.now(UTC),
        origin=peer,
    )
    return Batch(source=peer, batch_id=idempotency[:200], changes=[change])


def _pointed(document: dict[str, Any], column: str, pointer: str) -> Any:
    try:
        return resolve_pointer(document, pointer, _ABSENT)
    except JsonPointerException as exc:
        raise Refused(422, f"field {column} ({pointer}): {exc}") from None


def _op_of(route: WebhookRoute, headers: Mapping[str, str]) -> Op:
    """Delete when the op header says so; otherwise the record's new state (an upsert)."""
    if route.op_header is not None and headers.get(route.op_header.lower()) in route.delete_when:
        return Op.DELETE
    return Op.UPDATE
