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
-- The outbox rotates, as PgQ's event tables do, so it never depends on VACUUM. The
-- capture functions write two tables that inherit it, outbox_0 and outbox_1: the one the
-- sequence outbox_slot names (0 or 1). Every read, acknowledgement and failure goes
-- through the outbox, over all three. Every relay.rotate_interval_s the relay takes the
-- other one: once its writers have all finished (a table lock), it moves the rows still
-- pending there (a backlog, a parked change) into the current one under their own id and
-- txid, TRUNCATEs it and names it in outbox_slot (outbox_rotate_*). The rare writers of
-- outbox.py (snapshot, reconcile, replay, conflict resolutions) insert into the outbox
-- itself, which the rotation empties the same way when it holds anything. The space of
-- shipped rows goes back at once, with autovacuum on or off, and the relay needs only
-- TRUNCATE on the three tables.
-- Which table a writer fills is only a hint: a row in either is read, and is moved before
-- its table is emptied. outbox_slot is a sequence because a capture function reads it in
-- one function call that PL/pgSQL evaluates without starting an executor; setval is not
-- transactional, and needs no rollback: a rotation that fails after it only makes the
-- next rotation move more rows.
CREATE SEQUENCE IF NOT EXISTS {schema}.outbox_slot AS smallint MINVALUE 0 MAXVALUE 1 NO CYCLE;
SELECT pg_catalog.setval(pg_catalog.format('%I.outbox_slot', {schema_name})::regclass, 0, true)
WHERE pg_catalog.pg_sequence_last_value(
    pg_catalog.format('%I.outbox_slot', {schema_name})::regclass) IS NULL;
CREATE SEQUENCE IF NOT EXISTS {schema}.outbox_ids AS bigint;
-- When the relay last rotated the outbox, and how many times in all (for `status`).
CREATE TABLE IF NOT EXISTS {schema}.outbox_rotation (
    rotated_at  timestamptz,
    rotations   bigint NOT NULL DEFAULT 0
);
INSERT INTO {schema}.outbox_rotation (rotations)
SELECT 0 WHERE NOT EXISTS (SELECT FROM {schema}.outbox_rotation);
-- An outbox made by an earlier version is one table that holds the rows: it steps aside
-- here, and its rows move into outbox_0 below (same ids, txids and times).
DO $unrotated$
BEGIN
    IF EXISTS (SELECT FROM pg_catalog.pg_class c
               JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
               WHERE n.nspname = {schema_name} AND c.relname = 'outbox'
                 AND NOT EXISTS (SELECT FROM pg_catalog.pg_inherits i
                                 WHERE i.inhparent = c.oid)) THEN
        ALTER TABLE {schema}.outbox RENAME TO outbox_unrotated;
        ALTER INDEX IF EXISTS {schema}.outbox_txid RENAME TO outbox_unrotated_txid;
        ALTER TABLE {schema}.outbox_unrotated RENAME CONSTRAINT outbox_pkey
            TO outbox_unrotated_pkey;
    END IF;
