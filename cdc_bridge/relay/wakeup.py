"""The relay's side of the wake-up handshake with the capture triggers.

A transaction that sends NOTIFY takes a cluster-wide lock from pre-commit through its
commit flush, so writers that all notify commit one at a time. They therefore notify only
while a relay listens: an idle relay holds the schema's listening key (an advisory lock,
`listening_key`) on its read connection, and a writer's capture sends NOTIFY only
when it cannot take that key shared (`pg_try_advisory_xact_lock_shared` in the trigger's
WHEN clause). The key dies with the relay's session, so a relay that stops, crashes or
loses its connection leaves writers notifying nobody for no longer than the server takes
to see the session end: with no relay, nobody notifies.

While batches are in flight the relay releases the key (it reads the outbox again by
itself). A writer that found the key free keeps it shared until it commits, so when the
relay wants to listen again it waits for exactly those writers, then reads once more:
every change is then either read or announced by a NOTIFY. Writers that start while the
relay waits for the key find it taken and notify.
"""

from __future__ import annotations

from typing import Any

import psycopg

from cdc_bridge import sql as queries
from cdc_bridge.capture.function import listening_key

IN_DOUBT_RECHECK_S = 0.02
LISTEN_WAIT = "200ms"  # longest wait for the writers that wrote while nobody listened


class Wakeup:
    def __init__(self, schema: str) -> None:
        self.key = listening_key(schema)
        self.listening = False

    async def busy(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """Batches are in flight: writers need not notify."""
        if self.listening:
            await conn.execute(queries.query("relay_stop_listening"), {"key": self.key})
            self.listening = False

    async def idle(self, conn: psycopg.AsyncConnection[Any]) -> float | None:
        """Caught up with nothing in flight.

        Returns None when waiting for a NOTIFY is safe, else how long to wait before
        reading the outbox again.
        """
        if self.listening:
            return None
        try:
            await conn.execute(
                queries.query("relay_listen"), {"key": self.key, "timeout": LISTEN_WAIT}
            )
        except psycopg.errors.LockNotAvailable:
            # A writer that wrote while nobody listened is still open (a long transaction,
            # or a prepared one): read again soon, and try again.
            return IN_DOUBT_RECHECK_S
        self.listening = True
        return 0.0  # read once more: what those writers committed came with no NOTIFY
