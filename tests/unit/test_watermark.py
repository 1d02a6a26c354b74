"""The receiver's reading of idempotency keys against a sender's watermark (pure)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from cdc_bridge.inbound.apply import below, key_origin


def test_a_bridge_key_gives_its_source_and_txid() -> None:
    assert key_origin("erp:771:42") == ("erp", 771)
    # A system name may itself hold colons: the txid and id are the last two parts.
    assert key_origin("eu:erp:771:42") == ("eu:erp", 771)


def test_keys_of_another_shape_have_no_origin() -> None:
    assert key_origin("order-17") is None
    assert key_origin("erp:abc:42") is None
    assert key_origin("erp:771:") is None


@given(st.integers(0, 2**62), st.integers(0, 2**62))
def test_only_a_lower_txid_of_the_same_sender_is_below(txid: int, watermark: int) -> None:
    assert below("erp", txid, "erp", watermark) is (txid < watermark)
    assert below("crm", txid, "erp", watermark) is False
    assert below("erp", txid, "erp", None) is False
    assert below(None, None, "erp", watermark) is False
