"""The pure parts of polling: Link headers, the modified-since value, times."""

from __future__ import annotations

import pytest

from cdc_bridge.errors import PollError
from cdc_bridge.inbound.poll import next_link, parse_time, since


@pytest.mark.parametrize(
    ("header", "target"),
    [
        ('<https://api.test/c?page=2>; rel="next"', "https://api.test/c?page=2"),
        ('<https://api.test/c?page=1>; rel="prev", <https://api.test/c?page=3>; rel="next"',
         "https://api.test/c?page=3"),
        ("<https://api.test/c?page=4>; rel=next", "https://api.test/c?page=4"),
        ('<https://api.test/c?page=1>; rel="prev"', None),
        (None, None),
    ],
)
def test_next_link_follows_rel_next_only(header: str | None, target: str | None) -> None:
    assert next_link(header) == target


def test_since_starts_the_overlap_before_the_cursor_and_keeps_the_offset() -> None:
    assert since("2026-11-30T10:00:05+00:00", 5) == "2026-11-30T10:00:00+00:00"
    assert since("2026-11-30T12:00:05+02:00", 5.5) == "2026-11-30T11:59:59.500000+02:00"
    assert since(None, 5) is None


def test_times_without_an_offset_are_utc_and_garbage_is_refused() -> None:
    assert parse_time("2026-11-30T10:00:00") == parse_time("2026-11-30T10:00:00Z")
    with pytest.raises(PollError, match="not an ISO 8601 time"):
        parse_time("yesterday")
