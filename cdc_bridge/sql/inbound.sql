-- Inbound: applying the peer's changes. Keys of applied changes (idempotency) and
-- concurrent edits of fields owned by both sides (conflicts).

-- name: inbound_create_applied_keys
-- Keys of applied changes above their sender's watermark (a short window): a resend of
-- one of them is answered `duplicate`. Keys below the watermark are pruned, since the
-- watermark alone recognizes them. source and txid are parsed from the key
-- (`<source>:<txid>:<outbox id>`); a key of another shape keeps them NULL and goes by
-- age only (inbound.applied_key_retention_days).
CREATE TABLE IF NOT EXISTS {schema}.applied_keys (
    idempotency_key text PRIMARY KEY,
    applied_at      timestamptz NOT NULL DEFAULT now(),
    result          text NOT NULL,          -- applied | conflict_resolved
    source          text,
    txid            bigint
);
ALTER TABLE {schema}.applied_keys ADD COLUMN IF NOT EXISTS source text;
ALTER TABLE {schema}.applied_keys ADD COLUMN IF NOT EXISTS txid bigint;
-- BRIN: keys arrive in time order, and pruning is rare; a btree would slow every apply.
CREATE INDEX IF NOT EXISTS applied_keys_applied_at ON {schema}.applied_keys USING brin (applied_at);
-- Per sender, the highest watermark it sent: every change of a source transaction with a
-- lower txid has left its outbox (acknowledged, or refused: a replay of a refused change
-- comes under a new txid), so a change below it can only be a resend of one applied here.
CREATE TABLE IF NOT EXISTS {schema}.watermarks (
    source       text PRIMARY KEY,
    settled_below bigint NOT NULL,
    updated_at   timestamptz NOT NULL DEFAULT now()
);

-- name: inbound_create_conflicts
-- One row per detected concurrent edit of a `both` field. Automatic policies record a
-- resolved row; `manual` parks an open one (at most one open per table, key and field).
CREATE TABLE IF NOT EXISTS {schema}.conflicts (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    table_name   text NOT NULL,
    key          jsonb NOT NULL,
    field        text NOT NULL,
    local_value  jsonb,
    peer_value   jsonb,
    policy       text NOT NULL,
    winner       text CHECK (winner IN ('local', 'peer', 'value')),
    status       text NOT NULL CHECK (status IN ('open', 'resolved')),
    detected_at  timestamptz NOT NULL DEFAULT now(),
    resolved_at  timestamptz,
    resolved_by  text,
    resolution   jsonb
);
CREATE UNIQUE INDEX IF NOT EXISTS conflicts_one_open
    ON {schema}.conflicts (table_name, key, field) WHERE status = 'open';
CREATE INDEX IF NOT EXISTS conflicts_detected_at ON {schema}.conflicts (detected_at);

-- name: inbound_create_poll_cursors
-- `cdc-bridge poll`: per configured poll, the newest modification time read so far from
-- the peer application's list endpoint (as the application wrote it).
CREATE TABLE IF NOT EXISTS {schema}.poll_cursors (
    name      text PRIMARY KEY,
    cursor    text NOT NULL,
    polled_at timestamptz NOT NULL DEFAULT now()
);

-- name: inbound_poll_cursor
SELECT cursor FROM {schema}.poll_cursors WHERE name = %(name)s;

-- name: inbound_save_poll_cursor
INSERT INTO {schema}.poll_cursors (name, cursor) VALUES (%(name)s, %(cursor)s)
ON CONFLICT (name) DO UPDATE SET cursor = excluded.cursor, polled_at = now();

-- name: inbound_poll_gone
-- `poll --full`: the keys of a received table's rows that the application's whole list
-- (%(keys)s) no longer has. The listed keys take the table's own row type, so each is
-- compared as its column's type (a numeric 7 equals 7.0; a uuid matches in any case).
SELECT ({key_json})::text FROM {table} AS t
WHERE NOT EXISTS (
    SELECT FROM jsonb_populate_recordset(NULL::{table}, %(keys)s::jsonb) AS k WHERE {match}
);

