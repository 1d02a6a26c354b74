-- The outbox: its shape and every statement that writes it. Only cdc_bridge/outbox.py
-- uses these blocks; capture, snapshot, reconcile, replay, skip and conflict resolution
-- write the outbox through it (the relay's reads, acknowledgements and failures are in
-- relay.sql, also used only by outbox.py).
-- The capture_* blocks are the INSERT each generated capture function runs (fragments,
-- see capture.sql: create_table_capture_function). Their text is part of the hash that
-- `triggers status` compares: changing it makes every install outdated.

-- name: create_outbox
-- One row per captured change, written in the same transaction as the change.
-- Rows leave when the peer has acknowledged them (no read cursor, so a transaction
-- that commits late is never skipped).
CREATE TABLE IF NOT EXISTS {schema}.outbox (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    txid        xid8 NOT NULL DEFAULT pg_current_xact_id(),
    table_name  text NOT NULL,
    op          text NOT NULL,
    key         jsonb NOT NULL,
    fields      jsonb,
    old         jsonb,
    changed     text[],
    origin      text NOT NULL,
    captured_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
-- No CHECK on `op`: only the capture functions and outbox.py write it, with literals. A
-- CHECK costs every capturing statement its expression read and prepared again (about
-- 30,000 instructions, 6% of a one-row UPDATE's whole cost; bench/capture_instructions.py).
ALTER TABLE {schema}.outbox DROP CONSTRAINT IF EXISTS outbox_op_check;
-- The relay reads whole source transactions: their rows are found by txid.
CREATE INDEX IF NOT EXISTS outbox_txid ON {schema}.outbox (txid, id);
COMMENT ON TABLE {schema}.outbox IS
    'cdc-bridge: changes waiting to be acknowledged by the peer. fields = new values of the shipped fields (key included); old = previous values of changed fields owned by both sides; origin = the system that made the change.';

-- name: capture_insert
INSERT INTO {schema}.outbox (table_name, op, key, fields, origin)
    SELECT {label}, 'I', {new_key}, {insert_fields}, {origin}
    FROM {new_rows} AS n
    WHERE {new_in} AND {wake}

-- name: capture_delete
INSERT INTO {schema}.outbox (table_name, op, key, origin)
    SELECT {label}, 'D', {old_key}, {origin}
    FROM {old_rows} AS o
    WHERE {old_in} AND {wake}

-- name: capture_update
INSERT INTO {schema}.outbox (table_name, op, key, fields, old, changed, origin)
    SELECT {label}, 'D', {old_key}, NULL::jsonb, NULL::jsonb, NULL::text[], {origin}
    FROM {old_rows} AS o
    WHERE NOT EXISTS (SELECT FROM {new_rows} AS n WHERE {same_key}) AND {wake}
    UNION ALL
    SELECT {label}, 'U', {new_key}, {update_fields}, {old}, {changed}, {origin}
    FROM {new_rows} AS n JOIN {old_rows} AS o ON {same_key}
    WHERE {changed_any}
    UNION ALL
    SELECT {label}, 'I', {new_key}, {insert_fields}, NULL, NULL, {origin}
    FROM {new_rows} AS n
    WHERE NOT EXISTS (SELECT FROM {old_rows} AS o WHERE {same_key})

-- name: capture_update_filtered
INSERT INTO {schema}.outbox (table_name, op, key, fields, old, changed, origin)
    SELECT {label}, 'D', {old_key}, NULL::jsonb, NULL::jsonb, NULL::text[], {origin}
    FROM {old_rows} AS o
    WHERE {old_in} AND NOT EXISTS (SELECT FROM {new_rows} AS n WHERE {same_key}) AND {wake}
    UNION ALL
    SELECT {label}, c.op, CASE c.op WHEN 'D' THEN {old_key} ELSE {new_key} END,
           CASE c.op WHEN 'U' THEN {update_fields} WHEN 'I' THEN {insert_fields} END,
           CASE c.op WHEN 'U' THEN {old} END,
           CASE c.op WHEN 'U' THEN {changed} END,
           {origin}
    FROM {new_rows} AS n JOIN {old_rows} AS o ON {same_key}
    CROSS JOIN LATERAL (
        SELECT CASE WHEN {old_in} AND {new_in} THEN CASE WHEN {changed_any} THEN 'U' END
                    WHEN {new_in} THEN 'I'
                    WHEN {old_in} THEN 'D' END AS op
        OFFSET 0) AS c
    WHERE c.op IS NOT NULL
    UNION ALL
    SELECT {label}, 'I', {new_key}, {insert_fields}, NULL, NULL, {origin}
    FROM {new_rows} AS n
    WHERE {new_in} AND NOT EXISTS (SELECT FROM {old_rows} AS o WHERE {same_key})

-- name: outbox_queue
-- The head of every INSERT that queues changes from outside a trigger (snapshot,
-- reconcile fixes, conflict resolutions): the statement supplies these columns in this
-- order, by VALUES or SELECT. id, txid and captured_at come from the defaults.
INSERT INTO {schema}.outbox (table_name, op, key, fields, old, changed, origin)

-- name: outbox_requeue
-- Puts changes back into the outbox under their ORIGINAL id: same place in per-key order.
-- A change the peer acknowledged keeps its txid too, so its idempotency key: the peer
-- answers `duplicate`. A change the peer never applied (failed, or skipped) takes this
-- transaction's txid: a new key, above the watermark the relay has sent (protocol
-- `settled_below`), so the peer applies it; changes replayed together travel as one
-- source transaction. They leave `failed`/`delivered` in the same transaction, so each
-- change is in exactly one of outbox, delivered, failed.
WITH from_failed AS (
    DELETE FROM {schema}.failed WHERE id = ANY(%(ids)s)
    RETURNING id, pg_current_xact_id() AS txid, table_name, op, key, fields, old, changed,
              origin, captured_at
), from_delivered AS (
    DELETE FROM {schema}.delivered WHERE id = ANY(%(ids)s)
    RETURNING id,
              CASE WHEN result = 'skipped' THEN pg_current_xact_id() ELSE txid END AS txid,
              table_name, op, key, fields, old, changed, origin, captured_at
)
INSERT INTO {schema}.outbox
    (id, txid, table_name, op, key, fields, old, changed, origin, captured_at)
OVERRIDING SYSTEM VALUE
SELECT * FROM (SELECT * FROM from_failed UNION ALL SELECT * FROM from_delivered) c
ORDER BY id
RETURNING id;

-- name: outbox_skip
-- Gives up on a failed or still-pending change: it moves to `delivered` as 'skipped',
-- and its key's parked changes flow again. A pending change in a batch in flight may
-- still reach the peer.
WITH from_failed AS (
    DELETE FROM {schema}.failed WHERE id = %(id)s
    RETURNING id, txid, table_name, op, key, fields, old, changed, origin, captured_at, batch_id
), from_outbox AS (
    DELETE FROM {schema}.outbox WHERE id = %(id)s
    RETURNING id, txid, table_name, op, key, fields, old, changed, origin, captured_at,
              NULL::text AS batch_id
), kept AS (
    INSERT INTO {schema}.delivered
        (id, txid, table_name, op, key, fields, old, changed, origin, captured_at,
         batch_id, result)
    SELECT id, txid, table_name, op, key, fields, old, changed, origin, captured_at,
           batch_id, 'skipped'
    FROM (SELECT * FROM from_failed UNION ALL SELECT * FROM from_outbox) AS gone
    RETURNING id, table_name, key
)
INSERT INTO {schema}.skips (change_id, table_name, key, os_user, reason, action)
SELECT id, table_name, key, %(os_user)s, %(reason)s, 'skip' FROM kept
RETURNING skip_id, change_id, table_name, key, db_user, skipped_at;

-- name: outbox_park_pending
-- A change still in the outbox, held back on purpose: it moves to `failed` (its key and
-- its transaction wait), to be replayed or skipped later like any failed change.
WITH gone AS (
    DELETE FROM {schema}.outbox WHERE id = %(id)s
    RETURNING id, txid, table_name, op, key, fields, old, changed, origin, captured_at
), kept AS (
    INSERT INTO {schema}.failed
        (id, txid, table_name, op, key, fields, old, changed, origin, captured_at, reason)
    SELECT id, txid, table_name, op, key, fields, old, changed, origin, captured_at,
           'parked by an operator: ' || %(reason)s
    FROM gone
    RETURNING id, table_name, key
)
INSERT INTO {schema}.skips (change_id, table_name, key, os_user, reason, action)
SELECT id, table_name, key, %(os_user)s, %(reason)s, 'park' FROM kept
RETURNING skip_id, change_id, table_name, key, db_user, skipped_at;
