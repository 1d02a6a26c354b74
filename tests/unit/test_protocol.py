"""Signing and the batch models: pure functions, no network."""

from __future__ import annotations

import pytest

from cdc_bridge.errors import SignatureError
from cdc_bridge.peer.protocol import Batch, ResultStatus, Signer, dumps


def sample_body() -> bytes:
    batch = Batch.model_validate(
        {
            "source": "erp",
            "batch_id": "b1",
            "changes": [
                {
                    "idempotency_key": "erp:1:1",
                    "entity": "public.customers",
                    "op": "insert",
                    "key": {"id": 1},
                    "fields": {"id": 1, "name": "Ann"},
                    "committed_at": "2026-01-01T00:00:00Z",
                    "origin": "erp",
                }
            ],
        }
    )
    return dumps(batch)


def test_signature_round_trip() -> None:
    body = sample_body()
    headers = Signer("s3cret").headers("b1", body, now=1_000_000)
    assert Signer("s3cret").verify(headers, body, tolerance_s=300, now=1_000_010) == "b1"


@pytest.mark.parametrize(
    ("secret", "tamper", "now", "message"),
    [
        ("other", False, 1_000_000, "no valid signature"),
        ("s3cret", True, 1_000_000, "no valid signature"),
        ("s3cret", False, 1_000_301, "outside the 300s tolerance"),
    ],
)
def test_signature_refusals(secret: str, tamper: bool, now: float, message: str) -> None:
    body = sample_body()
    headers = Signer("s3cret").headers("b1", body, now=1_000_000)
    checked = body.replace(b"Ann", b"Bob") if tamper else body
    with pytest.raises(SignatureError, match=message):
        Signer(secret).verify(headers, checked, tolerance_s=300, now=now)


def test_rotation_signs_with_the_first_secret_and_accepts_any_listed() -> None:
    body = sample_body()
    during = Signer(["new-secret", "old-secret"])
    signed = during.headers("b1", body, now=1_000_000)
    # It signs with the first only: a receiver that knows just the old secret refuses.
    assert Signer("new-secret").verify(signed, body, tolerance_s=300, now=1_000_000) == "b1"
    with pytest.raises(SignatureError, match="no valid signature"):
        Signer("old-secret").verify(signed, body, tolerance_s=300, now=1_000_000)
    # It accepts what a sender still on either secret signs.
    for sender in (Signer("old-secret"), Signer(["old-secret", "new-secret"])):
        headers = sender.headers("b1", body, now=1_000_000)
        assert during.verify(headers, body, tolerance_s=300, now=1_000_000) == "b1"
    with pytest.raises(SignatureError, match="no valid signature"):
        during.verify(Signer("third").headers("b1", body, now=1_000_000), body, 300, 1_000_000)


def test_any_of_several_signatures_in_one_header_may_match() -> None:
    """Standard Webhooks: `webhook-signature` holds space-separated `v1,<sig>` entries."""
    body = sample_body()
    good = Signer("s3cret").headers("b1", body, now=1_000_000)
    stale = Signer("retired").headers("b1", body, now=1_000_000)
    signatures = f"{stale['webhook-signature']} {good['webhook-signature']}"
    both = {**good, "webhook-signature": signatures}
    assert Signer("s3cret").verify(both, body, tolerance_s=300, now=1_000_000) == "b1"
    with pytest.raises(SignatureError, match="no valid signature"):
        Signer("s3cret").verify(
            {**good, "webhook-signature": stale["webhook-signature"]}, body, 300, 1_000_000
        )


def test_missing_headers_are_refused() -> None:
    with pytest.raises(SignatureError, match="missing"):
        Signer("s").verify({}, b"{}", tolerance_s=300)


def test_only_applied_duplicate_and_resolved_acknowledge() -> None:
    acknowledged = {s for s in ResultStatus if s.acknowledged}
    assert acknowledged == {
        ResultStatus.APPLIED,
        ResultStatus.DUPLICATE,
        ResultStatus.CONFLICT_RESOLVED,
    }


def batch_naming_a_table(protocol: str) -> dict[str, object]:
    """A batch whose change names its table as v1 did."""
    change = {
        "idempotency_key": "erp:1:1",
        "table": "public.customers",
        "op": "delete",
        "key": {"id": 1},
        "committed_at": "2026-01-01T00:00:00Z",
        "origin": "erp",
    }
    return {"protocol": protocol, "source": "erp", "batch_id": "b1", "changes": [change]}


def test_a_v1_batch_names_a_table_and_is_read_as_that_entity() -> None:
    batch = Batch.model_validate(batch_naming_a_table("cdc-bridge/1"))
    assert batch.protocol == "cdc-bridge/1"
    assert [c.entity for c in batch.changes] == ["public.customers"]


def test_a_v2_batch_naming_a_table_is_refused() -> None:
    with pytest.raises(ValueError, match="entity"):
        Batch.model_validate(batch_naming_a_table("cdc-bridge/2"))