-- name: inbound_set_origin
SELECT set_config('cdc_bridge.origin', %(origin)s, true);

-- name: inbound_begin_apply
-- The first statement of a batch's transaction: the origin, and for this transaction
-- only, plans that look every incoming row up by its key (nested loops over the table's
-- unique index, which ON CONFLICT requires). The pool's connections prepare each
-- statement, and a prepared statement's generic plan is kept until the table is
-- ANALYZEd: one planned while the table was nearly empty scanned it whole (a hash join)
-- for every batch after it had grown, and without autovacuum nothing ever planned it
-- again (measured: the shop's DELETE of a soak's order lines, a third of each of
-- `serve`'s backends). Every statement of an apply is driven by the batch's keys. No
-- JIT compilation: a statement that can only scan (costed at enable_seqscan's penalty)
-- would be compiled with inlining and optimization, taking far longer than it runs.
SELECT set_config('cdc_bridge.origin', %(origin)s, true),
       set_config('enable_seqscan', 'off', true),
       set_config('enable_hashjoin', 'off', true),
       set_config('enable_mergejoin', 'off', true),
       set_config('jit', 'off', true);

-- name: inbound_watermark
SELECT settled_below FROM {schema}.watermarks WHERE source = %(source)s;

-- name: inbound_raise_watermark
-- Watermarks only rise: a batch sent before a later one may arrive after it.
-- Most batches carry a watermark an earlier batch already raised it to (the relay reads
-- it once a second): they lock nothing. An UPDATE locks only the rows its condition
-- keeps, and waits only for a batch raising it at that moment (then checks the raised
-- value again). ON CONFLICT DO UPDATE locked the row for every batch until its commit,
-- so concurrent batches committed one after another (measured: each of `serve`'s
-- backends waited on this row in one sample of 14). A sender's first batch inserts its row.
WITH raised AS (
    UPDATE {schema}.watermarks AS w
    SET settled_below = %(settled_below)s, updated_at = now()
    WHERE w.source = %(source)s AND w.settled_below < %(settled_below)s
)
INSERT INTO {schema}.watermarks AS w (source, settled_below)
SELECT %(source)s, %(settled_below)s
WHERE NOT EXISTS (SELECT FROM {schema}.watermarks x WHERE x.source = %(source)s)
ON CONFLICT (source) DO UPDATE
SET settled_below = greatest(w.settled_below, excluded.settled_below), updated_at = now()
WHERE excluded.settled_below > w.settled_below;

-- name: inbound_claim_keys
-- Returns the keys this batch may apply; the others were applied before (duplicates).
-- Each element is [key, source, txid] (source and txid null for keys of another shape).
INSERT INTO {schema}.applied_keys (idempotency_key, result, source, txid)
SELECT DISTINCT ON (k ->> 0) k ->> 0, 'applied', k ->> 1, (k ->> 2)::bigint
FROM jsonb_array_elements(%(keys)s::jsonb) AS k
ON CONFLICT (idempotency_key) DO NOTHING
RETURNING idempotency_key;

-- name: inbound_release_keys
DELETE FROM {schema}.applied_keys
WHERE idempotency_key IN (SELECT jsonb_array_elements_text(%(keys)s::jsonb));

-- name: inbound_mark_keys_resolved
UPDATE {schema}.applied_keys SET result = 'conflict_resolved'
WHERE idempotency_key IN (SELECT jsonb_array_elements_text(%(keys)s::jsonb));

-- name: inbound_prune_keys
-- Keys below their sender's watermark (it recognizes them by itself), and keys past the
-- retention age (senders that send no watermark, or one held back by a failed change).
DELETE FROM {schema}.applied_keys k
WHERE k.txid < (SELECT w.settled_below FROM {schema}.watermarks w WHERE w.source = k.source)
   OR k.applied_at < now() - make_interval(secs => %(age_s)s);

-- name: inbound_table_columns
SELECT a.attname::text FROM pg_catalog.pg_attribute a
WHERE a.attrelid = {relation}::regclass AND a.attnum > 0 AND NOT a.attisdropped
  AND a.attgenerated = '';

-- name: inbound_json_columns
-- Columns of type json or jsonb (or a domain over one), which a peer sends as their text
-- when jsonb would change them (a string on the wire; see inbound_text_rows).
WITH RECURSIVE columns AS (
    SELECT a.attname, a.atttypid AS typid
    FROM pg_catalog.pg_attribute a
    WHERE a.attrelid = {relation}::regclass AND a.attnum > 0 AND NOT a.attisdropped
    UNION ALL
    SELECT c.attname, t.typbasetype
    FROM columns c JOIN pg_catalog.pg_type t ON t.oid = c.typid
    WHERE t.typtype = 'd'
)
SELECT attname::text, typid = 'jsonb'::regtype AS binary FROM columns
WHERE typid IN ('json'::regtype, 'jsonb'::regtype);

-- name: inbound_typed_rows
-- The incoming rows typed by the table's own row type, so every value gets the column's
-- type (and its input checks) without naming types here.
jsonb_populate_recordset(NULL::{table}, %(rows)s::jsonb)

-- name: inbound_text_rows
-- The same for a table with json or jsonb columns: such a column's value may come as a
-- string holding its text (its exact json text, the jsonb document `null`, a jsonb
-- string), which is cast here (jsonb_populate_record would keep the string itself);
-- {values} lists the columns, those cast as
-- CASE WHEN jsonb_typeof(x.r -> 'c') = 'string' THEN (x.r ->> 'c')::json ELSE p.c END.
(SELECT {values}
 FROM pg_catalog.jsonb_array_elements(%(rows)s::jsonb) AS x(r)
 CROSS JOIN LATERAL pg_catalog.jsonb_populate_record(NULL::{table}, x.r) AS p)

-- name: inbound_upsert
-- The key the peer sent (or the cross-reference gave) is the row's key, even in a
-- GENERATED ALWAYS column.
INSERT INTO {table} AS t ({columns}) OVERRIDING SYSTEM VALUE
SELECT {columns} FROM {rows} AS i
ON CONFLICT ({key}) DO {action};

-- name: inbound_delete
DELETE FROM {table} AS t
USING jsonb_populate_recordset(NULL::{table}, %(rows)s::jsonb) AS k
WHERE {match};

-- name: inbound_current_values
-- Current values of the `both` fields, to compare with the sender's `old`.
SELECT {key_json}, {values}
FROM {table} AS t
WHERE ({key}) IN (SELECT {key} FROM jsonb_populate_recordset(NULL::{table}, %(rows)s::jsonb));

-- name: inbound_latest_local_change
-- When this side last changed the field (or created the row): outbox and delivered history.
SELECT max(captured_at) FROM (
    SELECT captured_at FROM {schema}.outbox
    WHERE table_name = %(table)s AND key = %(key)s AND origin = %(origin)s
      AND (op = 'I' OR %(field)s = ANY (changed))
    UNION ALL
    SELECT captured_at FROM {schema}.delivered
    WHERE table_name = %(table)s AND key = %(key)s AND origin = %(origin)s
      AND (op = 'I' OR %(field)s = ANY (changed))
) AS local_changes;

-- name: inbound_record_conflict
INSERT INTO {schema}.conflicts AS c
    (table_name, key, field, local_value, peer_value, policy, winner, status,
     resolved_at, resolved_by, resolution)
VALUES (%(table)s, %(key)s, %(field)s, %(local_value)s, %(peer_value)s, %(policy)s,
        %(winner)s, %(status)s,
        CASE WHEN %(status)s = 'resolved' THEN now() END,
        CASE WHEN %(status)s = 'resolved' THEN 'policy' END,
        %(resolution)s)
ON CONFLICT (table_name, key, field) WHERE status = 'open'
DO UPDATE SET peer_value = excluded.peer_value, detected_at = now()
RETURNING id;

-- name: inbound_resolve_by_peer
-- A change from the peer that sets a field with an open conflict settles it.
UPDATE {schema}.conflicts AS c
SET status = 'resolved', resolved_at = now(), resolved_by = 'peer', winner = 'peer',
    resolution = x.value
FROM jsonb_to_recordset(%(changes)s::jsonb) AS x(table_name text, key jsonb, field text, value jsonb)
WHERE c.status = 'open' AND c.table_name = x.table_name AND c.key = x.key
  AND c.field = x.field;

-- name: inbound_read_rows
-- Values as the peer sends them: through the table's wire function (exact).
SELECT {wire}(t.*, (SELECT to_jsonb(r) FROM (SELECT {columns}) AS r))
FROM {table} AS t
WHERE %(after)s::jsonb IS NULL
   OR ({key}) > (SELECT {key} FROM jsonb_populate_record(NULL::{table}, %(after)s::jsonb))
ORDER BY {key}
LIMIT %(limit)s;

-- name: inbound_list_conflicts
SELECT id, table_name, key, field, local_value, peer_value, policy, winner, status,
       detected_at, resolved_at, resolved_by, resolution
FROM {schema}.conflicts
WHERE %(status)s::text IS NULL OR status = %(status)s
ORDER BY id;

-- name: inbound_get_conflict
SELECT id, table_name, key, field, local_value, peer_value, policy, winner, status,
       detected_at, resolved_at, resolved_by, resolution
FROM {schema}.conflicts WHERE id = %(id)s
FOR UPDATE;

-- name: inbound_set_field
UPDATE {table} AS t
SET {field} = (jsonb_populate_record(NULL::{table}, %(values)s::jsonb)).{field}
WHERE ({key}) = (SELECT {key} FROM jsonb_populate_record(NULL::{table}, %(values)s::jsonb));

-- name: inbound_ship_resolution
-- The resolution travels as an ordinary update whose `old` is the peer's value, so the
-- peer sees no new conflict and applies it.
{queue}
VALUES (%(table)s, 'U', %(key)s, %(fields)s, %(old)s, ARRAY[%(field)s], %(origin)s);

-- name: inbound_close_conflict
UPDATE {schema}.conflicts
SET status = 'resolved', resolved_at = now(), resolved_by = %(resolved_by)s,
    winner = %(winner)s, resolution = %(value)s
WHERE id = %(id)s;

-- name: inbound_update_then_insert
-- Per-field tables ship only some columns. INSERT ... ON CONFLICT would check the
-- table's NOT NULL columns on the proposed row before finding the conflict, so an
-- existing row is updated first and only the keys that matched nothing are inserted.
WITH incoming AS (
    SELECT {columns} FROM {rows} AS r
), updated AS (
    UPDATE {table} AS t SET {assignments}
    FROM incoming AS i
    WHERE {match}
    RETURNING {returning}
)
INSERT INTO {table} AS t ({columns}) OVERRIDING SYSTEM VALUE
SELECT {columns} FROM incoming AS i
WHERE NOT EXISTS (SELECT FROM updated AS u WHERE {seen})
ON CONFLICT ({key}) DO {action};

-- name: inbound_defer_constraints
-- Deferrable constraints wait for the end of the batch (or of each source transaction,
-- see inbound_check_constraints): a source transaction may legally have written a child
-- before its parent. Constraints that are not deferrable are met by applying changes in
-- the source's capture order.
SET CONSTRAINTS ALL DEFERRED;

-- name: inbound_check_constraints
-- Checks the deferred constraints now, inside the savepoint, so a refusal names the
-- source transaction at fault instead of failing the whole batch at COMMIT.
SET CONSTRAINTS ALL IMMEDIATE;

-- name: inbound_read_part_rows
-- Rows of an entity's 1:1 side table by the main rows' keys (the read endpoint answers
-- the entity whole).
SELECT to_jsonb(t) FROM {table} AS t
WHERE ({key}) IN (SELECT {key} FROM jsonb_populate_recordset(NULL::{table}, %(keys)s::jsonb));
