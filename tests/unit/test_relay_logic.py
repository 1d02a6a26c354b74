"""Pure parts of the relay: lanes, verdicts, backoff, Retry-After, REST paths."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import orjson

from cdc_bridge.outbox import Failure
from cdc_bridge.peer.bridge import batch_body, fast_results, read_results
from cdc_bridge.peer.endpoint import Answer, Delivery, Outgoing
from cdc_bridge.peer.http import answer_reason, is_transient_status, retry_after_seconds
from cdc_bridge.peer.protocol import Batch, ResultStatus
from cdc_bridge.peer.rest import fill_path
from cdc_bridge.relay.daemon import InFlight, Part, Shipment, judge, settled
from cdc_bridge.relay.retry import backoff_delay

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def change(id_: int, key: int, table: str = "public.t") -> Outgoing:
    return Outgoing(
        id=id_,
        idempotency_key=f"erp:9:{id_}",
        table=table,
        op="U",
        key={"id": key},
        key_text=f'{{"id": {key}}}',
        fields={"id": key, "v": id_},
        old=None,
        committed_at=NOW,
        origin="erp",
        txid="9",
    )


def result(c: Outgoing, status: ResultStatus) -> Answer:
    return Answer(status)


def test_per_change_rejection_fails_that_change_and_leaves_skipped_ones() -> None:
    a1, a2, b1 = change(1, 1), change(2, 1), change(3, 2)
    delivery = Delivery(
        results={
            1: result(a1, ResultStatus.REJECTED),
            2: result(a2, ResultStatus.SKIPPED),
            3: result(b1, ResultStatus.APPLIED),
        },
        status=200,
    )
    verdict = judge(delivery, [a1, a2, b1], frozenset())
    assert verdict.acked == {3: "applied"}
    assert verdict.failures == [Failure(1, "rejected by the peer", 200, None)]
    assert verdict.retry == []


def test_permanent_http_failure_fails_every_change_so_no_transaction_half_fails() -> None:
    sent = [change(1, 1), change(2, 2), change(3, 1)]
    delivery = Delivery(status=422, error="HTTP 422", permanent=True)
    verdict = judge(delivery, sent, frozenset())
    assert [f.id for f in verdict.failures] == [1, 2, 3]
    assert verdict.retry == [] and verdict.acked == {}


def test_transient_failure_retries_what_has_no_result_and_records_handoffs() -> None:
    sent = [change(1, 1, "public.orders"), change(2, 2, "public.orders")]
    delivery = Delivery(results={1: result(sent[0], ResultStatus.APPLIED)}, transient=True)
    verdict = judge(delivery, sent, frozenset({"public.orders"}))
    assert verdict.retry == [sent[1]]
    assert verdict.handoffs == [("public.orders", '{"id": 1}')]  # (table, key text)


def test_backoff_grows_is_capped_and_honours_retry_after() -> None:
    assert backoff_delay(0, 1, 60, rand=lambda: 0.0) == 0.5
    assert backoff_delay(3, 1, 60, rand=lambda: 1.0) == 8
    assert backoff_delay(30, 1, 60, rand=lambda: 1.0) == 60
    assert backoff_delay(0, 1, 60, retry_after_s=7, rand=lambda: 0.0) == 7
    assert backoff_delay(0, 1, 60, retry_after_s=3600, rand=lambda: 0.0) == 60


def test_retry_after_as_seconds_or_http_date() -> None:
    assert retry_after_seconds("12") == 12
    assert retry_after_seconds("Thu, 01 Jan 2026 00:00:30 GMT", now=NOW.timestamp()) == 30
    assert retry_after_seconds("soon") is None
    assert retry_after_seconds(None) is None


def test_transient_statuses() -> None:
    assert [s for s in (400, 404, 408, 409, 422, 429, 500, 503) if is_transient_status(s)] == [
        408,
        429,
        500,
        503,
    ]


def test_rest_path_quotes_key_values() -> None:
    assert fill_path("/api/products/{sku}", {"sku": "A/B c"}) == "/api/products/A%2FB%20c"


def test_batch_body_is_a_valid_protocol_batch() -> None:
    body = batch_body("erp", "b1", [change(1, 1)])
    batch = Batch.model_validate_json(body)
    assert batch.changes[0].idempotency_key == "erp:9:1"
    assert batch.changes[0].op.value == "update"
    assert batch.changes[0].committed_at == NOW
    assert batch.changes[0].txid == "9"


def _answer(body: object) -> Delivery:
    sent = [change(1, 1), change(2, 2)]
    return read_results(orjson.dumps(body), sent, time.perf_counter())


def test_a_plain_answer_is_read_without_the_validator() -> None:
    body = {
        "protocol": "cdc-bridge/2",
        "results": [
            {"idempotency_key": "erp:9:1", "status": "applied"},
            {"idempotency_key": "erp:9:2", "status": "rejected", "reason": "too long"},
        ],
    }
    assert fast_results(orjson.dumps(body)) is not None
    delivery = _answer(body)
    assert delivery.results == {
        1: Answer(ResultStatus.APPLIED),
        2: Answer(ResultStatus.REJECTED, "too long"),
    }
    assert not delivery.transient and delivery.detail is not None


def test_an_odd_answer_is_validated_in_full_and_refused() -> None:
    odd: list[object] = [
        {"protocol": "cdc-bridge/3", "results": []},
        {"results": [{"idempotency_key": "erp:9:1", "status": "done"}]},
        {"results": [{"idempotency_key": "erp:9:1", "status": "applied", "extra": 1}]},
        {"results": [{"idempotency_key": 1, "status": "applied"}]},
        {"results": [{"idempotency_key": "erp:9:1", "status": "applied", "reason": 3}]},
        {"results": "nope"},
        ["results"],
        # Values of the wrong kind where a status or key is looked up (unhashable).
        {"results": [{"idempotency_key": "erp:9:1", "status": []}]},
        {"results": [{"idempotency_key": "erp:9:1", "status": {"applied": 1}}]},
        {"results": [{"idempotency_key": ["erp:9:1"], "status": "applied"}]},
        {"results": [{"idempotency_key": "erp:9:1", "status": "applied", "resolution": []}]},
        {"protocol": ["cdc-bridge/2"], "results": []},
    ]
    for body in odd:
        assert fast_results(orjson.dumps(body)) is None
        delivery = _answer(body)
        assert delivery.transient and delivery.results == {}
        assert "not a batch response" in (delivery.error or "")
    assert fast_results(b"not json") is None


def test_the_reason_of_a_refusal_is_serve_s_error_field_or_the_answer_s_text() -> None:
    assert answer_reason(b'{"error": "no valid signature (wrong secret)"}') == (
        "no valid signature (wrong secret)"
    )
    assert answer_reason(b"Forbidden:\n  token expired") == "Forbidden: token expired"
    assert answer_reason(b'{"detail": "x"}') == '{"detail": "x"}'
    assert answer_reason(b"x" * 400, limit=20) == "x" * 17 + "..."
    assert answer_reason(b"") == ""


def test_a_batch_is_settled_only_when_the_peer_acknowledged_every_change() -> None:
    sent = [change(1, 1), change(2, 2)]
    applied = {1: Answer(ResultStatus.APPLIED), 2: Answer(ResultStatus.DUPLICATE)}
    assert settled(judge(Delivery(results=applied, status=200), sent, frozenset()), sent)
    some = {1: Answer(ResultStatus.APPLIED), 2: Answer(ResultStatus.SKIPPED)}
    assert not settled(judge(Delivery(results=some, status=200), sent, frozenset()), sent)
    refused = {1: Answer(ResultStatus.APPLIED), 2: Answer(ResultStatus.REJECTED)}
    assert not settled(judge(Delivery(results=refused, status=200), sent, frozenset()), sent)
    away = Delivery(results={1: Answer(ResultStatus.APPLIED)}, status=503, transient=True)
    assert not settled(judge(away, sent, frozenset()), sent)
    handed = judge(Delivery(results=applied, status=200), sent, frozenset({"public.t"}))
    assert not settled(handed, sent)


def test_a_settled_batch_frees_its_tokens_at_once_and_its_ids_when_released() -> None:
    flight = InFlight()
    first = Shipment([Part([change(1, 1)], frozenset({("public.t", '{"id": 1}')}))])
    flight.hold(first)
    flight.settle(first)
    assert flight.tokens == set() and flight.ids == {1} and flight.finished.is_set()
    # A later batch over the same record takes the token while the first records.
    second = Shipment([Part([change(2, 1)], frozenset({("public.t", '{"id": 1}')}))])
    flight.hold(second)
    flight.release(first)
    assert flight.tokens == {("public.t", '{"id": 1}')} and flight.ids == {2}
    flight.release(second)
    assert flight.tokens == set() and flight.ids == set()
