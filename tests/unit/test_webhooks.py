"""Webhook signatures as applications send them, and webhook routes in the config."""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Any

import pytest
import yaml

from cdc_bridge.config import WebhookSignature, parse_config
from cdc_bridge.errors import ConfigError, Refused
from cdc_bridge.inbound.webhooks import verify
from tests.helpers import FIXTURES

SECRET = b"hook-secret"
BODY = b'{"id": 1, "total": "12.50"}'
NOW = 1_700_000_000


def hmac_of(algorithm: str, message: bytes) -> bytes:
    return hmac.new(SECRET, message, getattr(hashlib, algorithm)).digest()


CASES = [
    # (how the application signs, the header it sends)
    ({"header": "X-WC-Webhook-Signature"}, base64.b64encode(hmac_of("sha256", BODY)).decode()),
    ({"header": "X-Shopify-Hmac-Sha256"}, base64.b64encode(hmac_of("sha256", BODY)).decode()),
    (
        {"header": "X-Hub-Signature-256", "encoding": "hex", "prefix": "sha256="},
        "sha256=" + hmac_of("sha256", BODY).hex(),
    ),
    (
        {"header": "X-Hub-Signature", "algorithm": "sha1", "encoding": "hex", "prefix": "sha1="},
        "sha1=" + hmac_of("sha1", BODY).hex(),
    ),
]


def signature(**options: Any) -> WebhookSignature:
    return WebhookSignature(secret_env="HOOK", **options)


@pytest.mark.parametrize(("options", "sent"), CASES, ids=[c[0]["header"] for c in CASES])
def test_each_signing_scheme_verifies_and_a_changed_body_does_not(
    options: dict[str, Any], sent: str
) -> None:
    scheme = signature(**options)
    headers = {options["header"].lower(): sent}
    verify(scheme, SECRET, headers, BODY, tolerance_s=300)
    with pytest.raises(Refused) as refused:
        verify(scheme, SECRET, headers, BODY.replace(b"12.50", b"0.01"), tolerance_s=300)
    assert refused.value.status == 401


def test_a_timestamped_signature_covers_the_timestamp_and_expires() -> None:
    scheme = signature(header="X-Sig", timestamp_header="X-Time", encoding="hex")
    sent = hmac_of("sha256", f"{NOW}.".encode() + BODY).hex()
    headers = {"x-sig": sent, "x-time": str(NOW)}
    verify(scheme, SECRET, headers, BODY, tolerance_s=300, now=NOW + 299)
    with pytest.raises(Refused, match="outside the tolerance"):
        verify(scheme, SECRET, headers, BODY, tolerance_s=300, now=NOW + 301)
    with pytest.raises(Refused, match="does not match"):  # a replay under a new timestamp
        verify(scheme, SECRET, {**headers, "x-time": str(NOW + 1)}, BODY, 300, now=NOW)


def test_an_unsigned_webhook_is_refused() -> None:
    with pytest.raises(Refused, match="not signed"):
        verify(signature(header="X-Sig"), SECRET, {}, BODY, tolerance_s=300)


def route(**changes: Any) -> dict[str, Any]:
    return {
        "path": "/hooks/invoices",
        "table": "public.invoices",
        "signature": {"header": "X-Sig", "secret_env": "HOOK"},
        "fields": {"id": "/id", "amount": "/amount"},
        **changes,
    }


@pytest.mark.parametrize(
    ("changes", "names"),
    [
        ({"table": "public.customers"}, "inbound.webhooks.0.table public.customers receives"),
        ({"table": "public.nowhere"}, "inbound.webhooks.0.table 'public.nowhere' is not in"),
        ({"fields": {"amount": "/amount"}}, "inbound.webhooks.0.fields lacks key field(s) id"),
        ({"fields": {"id": "id"}}, "is not a JSON pointer"),
        ({"path": "/v1/batches"}, "is not a free route"),
    ],
)
def test_bad_webhook_routes_are_refused_naming_the_key(
    changes: dict[str, Any], names: str
) -> None:
    data = yaml.safe_load((FIXTURES / "erp.yaml").read_text())
    data["inbound"]["webhooks"] = [route(**changes)]
    env = {"ERP_DATABASE_URL": "postgresql://u@h/d", "BRIDGE_SECRET": "s"}
    with pytest.raises(ConfigError) as error:
        parse_config(yaml.safe_dump(data), "erp.yaml", env)
    assert names in str(error.value)