END
$unrotated$;
CREATE TABLE IF NOT EXISTS {schema}.outbox (
    id          bigint NOT NULL,  -- DEFAULT nextval of outbox_ids, set below
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
CREATE UNIQUE INDEX IF NOT EXISTS outbox_id ON {schema}.outbox (id);
CREATE INDEX IF NOT EXISTS outbox_txid ON {schema}.outbox (txid, id);
ALTER SEQUENCE {schema}.outbox_ids OWNED BY {schema}.outbox.id;
DO $ids$
BEGIN
    EXECUTE pg_catalog.format('ALTER TABLE %I.outbox ALTER COLUMN id SET DEFAULT '
                              'pg_catalog.nextval(%L::regclass)',
                              {schema_name}, pg_catalog.format('%I.outbox_ids', {schema_name}));
END
$ids$;
CREATE TABLE IF NOT EXISTS {schema}.outbox_0 () INHERITS ({schema}.outbox);
CREATE TABLE IF NOT EXISTS {schema}.outbox_1 () INHERITS ({schema}.outbox);
-- Ids come from outbox_ids, so they are unique across the three tables; a row keeps its
-- id when it moves. The relay reads whole source transactions: their rows are found by
-- txid.
CREATE UNIQUE INDEX IF NOT EXISTS outbox_0_id ON {schema}.outbox_0 (id);
CREATE UNIQUE INDEX IF NOT EXISTS outbox_1_id ON {schema}.outbox_1 (id);
CREATE INDEX IF NOT EXISTS outbox_0_txid ON {schema}.outbox_0 (txid, id);
CREATE INDEX IF NOT EXISTS outbox_1_txid ON {schema}.outbox_1 (txid, id);
-- Earlier versions kept a CHECK on `op`. None now: only the capture functions and
-- outbox.py write it, with literals, and a CHECK costs every capturing statement its
-- expression read and prepared again (about 30,000 instructions, 6% of a one-row
-- UPDATE's whole cost; bench/capture_instructions.py).
ALTER TABLE {schema}.outbox DROP CONSTRAINT IF EXISTS outbox_op_check;
COMMENT ON TABLE {schema}.outbox IS
    'cdc-bridge: changes waiting to be acknowledged by the peer (captured rows are in outbox_0 and outbox_1, which inherit it). fields = new values of the shipped fields (key included); old = previous values of changed fields owned by both sides; origin = the system that made the change.';
DO $unrotated$
BEGIN
    IF EXISTS (SELECT FROM pg_catalog.pg_class c
               JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
               WHERE n.nspname = {schema_name} AND c.relname = 'outbox_unrotated') THEN
        INSERT INTO {schema}.outbox_0
            (id, txid, table_name, op, key, fields, old, changed, origin, captured_at)
        SELECT id, txid, table_name, op, key, fields, old, changed, origin, captured_at
        FROM {schema}.outbox_unrotated;
        -- Ids go on above the old ones (`delivered` and `failed` are keyed by them).
        PERFORM pg_catalog.setval(
            pg_catalog.format('%I.outbox_ids', {schema_name})::regclass,
            GREATEST(
                1,
                (SELECT pg_catalog.max(id) FROM {schema}.outbox_unrotated),
                pg_catalog.pg_sequence_last_value(pg_catalog.pg_get_serial_sequence(
                    pg_catalog.format('%I.outbox_unrotated', {schema_name}), 'id')::regclass)));
        DROP TABLE {schema}.outbox_unrotated;
    END IF;
END
$unrotated$;

-- name: capture_into_slot
-- The body of a capture function: its INSERT (one of the capture_* blocks below, once per
-- table) into the table outbox_slot names. The test is one call to a built-in function on
-- a constant, which PL/pgSQL evaluates as a simple expression (no executor, no query).
BEGIN
    IF pg_catalog.pg_sequence_last_value({slot}::regclass) = 0 THEN
        {capture_0};
    ELSE
        {capture_1};
    END IF;
    RETURN NEW;
END

-- name: capture_insert
INSERT INTO {outbox} (table_name, op, key, fields, origin)
    SELECT {label}, 'I', {new_key}, {insert_fields}, {origin}
    FROM {new_rows} AS n
    WHERE {new_in} AND {wake}

-- name: capture_delete
INSERT INTO {outbox} (table_name, op, key, origin)
    SELECT {label}, 'D', {old_key}, {origin}
    FROM {old_rows} AS o
    WHERE {old_in} AND {wake}

-- name: capture_update
INSERT INTO {outbox} (table_name, op, key, fields, old, changed, origin)
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
INSERT INTO {outbox} (table_name, op, key, fields, old, changed, origin)
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

-- name: outbox_rotate_current
-- The rotation (create_outbox), in one transaction of the relay. The table writers fill
-- now; the rotation log's row is locked against a second rotation at the same time; and
-- whether the outbox itself has pages to empty.
SELECT coalesce(pg_catalog.pg_sequence_last_value({slot}::regclass), 0),
       pg_catalog.pg_relation_size({outbox}::regclass) > 0
FROM {schema}.outbox_rotation FOR UPDATE;

-- name: outbox_rotate_pending
-- How many rows a table to empty still holds, up to %(most)s + 1: a backlog too big to
-- move waits until the relay has shipped it.
SELECT count(*) FROM (SELECT FROM ONLY {other} LIMIT %(most)s + 1) AS o;

-- name: outbox_rotate_lock
-- Every writer of the table to empty has finished once this is granted, and no one can
-- write it until the rotation commits. lock_timeout bounds the wait: the relay tries
-- again at its next interval (a writer's long transaction only delays it). The outbox
-- itself is locked first when it is emptied too (readers lock it before its children).
LOCK TABLE ONLY {other} IN ACCESS EXCLUSIVE MODE;

-- name: outbox_rotate_move
-- The rows still pending in the other table move to the current one, keeping id, txid
-- and capture time (so per-key order and idempotency keys); then the other table is
-- emptied and named the current one. One transaction: each row is in exactly one table
-- at any moment.
INSERT INTO {current} (id, txid, table_name, op, key, fields, old, changed, origin, captured_at)
SELECT id, txid, table_name, op, key, fields, old, changed, origin, captured_at
FROM ONLY {other};

-- name: outbox_rotate_truncate
TRUNCATE ONLY {other};

-- name: outbox_rotate_switch
-- Last, just before the commit: a writer that reads the new slot before the commit waits
-- for it on the table lock (milliseconds), then writes the emptied table.
SELECT pg_catalog.setval({slot}::regclass, %(other)s, true);

-- name: outbox_rotate_log
UPDATE {schema}.outbox_rotation SET rotated_at = now(), rotations = rotations + 1;

-- name: outbox_rotate_settings
SELECT pg_catalog.set_config('lock_timeout', %(lock_timeout)s, true);
