"""The handoff race: an edit the guard allowed, made while the relay was recording the
handoff of its row, still ships.

The handoff's recording is held back deterministically: the test holds a lock on the
`handoffs` table that the relay's recording transaction waits for. The edit is made
while the relay's transaction is open (its `now()` is older than the edit) and the
handoff is not yet committed (the guard cannot see it, so it allows the edit).
"""

from __future__ import annotations

from decimal import Decimal

import psycopg
import pytest
import yaml

from cdc_bridge.config import parse_config
from tests.helpers import install
from tests.peer import PeerServer, record_of
from tests.relay_support import (
    config_text,
    relay_config,
    running_relay,
    wait_drained,
    wait_until,
)

WAITING_FOR_HANDOFFS = """
SELECT count(*) FROM pg_locks l
WHERE l.relation = 'cdc_bridge.handoffs'::regclass AND NOT l.granted
"""


def test_edit_made_while_the_handoff_is_being_recorded_ships(db: str, peer: PeerServer) -> None:
    config = relay_config(db, peer.url)
    install(config)
    record = record_of("public.orders", {"id": 100})
    with psycopg.connect(db, autocommit=True) as app, psycopg.connect(db) as holder:
        holder.execute("LOCK TABLE cdc_bridge.handoffs IN EXCLUSIVE MODE")
        with running_relay(config):
            app.execute("INSERT INTO orders VALUES (100, NULL, 42.00, 'new')")
            wait_until(
                lambda: holder.execute(WAITING_FOR_HANDOFFS).fetchone() == (1,),
                what="the relay to wait on recording the handoff",
            )
            # The handoff is not committed: the guard allows this edit, as it must.
            app.execute("UPDATE orders SET total = 45.00 WHERE id = 100")
            holder.commit()  # releases the lock: the handoff is recorded now
            wait_drained(db)
            # From now on the ERP owns the order: the guard refuses the shop's edits.
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                app.execute("UPDATE orders SET total = 1 WHERE id = 100")
    results = app_results(db)
    assert results == [("I", "applied"), ("U", "applied")]
    totals = [Decimal(str(c["fields"]["total"])) for c in peer.state.applied[record]]
    assert totals == [Decimal("42.00"), Decimal("45.00")]


def app_results(dsn: str) -> list[tuple[str, str]]:
    with psycopg.connect(dsn) as conn:
        return [
            (op, result)
            for op, result in conn.execute(
                "SELECT op, result FROM cdc_bridge.delivered ORDER BY id"
            ).fetchall()
        ]


def test_a_local_change_left_unshipped_is_logged_and_counted(
    db: str, peer: PeerServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Customers are captured, then the config stops shipping them (narrowed without a
    reinstall): their changes are filtered, and each such drop is reported."""
    install(relay_config(db, peer.url))
    text = yaml.safe_load(config_text(db, peer.url))
    del text["tables"]["public.customers"]
    narrowed = parse_config(yaml.safe_dump(text), "narrowed.yaml", {})
    with running_relay(narrowed) as relay, psycopg.connect(db, autocommit=True) as app:
        app.execute("INSERT INTO customers VALUES (7, 'Initech', NULL, NULL)")
        wait_drained(db)
        counted = relay.relay.metrics.registry.get_sample_value(
            "cdc_bridge_relay_filtered_divergent_total", {"table": "public.customers"}
        )
    assert counted == 1
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("public.customers" in w and "may now differ" in w for w in warnings)
    assert peer.applied_count() == 0
