"""Backoff with jitter, and logging an outage once instead of once per try."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable


def backoff_delay(
    attempt: int,
    initial_s: float,
    max_s: float,
    retry_after_s: float | None = None,
    rand: Callable[[], float] = random.random,
) -> float:
    """Exponential backoff with "equal jitter": between half and all of the step.

    A `Retry-After` from the peer is honoured, capped at `max_s` so that a wrong
    header cannot stall delivery for longer than the configured maximum.
    """
    step = min(max_s, initial_s * 2.0 ** min(attempt, 32))
    delay = step / 2 + rand() * step / 2
    if retry_after_s is not None:
        delay = max(delay, min(retry_after_s, max_s))
    return delay


class Outage:
    """Logs the start and the end of an outage, not every failed try in between."""

    def __init__(self, logger: logging.Logger, what: str) -> None:
        self._logger = logger
        self._what = what
        self._since: float | None = None
        self.tries = 0

    @property
    def ongoing(self) -> bool:
        return self._since is not None

    @property
    def lasted_s(self) -> float | None:
        """How long the ongoing outage has lasted; None when there is none."""
        return None if self._since is None else time.monotonic() - self._since

    def failed(self, error: str) -> None:
        self.tries += 1
        if self._since is None:
            self._since = time.monotonic()
            self._logger.warning(
                "%s unreachable, retrying with backoff: %s",
                self._what,
                error,
                extra={"event": "outage_start", "target": self._what},
            )

    def recovered(self) -> None:
        if self._since is None:
            return
        lasted = time.monotonic() - self._since
        self._logger.info(
            "%s reachable again after %.1fs (%d tries)",
            self._what,
            lasted,
            self.tries,
            extra={"event": "outage_end", "target": self._what, "duration_s": round(lasted, 3)},
        )
        self._since, self.tries = None, 0
