"""The pure rules behind the relay's /healthz (the probe and the endpoint are integration)."""

from __future__ import annotations

from cdc_bridge.config import RelayConfig
from cdc_bridge.relay.health import Observed, problems, report

RELAY = RelayConfig(lag_threshold_s=300, peer_unreachable_grace_s=60)


def observed(**changes: object) -> Observed:
    base: dict[str, object] = {
        "role": "leader",
        "database_error": None,
        "peer_unreachable_s": None,
        "oldest_pending_s": None,
    }
    base.update(changes)
    return Observed(**base)  # type: ignore[arg-type]


def test_nothing_wrong_is_healthy() -> None:
    body = report(observed(oldest_pending_s=12.0), RELAY)
    assert body["healthy"] is True and body["problems"] == []
    assert body["peer_reachable"] is True and body["database_reachable"] is True


def test_a_peer_outage_within_the_grace_is_healthy_and_past_it_is_not() -> None:
    assert problems(observed(peer_unreachable_s=60.0), RELAY) == []
    assert problems(observed(peer_unreachable_s=61.0), RELAY) == [
        "peer unreachable for 61s (relay.peer_unreachable_grace_s: 60s)"
    ]
    body = report(observed(peer_unreachable_s=5.0), RELAY)
    assert body["healthy"] is True and body["peer_reachable"] is False


def test_a_backlog_older_than_the_lag_threshold_is_unhealthy() -> None:
    assert problems(observed(oldest_pending_s=300.0), RELAY) == []
    assert problems(observed(oldest_pending_s=301.0), RELAY) == [
        "oldest pending change is 301s old (relay.lag_threshold_s: 300s)"
    ]


def test_every_problem_is_listed_and_an_unreachable_database_is_one() -> None:
    body = report(
        observed(database_error="connection refused", peer_unreachable_s=90.0,
                 oldest_pending_s=900.0),
        RELAY,
    )
    assert body["healthy"] is False and body["database_reachable"] is False
    assert [p.split(":")[0].split(" for ")[0].split(" is ")[0] for p in body["problems"]] == [
        "database unreachable", "peer unreachable", "oldest pending change"
    ]
