-- cdc-bridge install for system 'erp', peer 'shop'
-- Review, then apply in one transaction (psql --single-transaction -f FILE).
CREATE SCHEMA IF NOT EXISTS "cdc_bridge";
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
CREATE SEQUENCE IF NOT EXISTS "cdc_bridge".outbox_slot AS smallint MINVALUE 0 MAXVALUE 1 NO CYCLE;
SELECT pg_catalog.setval(pg_catalog.format('%I.outbox_slot', 'cdc_bridge')::regclass, 0, true)
WHERE pg_catalog.pg_sequence_last_value(
    pg_catalog.format('%I.outbox_slot', 'cdc_bridge')::regclass) IS NULL;
CREATE SEQUENCE IF NOT EXISTS "cdc_bridge".outbox_ids AS bigint;
-- When the relay last rotated the outbox, and how many times in all (for `status`).
CREATE TABLE IF NOT EXISTS "cdc_bridge".outbox_rotation (
    rotated_at  timestamptz,
    rotations   bigint NOT NULL DEFAULT 0
);
INSERT INTO "cdc_bridge".outbox_rotation (rotations)
SELECT 0 WHERE NOT EXISTS (SELECT FROM "cdc_bridge".outbox_rotation);
-- An outbox made by an earlier version is one table that holds the rows: it steps aside
-- here, and its rows move into outbox_0 below (same ids, txids and times).
DO $unrotated$
BEGIN
    IF EXISTS (SELECT FROM pg_catalog.pg_class c
               JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
               WHERE n.nspname = 'cdc_bridge' AND c.relname = 'outbox'
                 AND NOT EXISTS (SELECT FROM pg_catalog.pg_inherits i
                                 WHERE i.inhparent = c.oid)) THEN
        ALTER TABLE "cdc_bridge".outbox RENAME TO outbox_unrotated;
        ALTER INDEX IF EXISTS "cdc_bridge".outbox_txid RENAME TO outbox_unrotated_txid;
        ALTER TABLE "cdc_bridge".outbox_unrotated RENAME CONSTRAINT outbox_pkey
            TO outbox_unrotated_pkey;
    END IF;
END
$unrotated$;
CREATE TABLE IF NOT EXISTS "cdc_bridge".outbox (
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
CREATE UNIQUE INDEX IF NOT EXISTS outbox_id ON "cdc_bridge".outbox (id);
CREATE INDEX IF NOT EXISTS outbox_txid ON "cdc_bridge".outbox (txid, id);
ALTER SEQUENCE "cdc_bridge".outbox_ids OWNED BY "cdc_bridge".outbox.id;
DO $ids$
BEGIN
    EXECUTE pg_catalog.format('ALTER TABLE %I.outbox ALTER COLUMN id SET DEFAULT '
                              'pg_catalog.nextval(%L::regclass)',
                              'cdc_bridge', pg_catalog.format('%I.outbox_ids', 'cdc_bridge'));
END
$ids$;
CREATE TABLE IF NOT EXISTS "cdc_bridge".outbox_0 () INHERITS ("cdc_bridge".outbox);
CREATE TABLE IF NOT EXISTS "cdc_bridge".outbox_1 () INHERITS ("cdc_bridge".outbox);
-- Ids come from outbox_ids, so they are unique across the three tables; a row keeps its
-- id when it moves. The relay reads whole source transactions: their rows are found by
-- txid.
CREATE UNIQUE INDEX IF NOT EXISTS outbox_0_id ON "cdc_bridge".outbox_0 (id);
CREATE UNIQUE INDEX IF NOT EXISTS outbox_1_id ON "cdc_bridge".outbox_1 (id);
CREATE INDEX IF NOT EXISTS outbox_0_txid ON "cdc_bridge".outbox_0 (txid, id);
CREATE INDEX IF NOT EXISTS outbox_1_txid ON "cdc_bridge".outbox_1 (txid, id);
-- Earlier versions kept a CHECK on `op`. None now: only the capture functions and
-- outbox.py write it, with literals, and a CHECK costs every capturing statement its
-- expression read and prepared again (about 30,000 instructions, 6% of a one-row
-- UPDATE's whole cost; bench/capture_instructions.py).
ALTER TABLE "cdc_bridge".outbox DROP CONSTRAINT IF EXISTS outbox_op_check;
COMMENT ON TABLE "cdc_bridge".outbox IS
    'cdc-bridge: changes waiting to be acknowledged by the peer (captured rows are in outbox_0 and outbox_1, which inherit it). fields = new values of the shipped fields (key included); old = previous values of changed fields owned by both sides; origin = the system that made the change.';
DO $unrotated$
BEGIN
    IF EXISTS (SELECT FROM pg_catalog.pg_class c
               JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
               WHERE n.nspname = 'cdc_bridge' AND c.relname = 'outbox_unrotated') THEN
        INSERT INTO "cdc_bridge".outbox_0
            (id, txid, table_name, op, key, fields, old, changed, origin, captured_at)
        SELECT id, txid, table_name, op, key, fields, old, changed, origin, captured_at
        FROM "cdc_bridge".outbox_unrotated;
        -- Ids go on above the old ones (`delivered` and `failed` are keyed by them).
        PERFORM pg_catalog.setval(
            pg_catalog.format('%I.outbox_ids', 'cdc_bridge')::regclass,
            GREATEST(
                1,
                (SELECT pg_catalog.max(id) FROM "cdc_bridge".outbox_unrotated),
                pg_catalog.pg_sequence_last_value(pg_catalog.pg_get_serial_sequence(
                    pg_catalog.format('%I.outbox_unrotated', 'cdc_bridge'), 'id')::regclass)));
        DROP TABLE "cdc_bridge".outbox_unrotated;
    END IF;
END
$unrotated$;
-- What `triggers status` compares against: the definition hash and the columns the
-- table had when its triggers were installed.
CREATE TABLE IF NOT EXISTS "cdc_bridge".installed_tables (
    table_name      text PRIMARY KEY,
    relation        regclass NOT NULL,
    definition_hash text NOT NULL,
    columns         text[] NOT NULL,
    installed_at    timestamptz NOT NULL DEFAULT now()
);
-- Rows of `sor: handoff` tables the peer now owns (recorded when the peer applied them).
CREATE TABLE IF NOT EXISTS "cdc_bridge".handoffs (
    table_name text NOT NULL,
    key        jsonb NOT NULL,
    handed_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (table_name, key)
);
-- Earlier versions kept "is the relay listening?" in a sequence the relay set. A relay
-- that crashed while idle left it at "listening", and every writer then sent NOTIFY for
-- nobody (see the notify trigger). That state now lives in an advisory lock held by the
-- relay's own session, which ends with it; the sequence goes.
DROP SEQUENCE IF EXISTS "cdc_bridge".relay_listening;
-- Earlier versions woke the relay from a trigger of their own on every table
-- (`cdc_bridge_notify`, calling this function); capture does it now (`capture_wake`).
-- CASCADE drops those triggers with it, and nothing else depends on the function.
DROP FUNCTION IF EXISTS "cdc_bridge".notify_v2() CASCADE;
-- Refuses a local write to data the peer owns. The trigger's WHEN clause
-- (the `guard_local_write` block) already excludes writes the bridge applies for the peer;
-- this function only explains. That clause is true for every write but the bridge's own
-- apply: a session setting alone proves nothing (any session can SET it), so the
-- session's login role must also be a member of the relay role, and a plain role that
-- sets the origin is refused like any other local write. pg_has_role runs only when the
-- setting names the peer, so an ordinary local write pays one current_setting call.
-- Arguments: 0 table label, 1 owner (peer name), 2 guarded fields ('' = the whole row),
-- 3 'handoff' when only handed-off rows are guarded, 4 key columns.
CREATE OR REPLACE FUNCTION "cdc_bridge".guard_v1() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $guard_v1$
DECLARE
    v_row    jsonb := to_jsonb(CASE WHEN TG_OP = 'INSERT' THEN NEW ELSE OLD END);
    v_key    jsonb;
    v_fields text[];
BEGIN
    IF TG_ARGV[3] = 'handoff' THEN
        v_key := (SELECT jsonb_object_agg(k, v_row -> k) FROM unnest(TG_ARGV[4]::text[]) AS k);
        IF TG_OP = 'INSERT' OR NOT EXISTS (
                SELECT 1 FROM "cdc_bridge".handoffs h
                WHERE h.table_name = TG_ARGV[0] AND h.key = v_key) THEN
            RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
        END IF;
        RAISE EXCEPTION 'cdc-bridge: % row % was handed off to %, which owns it now; local % refused',
            TG_ARGV[0], v_key, TG_ARGV[1], lower(TG_OP)
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'Make the change in ' || TG_ARGV[1] || ', the system of record for it now.';
    END IF;
    IF TG_OP = 'UPDATE' AND TG_ARGV[2] <> '' THEN
        v_fields := ARRAY(
            SELECT f FROM unnest(TG_ARGV[2]::text[]) AS f
            WHERE to_jsonb(NEW) -> f IS DISTINCT FROM to_jsonb(OLD) -> f);
        RAISE EXCEPTION 'cdc-bridge: %.% is owned by %; local update refused',
            TG_ARGV[0], array_to_string(v_fields, ', '), TG_ARGV[1]
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'Change it in ' || TG_ARGV[1] || ', the system of record for this field.';
    END IF;
    RAISE EXCEPTION 'cdc-bridge: % rows are owned by %; local % refused',
        TG_ARGV[0], TG_ARGV[1], lower(TG_OP)
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'Change it in ' || TG_ARGV[1] || ', the system of record for this table.';
END
$guard_v1$;
REVOKE ALL ON FUNCTION "cdc_bridge".guard_v1() FROM PUBLIC;
-- TRUNCATE fires no DELETE triggers, so it would bypass capture: refuse it on synced tables.
CREATE OR REPLACE FUNCTION "cdc_bridge".refuse_truncate_v1() RETURNS trigger
LANGUAGE plpgsql AS $refuse_truncate_v1$
BEGIN
    RAISE EXCEPTION 'cdc-bridge: TRUNCATE of synced table % would not be captured; refused', TG_ARGV[0]
        USING ERRCODE = 'feature_not_supported',
              HINT = 'Use DELETE so the change reaches the peer, or uninstall the triggers first.';
END
$refuse_truncate_v1$;
REVOKE ALL ON FUNCTION "cdc_bridge".refuse_truncate_v1() FROM PUBLIC;
-- Writes, at install, one function per synced table that makes a jsonb of its rows exact:
-- wire_v1_<digest>(row, fields jsonb) returns `fields` (NULL: the whole row, to_jsonb(row))
-- with the values that jsonb would change replaced by their PostgreSQL text form (a JSON
-- string):
-- - real / double precision -0 (jsonb numbers have no negative zero): "-0";
-- - json: always its text (jsonb drops its spacing, key order and duplicate keys);
-- - jsonb holding a string, or the document `null` (which would arrive as SQL NULL):
--   its text;
-- - arrays whose lower bounds are not all 1, or whose elements are real, double precision,
--   json or jsonb: the array's text ('[0:2]={1,2,3}');
-- - composite values with a field of those types (or an array, or a composite): their
--   text ('("x",{a})').
-- The receiver reads such a string through the column type's input function
-- (jsonb_populate_record does for every type but json and jsonb, which inbound/apply.py
-- casts from the text). Only keys `fields` holds are replaced, so the function serves
-- whole rows and a per-field table's subsets (and single fields) alike.
-- The choice is made per column type, here, once, from the catalog: for a table holding
-- none of these types the function is `SELECT COALESCE($2, to_jsonb($1))`, which
-- PostgreSQL inlines (LANGUAGE sql, STABLE, no SET, not STRICT): a whole-row capture
-- computes COALESCE(to_jsonb(n.*)), to_jsonb as before, and calls nothing. For another
-- table a row holding none of those values pays only their tests (a CASE on its columns).
-- A column added later ships as to_jsonb writes it until the table is installed again
-- (`triggers status` reports the drift); a column the function names is dropped in the
-- same transaction as the table's reinstall, as a per-field table's shipped columns are.
CREATE OR REPLACE FUNCTION "cdc_bridge".create_wire_function_v1(
    relation regclass, schema_name text, name text)
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $create_wire_function_v1$
DECLARE
    -- The fields given, or (NULL) the whole row: to_jsonb then runs once, inlined.
    v_fields text := 'COALESCE($2, pg_catalog.to_jsonb($1))';
    v_pairs  text[];
    v_any    text;
    v_body   text := 'SELECT ' || v_fields;
BEGIN
    WITH RECURSIVE columns AS (
        SELECT a.attnum, a.attname, a.atttypid AS typid
        FROM pg_attribute a
        WHERE a.attrelid = relation AND a.attnum > 0 AND NOT a.attisdropped
        UNION ALL  -- a domain is read as its base type
        SELECT c.attnum, c.attname, t.typbasetype
        FROM columns c JOIN pg_type t ON t.oid = c.typid
        WHERE t.typtype = 'd'
    ), typed AS (
        SELECT c.attnum, format('($1).%I', c.attname) AS v, quote_literal(c.attname) AS k,
               t.oid AS typid, t.typcategory,
               coalesce(nullif(e.typbasetype, 0), e.oid) AS element,
               t.typtype = 'c' AND EXISTS (
                   SELECT FROM pg_attribute f
                   JOIN pg_type ft ON ft.oid = f.atttypid
                   LEFT JOIN pg_type fb ON fb.oid = ft.typbasetype
                   WHERE f.attrelid = t.typrelid AND f.attnum > 0 AND NOT f.attisdropped
                     AND (coalesce(fb.oid, ft.oid) IN ('float4'::regtype, 'float8'::regtype,
                                                       'json'::regtype, 'jsonb'::regtype)
                          OR coalesce(fb.typcategory, ft.typcategory) IN ('A', 'C'))
               ) AS inexact_composite
        FROM columns c
        JOIN pg_type t ON t.oid = c.typid
        LEFT JOIN pg_type e ON e.oid = t.typelem AND t.typcategory = 'A'
        WHERE t.typtype <> 'd'
    ), rules AS (
        -- When a value goes as its text. Not `x IS NOT NULL`: on a composite it is false
        -- when any one field is NULL (a composite of NULLs alone is exact as an object).
        SELECT attnum, k, v, CASE
            WHEN typid IN ('float4'::regtype, 'float8'::regtype) THEN
                format('%s = 0 AND %s::text = ''-0''', v, v)
            WHEN typid = 'json'::regtype THEN format('NOT (%s IS NULL)', v)
            WHEN typid = 'jsonb'::regtype THEN
                format('pg_catalog.jsonb_typeof(%s) IN (''null'', ''string'')', v)
            WHEN typcategory = 'A' AND element IN ('float4'::regtype, 'float8'::regtype,
                                                   'json'::regtype, 'jsonb'::regtype)
                 OR inexact_composite THEN format('NOT (%s IS NULL)', v)
            WHEN typcategory = 'A' THEN
                format('pg_catalog.array_lower(%s, 1) <> 1 OR pg_catalog.array_ndims(%s) > 1'
                       ' AND pg_catalog.array_dims(%s) OPERATOR(pg_catalog.!~)'
                       ' ''^(\[1:[0-9]+\])+$''', v, v, v)
            END AS exact_when
        FROM typed
    )
    SELECT array_agg(format('%s, CASE WHEN ($2 IS NULL OR $2 OPERATOR(pg_catalog.?) %s)'
                            ' AND (%s) THEN %s::text END', k, k, exact_when, v)
                     ORDER BY attnum),
           string_agg(format('(%s)', exact_when), ' OR ' ORDER BY attnum)
    INTO v_pairs, v_any
    FROM rules WHERE exact_when IS NOT NULL;
    IF v_pairs IS NOT NULL THEN
        -- A row holding none of these values takes the ELSE branch: the fields (or
        -- to_jsonb) alone, computed once. jsonb_build_object takes at most 100 arguments:
        -- one call per 50 columns. The replacements are strings or NULL (stripped: the
        -- fields keep their own value).
        SELECT format('SELECT CASE WHEN %s THEN %s OPERATOR(pg_catalog.||) '
                      'pg_catalog.jsonb_strip_nulls(%s) ELSE %s END',
                      v_any, v_fields,
                      string_agg(format('pg_catalog.jsonb_build_object(%s)', p),
                                 ' OPERATOR(pg_catalog.||) ' ORDER BY chunk),
                      v_fields)
        INTO v_body
        FROM (SELECT (n - 1) / 50 AS chunk, string_agg(pair, ', ' ORDER BY n) AS p
              FROM unnest(v_pairs) WITH ORDINALITY AS x(pair, n)
              GROUP BY 1) AS chunks;
    END IF;
    EXECUTE format('CREATE OR REPLACE FUNCTION %I.%I(%s, jsonb) RETURNS jsonb '
                   'LANGUAGE sql STABLE PARALLEL SAFE AS %L',
                   schema_name, name, relation, v_body);
    EXECUTE format('COMMENT ON FUNCTION %I.%I(%s, jsonb) IS %L', schema_name, name, relation,
                   'cdc-bridge: exact wire values of ' || relation || ' (generated at install)');
    -- The relay role is granted EXECUTE by the install's grants (grant_wire_function).
    EXECUTE format('REVOKE ALL ON FUNCTION %I.%I(%s, jsonb) FROM PUBLIC', schema_name, name,
                   relation);
END
$create_wire_function_v1$;
REVOKE ALL ON FUNCTION "cdc_bridge".create_wire_function_v1(regclass, text, text) FROM PUBLIC;
CREATE TABLE IF NOT EXISTS "cdc_bridge".batches (
    batch_id     text PRIMARY KEY,          -- the webhook-id sent to the peer
    status       text NOT NULL,
    change_count int NOT NULL,
    first_id     bigint NOT NULL,           -- outbox ids covered (for listing)
    last_id      bigint NOT NULL,
    replay       bool NOT NULL DEFAULT false,
    created_at   timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz
);
CREATE INDEX IF NOT EXISTS batches_status_created ON "cdc_bridge".batches (status, created_at);
-- split: retried in smaller batches to find a change the peer keeps failing on;
-- abandoned: left unfinished by a relay that stopped or died (its changes went out again).
ALTER TABLE "cdc_bridge".batches DROP CONSTRAINT IF EXISTS batches_status_check;
ALTER TABLE "cdc_bridge".batches ADD CONSTRAINT batches_status_check
    CHECK (status IN ('pending', 'delivered', 'failed', 'split', 'abandoned'));
CREATE TABLE IF NOT EXISTS "cdc_bridge".attempts (
    batch_id      text NOT NULL REFERENCES "cdc_bridge".batches ON DELETE CASCADE,
    attempted_at  timestamptz NOT NULL DEFAULT now(),
    http_status   int,                      -- NULL: no answer (connection error, timeout)
    error         text,
    response_body text,
    duration_ms   double precision
);
CREATE INDEX IF NOT EXISTS attempts_batch ON "cdc_bridge".attempts (batch_id, attempted_at);
CREATE TABLE IF NOT EXISTS "cdc_bridge".delivered (
    id           bigint PRIMARY KEY,        -- the outbox id
    txid         xid8 NOT NULL,
    table_name   text NOT NULL,
    op           text NOT NULL,
    key          jsonb NOT NULL,
    fields       jsonb,
    old          jsonb,
    changed      text[],
    origin       text NOT NULL,
    captured_at  timestamptz NOT NULL,
    batch_id     text,                      -- NULL for echoes dropped by the SOR filter
    result       text NOT NULL,             -- applied | duplicate | conflict_resolved | filtered
    delivered_at timestamptz NOT NULL DEFAULT now()
);
-- The relay inserts every acknowledged change here, so each index costs it on the hot
-- path. Lookups by record (inbound conflict checks, replay) only test key equality: a
-- hash index (one hash per insert, no jsonb comparisons down a btree). delivered_at
-- grows with the insert order: a BRIN index serves retention's range deletes at almost
-- no insert cost. They replace the btrees of earlier installs, which took about a fifth
-- of an acknowledgement's time in PostgreSQL.
DROP INDEX IF EXISTS "cdc_bridge".delivered_key;
CREATE INDEX IF NOT EXISTS delivered_key_hash ON "cdc_bridge".delivered USING hash (key);
DROP INDEX IF EXISTS "cdc_bridge".delivered_at;
CREATE INDEX IF NOT EXISTS delivered_at_brin ON "cdc_bridge".delivered USING brin (delivered_at);
-- Changes the peer refused for good. Later changes of the same (table_name, key) stay in
-- the outbox (parked) until this one is replayed or skipped, so order is never broken.
CREATE TABLE IF NOT EXISTS "cdc_bridge".failed (
    id            bigint PRIMARY KEY,       -- the outbox id
    txid          xid8 NOT NULL,
    table_name    text NOT NULL,
    op            text NOT NULL,
    key           jsonb NOT NULL,
    fields        jsonb,
    old           jsonb,
    changed       text[],
    origin        text NOT NULL,
    captured_at   timestamptz NOT NULL,
    batch_id      text,
    http_status   int,
    reason        text NOT NULL,
    response_body text,
    failed_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS failed_key ON "cdc_bridge".failed (table_name, key);
-- Keys of applied changes above their sender's watermark (a short window): a resend of
-- one of them is answered `duplicate`. Keys below the watermark are pruned, since the
-- watermark alone recognizes them. source and txid are parsed from the key
-- (`<source>:<txid>:<outbox id>`); a key of another shape keeps them NULL and goes by
-- age only (inbound.applied_key_retention_days).
CREATE TABLE IF NOT EXISTS "cdc_bridge".applied_keys (
    idempotency_key text PRIMARY KEY,
    applied_at      timestamptz NOT NULL DEFAULT now(),
    result          text NOT NULL,          -- applied | conflict_resolved
    source          text,
    txid            bigint
);
ALTER TABLE "cdc_bridge".applied_keys ADD COLUMN IF NOT EXISTS source text;
ALTER TABLE "cdc_bridge".applied_keys ADD COLUMN IF NOT EXISTS txid bigint;
-- BRIN: keys arrive in time order, and pruning is rare; a btree would slow every apply.
CREATE INDEX IF NOT EXISTS applied_keys_applied_at ON "cdc_bridge".applied_keys USING brin (applied_at);
-- Per sender, the highest watermark it sent: every change of a source transaction with a
-- lower txid has left its outbox (acknowledged, or refused: a replay of a refused change
-- comes under a new txid), so a change below it can only be a resend of one applied here.
CREATE TABLE IF NOT EXISTS "cdc_bridge".watermarks (
    source       text PRIMARY KEY,
    settled_below bigint NOT NULL,
    updated_at   timestamptz NOT NULL DEFAULT now()
);
-- One row per detected concurrent edit of a `both` field. Automatic policies record a
-- resolved row; `manual` parks an open one (at most one open per table, key and field).
CREATE TABLE IF NOT EXISTS "cdc_bridge".conflicts (
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
    ON "cdc_bridge".conflicts (table_name, key, field) WHERE status = 'open';
CREATE INDEX IF NOT EXISTS conflicts_detected_at ON "cdc_bridge".conflicts (detected_at);
-- `cdc-bridge poll`: per configured poll, the newest modification time read so far from
-- the peer application's list endpoint (as the application wrote it).
CREATE TABLE IF NOT EXISTS "cdc_bridge".poll_cursors (
    name      text PRIMARY KEY,
    cursor    text NOT NULL,
    polled_at timestamptz NOT NULL DEFAULT now()
);
-- The cross-reference: the id a peer application gave each record it created (the REST
-- adapter's `rest.id`), by table and this side's key; later requests name the record by it.
CREATE TABLE IF NOT EXISTS "cdc_bridge".xref (
    table_name text NOT NULL,
    key        jsonb NOT NULL,
    peer_id    text NOT NULL,
    learned_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (table_name, key)
);
-- `serve` finds this side's keys by the application's ids (entity_keys_of_peer_ids).
CREATE INDEX IF NOT EXISTS xref_peer_id ON "cdc_bridge".xref (table_name, peer_id);
-- One row per record of such a table that has crossed the bridge: filled by `serve` when
-- it first applies a record (the key it generates here) and by the relay when it first
-- ships a record born here (the key it mints for it: the value of the column mapped to
-- the entity key where there is one, else `<system>-<local key>`).
CREATE TABLE IF NOT EXISTS "cdc_bridge".entity_xref (
    entity      text NOT NULL,
    entity_key  jsonb NOT NULL,
    local_key   jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (entity, entity_key),
    UNIQUE (entity, local_key)
);
-- One row per `cdc-bridge replay` run, dry runs included: who, when, what and why.
CREATE TABLE IF NOT EXISTS "cdc_bridge".replays (
    replay_id   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    os_user     text NOT NULL,
    db_user     text NOT NULL DEFAULT current_user,
    replayed_at timestamptz NOT NULL DEFAULT now(),
    selection   text NOT NULL,            -- the command's selection, as the operator gave it
    change_ids  bigint[] NOT NULL,        -- the outbox ids requeued (or that would be)
    reason      text,
    dry_run     bool NOT NULL,
    force       bool NOT NULL
);
CREATE INDEX IF NOT EXISTS replays_at ON "cdc_bridge".replays (replayed_at);
-- Changes given up (or parked) on purpose by an operator: the audit of `skip` and `park`.
CREATE TABLE IF NOT EXISTS "cdc_bridge".skips (
    skip_id    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    change_id  bigint NOT NULL,
    table_name text NOT NULL,
    key        jsonb NOT NULL,
    os_user    text NOT NULL,
    db_user    text NOT NULL DEFAULT current_user,
    skipped_at timestamptz NOT NULL DEFAULT now(),
    reason     text NOT NULL
);
CREATE INDEX IF NOT EXISTS skips_at ON "cdc_bridge".skips (skipped_at);
-- skip: given up (the change moves to `delivered` as 'skipped'); park: a pending change
-- held back on purpose (it moves to `failed`, so its key waits until replay or skip).
ALTER TABLE "cdc_bridge".skips ADD COLUMN IF NOT EXISTS action text NOT NULL DEFAULT 'skip'
    CHECK (action IN ('skip', 'park'));
-- Progress of `cdc-bridge snapshot`: updated in the transaction of each chunk, so
-- `last_key` is exactly the last row whose upsert is in the outbox.
CREATE TABLE IF NOT EXISTS "cdc_bridge".snapshots (
    snapshot_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    table_name  text NOT NULL,
    where_expr  text,
    last_key    jsonb,
    rows        bigint NOT NULL DEFAULT 0,
    started_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    status      text NOT NULL DEFAULT 'running'
                CHECK (status IN ('running', 'finished', 'abandoned'))
);
CREATE INDEX IF NOT EXISTS snapshots_table ON "cdc_bridge".snapshots (table_name, status);
SELECT "cdc_bridge".create_wire_function_v1('"public"."items"'::regclass, 'cdc_bridge', 'wire_v1_c0e2fcbdfbbd1a6d');
-- Capture functions are generated per table and per kind of statement (capture/function.py):
-- `_ins`, `_upd` and `_del`. Each is called once per statement by a statement-level AFTER
-- trigger that hands it the statement's rows as transition tables (cdc_bridge_new,
-- cdc_bridge_old), and its body is a single INSERT ... SELECT over them: a statement that
-- touches 100k rows makes one set-based insert into the outbox, not 100k PL/pgSQL calls
-- that each start an executor. A one-row statement makes one call, as a row trigger did.
-- No variable, and one branch on a simple expression: PL/pgSQL prepares every expression
-- it evaluates again in each new transaction (a simple one cheaply, without an executor),
-- while the INSERTs' plans are prepared once per session.
-- The functions are replaced together with the table's triggers, in one transaction, and
-- their text is part of the hash `triggers status` compares.
-- They run as their owner (SECURITY DEFINER, search_path pinned): writing roles need no
-- grant on the bridge schema, so no role but the bridge's can add an outbox row by hand
-- (docs/security.md says why running as the invoker cannot keep that promise).
-- Functions are schema-qualified, so the writer's search_path cannot change what runs.
-- A statement trigger's return value is ignored; returning the (NULL) row variable skips
-- evaluating an expression.
-- The body is outbox.sql's `capture_into_slot`: its INSERT is one of the capture_* blocks
-- of outbox.sql, which holds every write of the outbox (fragments, not queries), into
-- the table the outbox's rotation names (one IF on a simple expression):
-- - capture_origin: who made the change. The bridge sets cdc_bridge.origin to the peer's
--   name while it applies the peer's changes (echo suppression). The setting counts only
--   in a session whose login role is a member of the relay role (the test of
--   `guard_local_write`); every other write is this side's, whatever the session set, so
--   it ships. session_user, not current_user: the function runs as its owner, and no
--   plain session can change its session_user (docs/security.md). The setting is tested
--   first and alone (a CASE stops at the first true branch; `NULL AND x` would still
--   evaluate x), so a local write pays one current_setting call and no role lookup.
-- - capture_update: old and new rows are paired by key. Keys only the old rows hold went
--   away (a key change), keys only the new rows hold arrived; the parts of the UNION ALL
--   run in order, deletes first, so the peer sees an old key go before a new one arrives.
--   A row that kept its key ships an update when a shipped field changed (no-op updates
--   and updates of fields that do not ship write nothing).
-- - capture_update_filtered: the same for a table with a `where` filter, which only ships
--   rows inside it: a row that starts (or stops) matching it arrives at (or leaves) the
--   peer. `OFFSET 0` keeps the op computed once per row, not once per use.
-- - capture_wake: wakes an idle relay. It is a condition of every capture INSERT that
--   PostgreSQL evaluates once per statement (an InitPlan: EXPLAIN shows a one-time
--   filter), and it is always true.
--   A transaction that sends NOTIFY takes a cluster-wide lock from pre-commit through its
--   commit flush, so notifying transactions commit one at a time: writers must not notify
--   when nobody waits. So the statement first asks, with one call to a built-in function:
--     pg_try_advisory_xact_lock_shared(<listening key>)
--   An idle relay holds that key exclusively, on a session of its own that ends when the
--   relay stops, crashes or loses its connection; then the call fails and the writer
--   notifies. With no relay, or a relay busy shipping (it releases the key and reads the
--   outbox again by itself), the call succeeds and the writer keeps the shared lock to
--   its commit: a relay that wants to listen again waits for those writers, then reads
--   once more, so no change is left without a read or a NOTIFY.
--   NOTIFY folds identical notifications of one transaction into one: at most one per
--   table and transaction.
--   Earlier versions asked the same in a statement trigger's WHEN clause (`cdc_bridge_notify`
--   with `notify_v2`): PostgreSQL reads and prepares a WHEN clause again for every
--   statement, and the trigger cost a one-row statement about 17,000 instructions; this
--   condition costs about 6,000 (bench/capture_instructions.py).
-- - capture_join_settings: planner settings for an update's function, the only one that
--   joins. PostgreSQL knows no row counts for transition tables, and PL/pgSQL keeps the
--   plan it made on the first call for the whole session: a plan made for a one-row
--   statement (nested loops) then ran a 20k-row statement of the same session in 263 s
--   instead of 1.1 s. So the joins are hash joins whatever the first call saw
--   (`enable_nestloop`, `enable_mergejoin` off), with a `work_mem` that holds a large
--   statement's hash tables without spilling, and `jit = off`: compiling a bulk
--   statement's capture took longer than running it (0.8 s of 4.5 s for 100k rows).
--   Each SET costs every call, so the insert and delete functions set only search_path.
CREATE OR REPLACE FUNCTION "cdc_bridge"."capture_v5_c0e2fcbdfbbd1a6d_ins"() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $capture$
-- The body of a capture function: its INSERT (one of the capture_* blocks below, once per
-- table) into the table outbox_slot names. The test is one call to a built-in function on
-- a constant, which PL/pgSQL evaluates as a simple expression (no executor, no query).
BEGIN
    IF pg_catalog.pg_sequence_last_value('"cdc_bridge"."outbox_slot"'::regclass) = 0 THEN
        INSERT INTO "cdc_bridge"."outbox_0" (table_name, op, key, fields, origin)
    SELECT 'public.items', 'I', pg_catalog.jsonb_build_object('item_no', n."item_no"), "cdc_bridge"."wire_v1_c0e2fcbdfbbd1a6d"(n.*, NULL::jsonb), CASE WHEN pg_catalog.current_setting('cdc_bridge.origin', true) IS DISTINCT FROM 'shop' THEN 'erp' WHEN pg_catalog.pg_has_role(session_user, 'cdc_bridge_relay', 'MEMBER') THEN 'shop' ELSE 'erp' END
    FROM "cdc_bridge_new" AS n
    WHERE true AND (SELECT pg_catalog.pg_try_advisory_xact_lock_shared(8215657387336968454::bigint) OR pg_catalog.pg_notify('cdc_bridge', 'public.items') IS NOT NULL);
    ELSE
        INSERT INTO "cdc_bridge"."outbox_1" (table_name, op, key, fields, origin)
    SELECT 'public.items', 'I', pg_catalog.jsonb_build_object('item_no', n."item_no"), "cdc_bridge"."wire_v1_c0e2fcbdfbbd1a6d"(n.*, NULL::jsonb), CASE WHEN pg_catalog.current_setting('cdc_bridge.origin', true) IS DISTINCT FROM 'shop' THEN 'erp' WHEN pg_catalog.pg_has_role(session_user, 'cdc_bridge_relay', 'MEMBER') THEN 'shop' ELSE 'erp' END
    FROM "cdc_bridge_new" AS n
    WHERE true AND (SELECT pg_catalog.pg_try_advisory_xact_lock_shared(8215657387336968454::bigint) OR pg_catalog.pg_notify('cdc_bridge', 'public.items') IS NOT NULL);
    END IF;
    RETURN NEW;
END
$capture$;
-- Only the DBA may attach it to a table (EXECUTE is checked when a trigger is created).
REVOKE ALL ON FUNCTION "cdc_bridge"."capture_v5_c0e2fcbdfbbd1a6d_ins"() FROM PUBLIC;
COMMENT ON FUNCTION "cdc_bridge"."capture_v5_c0e2fcbdfbbd1a6d_ins"() IS 'cdc-bridge: captures inserts of public.items (generated)';
-- Capture functions are generated per table and per kind of statement (capture/function.py):
-- `_ins`, `_upd` and `_del`. Each is called once per statement by a statement-level AFTER
-- trigger that hands it the statement's rows as transition tables (cdc_bridge_new,
-- cdc_bridge_old), and its body is a single INSERT ... SELECT over them: a statement that
-- touches 100k rows makes one set-based insert into the outbox, not 100k PL/pgSQL calls
-- that each start an executor. A one-row statement makes one call, as a row trigger did.
-- No variable, and one branch on a simple expression: PL/pgSQL prepares every expression
-- it evaluates again in each new transaction (a simple one cheaply, without an executor),
-- while the INSERTs' plans are prepared once per session.
-- The functions are replaced together with the table's triggers, in one transaction, and
-- their text is part of the hash `triggers status` compares.
-- They run as their owner (SECURITY DEFINER, search_path pinned): writing roles need no
-- grant on the bridge schema, so no role but the bridge's can add an outbox row by hand
-- (docs/security.md says why running as the invoker cannot keep that promise).
-- Functions are schema-qualified, so the writer's search_path cannot change what runs.
-- A statement trigger's return value is ignored; returning the (NULL) row variable skips
-- evaluating an expression.
-- The body is outbox.sql's `capture_into_slot`: its INSERT is one of the capture_* blocks
-- of outbox.sql, which holds every write of the outbox (fragments, not queries), into
-- the table the outbox's rotation names (one IF on a simple expression):
-- - capture_origin: who made the change. The bridge sets cdc_bridge.origin to the peer's
--   name while it applies the peer's changes (echo suppression). The setting counts only
--   in a session whose login role is a member of the relay role (the test of
--   `guard_local_write`); every other write is this side's, whatever the session set, so
--   it ships. session_user, not current_user: the function runs as its owner, and no
--   plain session can change its session_user (docs/security.md). The setting is tested
--   first and alone (a CASE stops at the first true branch; `NULL AND x` would still
--   evaluate x), so a local write pays one current_setting call and no role lookup.
-- - capture_update: old and new rows are paired by key. Keys only the old rows hold went
--   away (a key change), keys only the new rows hold arrived; the parts of the UNION ALL
--   run in order, deletes first, so the peer sees an old key go before a new one arrives.
--   A row that kept its key ships an update when a shipped field changed (no-op updates
--   and updates of fields that do not ship write nothing).
-- - capture_update_filtered: the same for a table with a `where` filter, which only ships
--   rows inside it: a row that starts (or stops) matching it arrives at (or leaves) the
--   peer. `OFFSET 0` keeps the op computed once per row, not once per use.
-- - capture_wake: wakes an idle relay. It is a condition of every capture INSERT that
--   PostgreSQL evaluates once per statement (an InitPlan: EXPLAIN shows a one-time
--   filter), and it is always true.
--   A transaction that sends NOTIFY takes a cluster-wide lock from pre-commit through its
--   commit flush, so notifying transactions commit one at a time: writers must not notify
--   when nobody waits. So the statement first asks, with one call to a built-in function:
--     pg_try_advisory_xact_lock_shared(<listening key>)
--   An idle relay holds that key exclusively, on a session of its own that ends when the
--   relay stops, crashes or loses its connection; then the call fails and the writer
--   notifies. With no relay, or a relay busy shipping (it releases the key and reads the
--   outbox again by itself), the call succeeds and the writer keeps the shared lock to
--   its commit: a relay that wants to listen again waits for those writers, then reads
--   once more, so no change is left without a read or a NOTIFY.
--   NOTIFY folds identical notifications of one transaction into one: at most one per
--   table and transaction.
--   Earlier versions asked the same in a statement trigger's WHEN clause (`cdc_bridge_notify`
--   with `notify_v2`): PostgreSQL reads and prepares a WHEN clause again for every
--   statement, and the trigger cost a one-row statement about 17,000 instructions; this
--   condition costs about 6,000 (bench/capture_instructions.py).
-- - capture_join_settings: planner settings for an update's function, the only one that
--   joins. PostgreSQL knows no row counts for transition tables, and PL/pgSQL keeps the
--   plan it made on the first call for the whole session: a plan made for a one-row
--   statement (nested loops) then ran a 20k-row statement of the same session in 263 s
--   instead of 1.1 s. So the joins are hash joins whatever the first call saw
--   (`enable_nestloop`, `enable_mergejoin` off), with a `work_mem` that holds a large
--   statement's hash tables without spilling, and `jit = off`: compiling a bulk
--   statement's capture took longer than running it (0.8 s of 4.5 s for 100k rows).
--   Each SET costs every call, so the insert and delete functions set only search_path.
CREATE OR REPLACE FUNCTION "cdc_bridge"."capture_v5_c0e2fcbdfbbd1a6d_upd"() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
SET jit = off SET enable_nestloop = off SET enable_mergejoin = off SET work_mem = '64MB'
AS $capture$
-- The body of a capture function: its INSERT (one of the capture_* blocks below, once per
-- table) into the table outbox_slot names. The test is one call to a built-in function on
-- a constant, which PL/pgSQL evaluates as a simple expression (no executor, no query).
BEGIN
    IF pg_catalog.pg_sequence_last_value('"cdc_bridge"."outbox_slot"'::regclass) = 0 THEN
        INSERT INTO "cdc_bridge"."outbox_0" (table_name, op, key, fields, old, changed, origin)
    SELECT 'public.items', 'D', pg_catalog.jsonb_build_object('item_no', o."item_no"), NULL::jsonb, NULL::jsonb, NULL::text[], CASE WHEN pg_catalog.current_setting('cdc_bridge.origin', true) IS DISTINCT FROM 'shop' THEN 'erp' WHEN pg_catalog.pg_has_role(session_user, 'cdc_bridge_relay', 'MEMBER') THEN 'shop' ELSE 'erp' END
    FROM "cdc_bridge_old" AS o
    WHERE NOT EXISTS (SELECT FROM "cdc_bridge_new" AS n WHERE n."item_no" = o."item_no") AND (SELECT pg_catalog.pg_try_advisory_xact_lock_shared(8215657387336968454::bigint) OR pg_catalog.pg_notify('cdc_bridge', 'public.items') IS NOT NULL)
    UNION ALL
    SELECT 'public.items', 'U', pg_catalog.jsonb_build_object('item_no', n."item_no"), "cdc_bridge"."wire_v1_c0e2fcbdfbbd1a6d"(n.*, NULL::jsonb), NULL::jsonb, NULL::text[], CASE WHEN pg_catalog.current_setting('cdc_bridge.origin', true) IS DISTINCT FROM 'shop' THEN 'erp' WHEN pg_catalog.pg_has_role(session_user, 'cdc_bridge_relay', 'MEMBER') THEN 'shop' ELSE 'erp' END
    FROM "cdc_bridge_new" AS n JOIN "cdc_bridge_old" AS o ON n."item_no" = o."item_no"
    WHERE (n.*) *<> (o.*)
    UNION ALL
    SELECT 'public.items', 'I', pg_catalog.jsonb_build_object('item_no', n."item_no"), "cdc_bridge"."wire_v1_c0e2fcbdfbbd1a6d"(n.*, NULL::jsonb), NULL, NULL, CASE WHEN pg_catalog.current_setting('cdc_bridge.origin', true) IS DISTINCT FROM 'shop' THEN 'erp' WHEN pg_catalog.pg_has_role(session_user, 'cdc_bridge_relay', 'MEMBER') THEN 'shop' ELSE 'erp' END
    FROM "cdc_bridge_new" AS n
    WHERE NOT EXISTS (SELECT FROM "cdc_bridge_old" AS o WHERE n."item_no" = o."item_no");
    ELSE
        INSERT INTO "cdc_bridge"."outbox_1" (table_name, op, key, fields, old, changed, origin)
    SELECT 'public.items', 'D', pg_catalog.jsonb_build_object('item_no', o."item_no"), NULL::jsonb, NULL::jsonb, NULL::text[], CASE WHEN pg_catalog.current_setting('cdc_bridge.origin', true) IS DISTINCT FROM 'shop' THEN 'erp' WHEN pg_catalog.pg_has_role(session_user, 'cdc_bridge_relay', 'MEMBER') THEN 'shop' ELSE 'erp' END
    FROM "cdc_bridge_old" AS o
    WHERE NOT EXISTS (SELECT FROM "cdc_bridge_new" AS n WHERE n."item_no" = o."item_no") AND (SELECT pg_catalog.pg_try_advisory_xact_lock_shared(8215657387336968454::bigint) OR pg_catalog.pg_notify('cdc_bridge', 'public.items') IS NOT NULL)
    UNION ALL
    SELECT 'public.items', 'U', pg_catalog.jsonb_build_object('item_no', n."item_no"), "cdc_bridge"."wire_v1_c0e2fcbdfbbd1a6d"(n.*, NULL::jsonb), NULL::jsonb, NULL::text[], CASE WHEN pg_catalog.current_setting('cdc_bridge.origin', true) IS DISTINCT FROM 'shop' THEN 'erp' WHEN pg_catalog.pg_has_role(session_user, 'cdc_bridge_relay', 'MEMBER') THEN 'shop' ELSE 'erp' END
    FROM "cdc_bridge_new" AS n JOIN "cdc_bridge_old" AS o ON n."item_no" = o."item_no"
    WHERE (n.*) *<> (o.*)
    UNION ALL
    SELECT 'public.items', 'I', pg_catalog.jsonb_build_object('item_no', n."item_no"), "cdc_bridge"."wire_v1_c0e2fcbdfbbd1a6d"(n.*, NULL::jsonb), NULL, NULL, CASE WHEN pg_catalog.current_setting('cdc_bridge.origin', true) IS DISTINCT FROM 'shop' THEN 'erp' WHEN pg_catalog.pg_has_role(session_user, 'cdc_bridge_relay', 'MEMBER') THEN 'shop' ELSE 'erp' END
    FROM "cdc_bridge_new" AS n
    WHERE NOT EXISTS (SELECT FROM "cdc_bridge_old" AS o WHERE n."item_no" = o."item_no");
    END IF;
    RETURN NEW;
END
$capture$;
-- Only the DBA may attach it to a table (EXECUTE is checked when a trigger is created).
REVOKE ALL ON FUNCTION "cdc_bridge"."capture_v5_c0e2fcbdfbbd1a6d_upd"() FROM PUBLIC;
COMMENT ON FUNCTION "cdc_bridge"."capture_v5_c0e2fcbdfbbd1a6d_upd"() IS 'cdc-bridge: captures updates of public.items (generated)';
-- Capture functions are generated per table and per kind of statement (capture/function.py):
-- `_ins`, `_upd` and `_del`. Each is called once per statement by a statement-level AFTER
-- trigger that hands it the statement's rows as transition tables (cdc_bridge_new,
-- cdc_bridge_old), and its body is a single INSERT ... SELECT over them: a statement that
-- touches 100k rows makes one set-based insert into the outbox, not 100k PL/pgSQL calls
-- that each start an executor. A one-row statement makes one call, as a row trigger did.
-- No variable, and one branch on a simple expression: PL/pgSQL prepares every expression
-- it evaluates again in each new transaction (a simple one cheaply, without an executor),
-- while the INSERTs' plans are prepared once per session.
-- The functions are replaced together with the table's triggers, in one transaction, and
-- their text is part of the hash `triggers status` compares.
-- They run as their owner (SECURITY DEFINER, search_path pinned): writing roles need no
-- grant on the bridge schema, so no role but the bridge's can add an outbox row by hand
-- (docs/security.md says why running as the invoker cannot keep that promise).
-- Functions are schema-qualified, so the writer's search_path cannot change what runs.
-- A statement trigger's return value is ignored; returning the (NULL) row variable skips
-- evaluating an expression.
-- The body is outbox.sql's `capture_into_slot`: its INSERT is one of the capture_* blocks
-- of outbox.sql, which holds every write of the outbox (fragments, not queries), into
-- the table the outbox's rotation names (one IF on a simple expression):
-- - capture_origin: who made the change. The bridge sets cdc_bridge.origin to the peer's
--   name while it applies the peer's changes (echo suppression). The setting counts only
--   in a session whose login role is a member of the relay role (the test of
--   `guard_local_write`); every other write is this side's, whatever the session set, so
--   it ships. session_user, not current_user: the function runs as its owner, and no
--   plain session can change its session_user (docs/security.md). The setting is tested
--   first and alone (a CASE stops at the first true branch; `NULL AND x` would still
--   evaluate x), so a local write pays one current_setting call and no role lookup.
-- - capture_update: old and new rows are paired by key. Keys only the old rows hold went
--   away (a key change), keys only the new rows hold arrived; the parts of the UNION ALL
--   run in order, deletes first, so the peer sees an old key go before a new one arrives.
--   A row that kept its key ships an update when a shipped field changed (no-op updates
--   and updates of fields that do not ship write nothing).
-- - capture_update_filtered: the same for a table with a `where` filter, which only ships
--   rows inside it: a row that starts (or stops) matching it arrives at (or leaves) the
--   peer. `OFFSET 0` keeps the op computed once per row, not once per use.
-- - capture_wake: wakes an idle relay. It is a condition of every capture INSERT that
--   PostgreSQL evaluates once per statement (an InitPlan: EXPLAIN shows a one-time
--   filter), and it is always true.
--   A transaction that sends NOTIFY takes a cluster-wide lock from pre-commit through its
--   commit flush, so notifying transactions commit one at a time: writers must not notify
--   when nobody waits. So the statement first asks, with one call to a built-in function:
--     pg_try_advisory_xact_lock_shared(<listening key>)
--   An idle relay holds that key exclusively, on a session of its own that ends when the
--   relay stops, crashes or loses its connection; then the call fails and the writer
--   notifies. With no relay, or a relay busy shipping (it releases the key and reads the
--   outbox again by itself), the call succeeds and the writer keeps the shared lock to
--   its commit: a relay that wants to listen again waits for those writers, then reads
--   once more, so no change is left without a read or a NOTIFY.
--   NOTIFY folds identical notifications of one transaction into one: at most one per
--   table and transaction.
--   Earlier versions asked the same in a statement trigger's WHEN clause (`cdc_bridge_notify`
--   with `notify_v2`): PostgreSQL reads and prepares a WHEN clause again for every
--   statement, and the trigger cost a one-row statement about 17,000 instructions; this
--   condition costs about 6,000 (bench/capture_instructions.py).
-- - capture_join_settings: planner settings for an update's function, the only one that
--   joins. PostgreSQL knows no row counts for transition tables, and PL/pgSQL keeps the
--   plan it made on the first call for the whole session: a plan made for a one-row
--   statement (nested loops) then ran a 20k-row statement of the same session in 263 s
--   instead of 1.1 s. So the joins are hash joins whatever the first call saw
--   (`enable_nestloop`, `enable_mergejoin` off), with a `work_mem` that holds a large
--   statement's hash tables without spilling, and `jit = off`: compiling a bulk
--   statement's capture took longer than running it (0.8 s of 4.5 s for 100k rows).
--   Each SET costs every call, so the insert and delete functions set only search_path.
CREATE OR REPLACE FUNCTION "cdc_bridge"."capture_v5_c0e2fcbdfbbd1a6d_del"() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $capture$
-- The body of a capture function: its INSERT (one of the capture_* blocks below, once per
-- table) into the table outbox_slot names. The test is one call to a built-in function on
-- a constant, which PL/pgSQL evaluates as a simple expression (no executor, no query).
BEGIN
    IF pg_catalog.pg_sequence_last_value('"cdc_bridge"."outbox_slot"'::regclass) = 0 THEN
        INSERT INTO "cdc_bridge"."outbox_0" (table_name, op, key, origin)
    SELECT 'public.items', 'D', pg_catalog.jsonb_build_object('item_no', o."item_no"), CASE WHEN pg_catalog.current_setting('cdc_bridge.origin', true) IS DISTINCT FROM 'shop' THEN 'erp' WHEN pg_catalog.pg_has_role(session_user, 'cdc_bridge_relay', 'MEMBER') THEN 'shop' ELSE 'erp' END
    FROM "cdc_bridge_old" AS o
    WHERE true AND (SELECT pg_catalog.pg_try_advisory_xact_lock_shared(8215657387336968454::bigint) OR pg_catalog.pg_notify('cdc_bridge', 'public.items') IS NOT NULL);
    ELSE
        INSERT INTO "cdc_bridge"."outbox_1" (table_name, op, key, origin)
    SELECT 'public.items', 'D', pg_catalog.jsonb_build_object('item_no', o."item_no"), CASE WHEN pg_catalog.current_setting('cdc_bridge.origin', true) IS DISTINCT FROM 'shop' THEN 'erp' WHEN pg_catalog.pg_has_role(session_user, 'cdc_bridge_relay', 'MEMBER') THEN 'shop' ELSE 'erp' END
    FROM "cdc_bridge_old" AS o
    WHERE true AND (SELECT pg_catalog.pg_try_advisory_xact_lock_shared(8215657387336968454::bigint) OR pg_catalog.pg_notify('cdc_bridge', 'public.items') IS NOT NULL);
    END IF;
    RETURN NEW;
END
$capture$;
-- Only the DBA may attach it to a table (EXECUTE is checked when a trigger is created).
REVOKE ALL ON FUNCTION "cdc_bridge"."capture_v5_c0e2fcbdfbbd1a6d_del"() FROM PUBLIC;
COMMENT ON FUNCTION "cdc_bridge"."capture_v5_c0e2fcbdfbbd1a6d_del"() IS 'cdc-bridge: captures deletes of public.items (generated)';
DROP TRIGGER IF EXISTS "cdc_bridge_capture_ins" ON "public"."items";
CREATE TRIGGER "cdc_bridge_capture_ins" AFTER INSERT ON "public"."items"
    REFERENCING NEW TABLE AS "cdc_bridge_new"
    FOR EACH STATEMENT
    EXECUTE FUNCTION "cdc_bridge"."capture_v5_c0e2fcbdfbbd1a6d_ins"();
COMMENT ON TRIGGER "cdc_bridge_capture_ins" ON "public"."items" IS 'cdc-bridge definition fe15eb178b02e836';
DROP TRIGGER IF EXISTS "cdc_bridge_capture_upd" ON "public"."items";
CREATE TRIGGER "cdc_bridge_capture_upd" AFTER UPDATE ON "public"."items"
    REFERENCING OLD TABLE AS "cdc_bridge_old" NEW TABLE AS "cdc_bridge_new"
    FOR EACH STATEMENT
    EXECUTE FUNCTION "cdc_bridge"."capture_v5_c0e2fcbdfbbd1a6d_upd"();
COMMENT ON TRIGGER "cdc_bridge_capture_upd" ON "public"."items" IS 'cdc-bridge definition fe15eb178b02e836';
DROP TRIGGER IF EXISTS "cdc_bridge_capture_del" ON "public"."items";
CREATE TRIGGER "cdc_bridge_capture_del" AFTER DELETE ON "public"."items"
    REFERENCING OLD TABLE AS "cdc_bridge_old"
    FOR EACH STATEMENT
    EXECUTE FUNCTION "cdc_bridge"."capture_v5_c0e2fcbdfbbd1a6d_del"();
COMMENT ON TRIGGER "cdc_bridge_capture_del" ON "public"."items" IS 'cdc-bridge definition fe15eb178b02e836';
DROP TRIGGER IF EXISTS "cdc_bridge_no_truncate" ON "public"."items";
CREATE TRIGGER "cdc_bridge_no_truncate" BEFORE TRUNCATE ON "public"."items"
    FOR EACH STATEMENT
    EXECUTE FUNCTION "cdc_bridge"."refuse_truncate_v1"('public.items');
COMMENT ON TRIGGER "cdc_bridge_no_truncate" ON "public"."items" IS 'cdc-bridge definition fe15eb178b02e836';
INSERT INTO "cdc_bridge".installed_tables AS t (table_name, relation, definition_hash, columns)
SELECT 'public.items', '"public"."items"'::regclass, 'fe15eb178b02e836',
       ARRAY(SELECT a.attname::text FROM pg_attribute a
             WHERE a.attrelid = '"public"."items"'::regclass AND a.attnum > 0 AND NOT a.attisdropped
             ORDER BY a.attnum)
ON CONFLICT (table_name) DO UPDATE
SET relation = excluded.relation, definition_hash = excluded.definition_hash,
    columns = excluded.columns, installed_at = now();
DROP TRIGGER IF EXISTS "cdc_bridge_capture_rekey" ON "public"."items";
DROP TRIGGER IF EXISTS "cdc_bridge_capture_enter" ON "public"."items";
DROP TRIGGER IF EXISTS "cdc_bridge_capture_leave" ON "public"."items";
DROP FUNCTION IF EXISTS "cdc_bridge"."capture_v4_c0e2fcbdfbbd1a6d_ins"();
DROP FUNCTION IF EXISTS "cdc_bridge"."capture_v4_c0e2fcbdfbbd1a6d_upd"();
DROP FUNCTION IF EXISTS "cdc_bridge"."capture_v4_c0e2fcbdfbbd1a6d_del"();
DROP FUNCTION IF EXISTS "cdc_bridge"."capture_v3_c0e2fcbdfbbd1a6d_ins"();
DROP FUNCTION IF EXISTS "cdc_bridge"."capture_v3_c0e2fcbdfbbd1a6d_upd"();
DROP FUNCTION IF EXISTS "cdc_bridge"."capture_v3_c0e2fcbdfbbd1a6d_rekey"();
DROP FUNCTION IF EXISTS "cdc_bridge"."capture_v3_c0e2fcbdfbbd1a6d_del"();
DROP FUNCTION IF EXISTS "cdc_bridge"."capture_v2_c0e2fcbdfbbd1a6d"();
SELECT "cdc_bridge".create_wire_function_v1('"public"."customers"'::regclass, 'cdc_bridge', 'wire_v1_dfb56e0ba4df7250');
-- Capture functions are generated per table and per kind of statement (capture/function.py):
-- `_ins`, `_upd` and `_del`. Each is called once per statement by a statement-level AFTER
-- trigger that hands it the statement's rows as transition tables (cdc_bridge_new,
-- cdc_bridge_old), and its body is a single INSERT ... SELECT over them: a statement that
-- touches 100k rows makes one set-based insert into the outbox, not 100k PL/pgSQL calls
-- that each start an executor. A one-row statement makes one call, as a row trigger did.
-- No variable, and one branch on a simple expression: PL/pgSQL prepares every expression
-- it evaluates again in each new transaction (a simple one cheaply, without an executor),
-- while the INSERTs' plans are prepared once per session.
-- The functions are replaced together with the table's triggers, in one transaction, and
-- their text is part of the hash `triggers status` compares.
-- They run as their owner (SECURITY DEFINER, search_path pinned): writing roles need no
-- grant on the bridge schema, so no role but the bridge's can add an outbox row by hand
-- (docs/security.md says why running as the invoker cannot keep that promise).
-- Functions are schema-qualified, so the writer's search_path cannot change what runs.
-- A statement trigger's return value is ignored; returning the (NULL) row variable skips
-- evaluating an expression.
-- The body is outbox.sql's `capture_into_slot`: its INSERT is one of the capture_* blocks
-- of outbox.sql, which holds every write of the outbox (fragments, not queries), into
-- the table the outbox's rotation names (one IF on a simple expression):
-- - capture_origin: who made the change. The bridge sets cdc_bridge.origin to the peer's
--   name while it applies the peer's changes (echo suppression). The setting counts only
--   in a session whose login role is a member of the relay role (the test of
--   `guard_local_write`); every other write is this side's, whatever the session set, so
--   it ships. session_user, not current_user: the function runs as its owner, and no
--   plain session can change its session_user (docs/security.md). The setting is tested
--   first and alone (a CASE stops at the first true branch; `NULL AND x` would still
--   evaluate x), so a local write pays one current_setting call and no role lookup.
-- - capture_update: old and new rows are paired by key. Keys only the old rows hold went
--   away (a key change), keys only the new rows hold arrived; the parts of the UNION ALL
--   run in order, deletes first, so the peer sees an old key go before a new one arrives.
--   A row that kept its key ships an update when a shipped field changed (no-op updates
--   and updates of fields that do not ship write nothing).
-- - capture_update_filtered: the same for a table with a `where` filter, which only ships
--   rows inside it: a row that starts (or stops) matching it arrives at (or leaves) the
--   peer. `OFFSET 0` keeps the op computed once per row, not once per use.
-- - capture_wake: wakes an idle relay. It is a condition of every capture INSERT that
--   PostgreSQL evaluates once per statement (an InitPlan: EXPLAIN shows a one-time
--   filter), and it is always true.
--   A transaction that sends NOTIFY takes a cluster-wide lock from pre-commit through its
--   commit flush, so notifying transactions commit one at a time: writers must not notify
--   when nobody waits. So the statement first asks, with one call to a built-in function:
--     pg_try_advisory_xact_lock_shared(<listening key>)
--   An idle relay holds that key exclusively, on a session of its own that ends when the
--   relay stops, crashes or loses its connection; then the call fails and the writer
--   notifies. With no relay, or a relay busy shipping (it releases the key and reads the
--   outbox again by itself), the call succeeds and the writer keeps the shared lock to
--   its commit: a relay that wants to listen again waits for those writers, then reads
--   once more, so no change is left without a read or a NOTIFY.
--   NOTIFY folds identical notifications of one transaction into one: at most one per
--   table and transaction.
--   Earlier versions asked the same in a statement trigger's WHEN clause (`cdc_bridge_notify`
--   with `notify_v2`): PostgreSQL reads and prepares a WHEN clause again for every
--   statement, and the trigger cost a one-row statement about 17,000 instructions; this
--   condition costs about 6,000 (bench/capture_instructions.py).
-- - capture_join_settings: planner settings for an update's function, the only one that
--   joins. PostgreSQL knows no row counts for transition tables, and PL/pgSQL keeps the
--   plan it made on the first call for the whole session: a plan made for a one-row
--   statement (nested loops) then ran a 20k-row statement of the same session in 263 s
--   instead of 1.1 s. So the joins are hash joins whatever the first call saw
--   (`enable_nestloop`, `enable_mergejoin` off), with a `work_mem` that holds a large
--   statement's hash tables without spilling, and `jit = off`: compiling a bulk
--   statement's capture took longer than running it (0.8 s of 4.5 s for 100k rows).
--   Each SET costs every call, so the insert and delete functions set only search_path.
CREATE OR REPLACE FUNCTION "cdc_bridge"."capture_v5_dfb56e0ba4df7250_ins"() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $capture$
-- The body of a capture function: its INSERT (one of the capture_* blocks below, once per
-- table) into the table outbox_slot names. The test is one call to a built-in function on
-- a constant, which PL/pgSQL evaluates as a simple expression (no executor, no query).
BEGIN
    IF pg_catalog.pg_sequence_last_value('"cdc_bridge"."outbox_slot"'::regclass) = 0 THEN
        INSERT INTO "cdc_bridge"."outbox_0" (table_name, op, key, fields, origin)
    SELECT 'public.customers', 'I', pg_catalog.jsonb_build_object('customer_no', n."customer_no"), "cdc_bridge"."wire_v1_dfb56e0ba4df7250"(n.*, pg_catalog.jsonb_build_object('customer_no', n."customer_no", 'name', n."name", 'email', n."email")), CASE WHEN pg_catalog.current_setting('cdc_bridge.origin', true) IS DISTINCT FROM 'shop' THEN 'erp' WHEN pg_catalog.pg_has_role(session_user, 'cdc_bridge_relay', 'MEMBER') THEN 'shop' ELSE 'erp' END
    FROM "cdc_bridge_new" AS n
    WHERE true AND (SELECT pg_catalog.pg_try_advisory_xact_lock_shared(8215657387336968454::bigint) OR pg_catalog.pg_notify('cdc_bridge', 'public.customers') IS NOT NULL);
    ELSE
        INSERT INTO "cdc_bridge"."outbox_1" (table_name, op, key, fields, origin)
    SELECT 'public.customers', 'I', pg_catalog.jsonb_build_object('customer_no', n."customer_no"), "cdc_bridge"."wire_v1_dfb56e0ba4df7250"(n.*, pg_catalog.jsonb_build_object('customer_no', n."customer_no", 'name', n."name", 'email', n."email")), CASE WHEN pg_catalog.current_setting('cdc_bridge.origin', true) IS DISTINCT FROM 'shop' THEN 'erp' WHEN pg_catalog.pg_has_role(session_user, 'cdc_bridge_relay', 'MEMBER') THEN 'shop' ELSE 'erp' END
    FROM "cdc_bridge_new" AS n
    WHERE true AND (SELECT pg_catalog.pg_try_advisory_xact_lock_shared(8215657387336968454::bigint) OR pg_catalog.pg_notify('cdc_bridge', 'public.customers') IS NOT NULL);
    END IF;
    RETURN NEW;
END
$capture$;
-- Only the DBA may attach it to a table (EXECUTE is checked when a trigger is created).
REVOKE ALL ON FUNCTION "cdc_bridge"."capture_v5_dfb56e0ba4df7250_ins"() FROM PUBLIC;
COMMENT ON FUNCTION "cdc_bridge"."capture_v5_dfb56e0ba4df7250_ins"() IS 'cdc-bridge: captures inserts of public.customers (generated)';
-- Capture functions are generated per table and per kind of statement (capture/function.py):
-- `_ins`, `_upd` and `_del`. Each is called once per statement by a statement-level AFTER
-- trigger that hands it the statement's rows as transition tables (cdc_bridge_new,
-- cdc_bridge_old), and its body is a single INSERT ... SELECT over them: a statement that
-- touches 100k rows makes one set-based insert into the outbox, not 100k PL/pgSQL calls
-- that each start an executor. A one-row statement makes one call, as a row trigger did.
-- No variable, and one branch on a simple expression: PL/pgSQL prepares every expression
-- it evaluates again in each new transaction (a simple one cheaply, without an executor),
-- while the INSERTs' plans are prepared once per session.
-- The functions are replaced together with the table's triggers, in one transaction, and
-- their text is part of the hash `triggers status` compares.
-- They run as their owner (SECURITY DEFINER, search_path pinned): writing roles need no
-- grant on the bridge schema, so no role but the bridge's can add an outbox row by hand
-- (docs/security.md says why running as the invoker cannot keep that promise).
-- Functions are schema-qualified, so the writer's search_path cannot change what runs.
-- A statement trigger's return value is ignored; returning the (NULL) row variable skips
-- evaluating an expression.
-- The body is outbox.sql's `capture_into_slot`: its INSERT is one of the capture_* blocks
-- of outbox.sql, which holds every write of the outbox (fragments, not queries), into
-- the table the outbox's rotation names (one IF on a simple expression):
-- - capture_origin: who made the change. The bridge sets cdc_bridge.origin to the peer's
--   name while it applies the peer's changes (echo suppression). The setting counts only
--   in a session whose login role is a member of the relay role (the test of
--   `guard_local_write`); every other write is this side's, whatever the session set, so
--   it ships. session_user, not current_user: the function runs as its owner, and no
--   plain session can change its session_user (docs/security.md). The setting is tested
--   first and alone (a CASE stops at the first true branch; `NULL AND x` would still
--   evaluate x), so a local write pays one current_setting call and no role lookup.
-- - capture_update: old and new rows are paired by key. Keys only the old rows hold went
--   away (a key change), keys only the new rows hold arrived; the parts of the UNION ALL
--   run in order, deletes first, so the peer sees an old key go before a new one arrives.
--   A row that kept its key ships an update when a shipped field changed (no-op updates
--   and updates of fields that do not ship write nothing).
-- - capture_update_filtered: the same for a table with a `where` filter, which only ships
--   rows inside it: a row that starts (or stops) matching it arrives at (or leaves) the
--   peer. `OFFSET 0` keeps the op computed once per row, not once per use.
-- - capture_wake: wakes an idle relay. It is a condition of every capture INSERT that
--   PostgreSQL evaluates once per statement (an InitPlan: EXPLAIN shows a one-time
--   filter), and it is always true.
--   A transaction that sends NOTIFY takes a cluster-wide lock from pre-commit through its
--   commit flush, so notifying transactions commit one at a time: writers must not notify
--   when nobody waits. So the statement first asks, with one call to a built-in function:
--     pg_try_advisory_xact_lock_shared(<listening key>)
--   An idle relay holds that key exclusively, on a session of its own that ends when the
--   relay stops, crashes or loses its connection; then the call fails and the writer
--   notifies. With no relay, or a relay busy shipping (it releases the key and reads the
--   outbox again by itself), the call succeeds and the writer keeps the shared lock to
--   its commit: a relay that wants to listen again waits for those writers, then reads
--   once more, so no change is left without a read or a NOTIFY.
--   NOTIFY folds identical notifications of one transaction into one: at most one per
--   table and transaction.
--   Earlier versions asked the same in a statement trigger's WHEN clause (`cdc_bridge_notify`
--   with `notify_v2`): PostgreSQL reads and prepares a WHEN clause again for every
--   statement, and the trigger cost a one-row statement about 17,000 instructions; this
--   condition costs about 6,000 (bench/capture_instructions.py).
-- - capture_join_settings: planner settings for an update's function, the only one that
--   joins. PostgreSQL knows no row counts for transition tables, and PL/pgSQL keeps the
--   plan it made on the first call for the whole session: a plan made for a one-row
--   statement (nested loops) then ran a 20k-row statement of the same session in 263 s
--   instead of 1.1 s. So the joins are hash joins whatever the first call saw
--   (`enable_nestloop`, `enable_mergejoin` off), with a `work_mem` that holds a large
--   statement's hash tables without spilling, and `jit = off`: compiling a bulk
--   statement's capture took longer than running it (0.8 s of 4.5 s for 100k rows).
--   Each SET costs every call, so the insert and delete functions set only search_path.
CREATE OR REPLACE FUNCTION "cdc_bridge"."capture_v5_dfb56e0ba4df7250_upd"() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
SET jit = off SET enable_nestloop = off SET enable_mergejoin = off SET work_mem = '64MB'
AS $capture$
-- The body of a capture function: its INSERT (one of the capture_* blocks below, once per
-- table) into the table outbox_slot names. The test is one call to a built-in function on
-- a constant, which PL/pgSQL evaluates as a simple expression (no executor, no query).
BEGIN
    IF pg_catalog.pg_sequence_last_value('"cdc_bridge"."outbox_slot"'::regclass) = 0 THEN
        INSERT INTO "cdc_bridge"."outbox_0" (table_name, op, key, fields, old, changed, origin)
    SELECT 'public.customers', 'D', pg_catalog.jsonb_build_object('customer_no', o."customer_no"), NULL::jsonb, NULL::jsonb, NULL::text[], CASE WHEN pg_catalog.current_setting('cdc_bridge.origin', true) IS DISTINCT FROM 'shop' THEN 'erp' WHEN pg_catalog.pg_has_role(session_user, 'cdc_bridge_relay', 'MEMBER') THEN 'shop' ELSE 'erp' END
    FROM "cdc_bridge_old" AS o
    WHERE NOT EXISTS (SELECT FROM "cdc_bridge_new" AS n WHERE n."customer_no" = o."customer_no") AND (SELECT pg_catalog.pg_try_advisory_xact_lock_shared(8215657387336968454::bigint) OR pg_catalog.pg_notify('cdc_bridge', 'public.customers') IS NOT NULL)
    UNION ALL
    SELECT 'public.customers', 'U', pg_catalog.jsonb_build_object('customer_no', n."customer_no"), "cdc_bridge"."wire_v1_dfb56e0ba4df7250"(n.*, pg_catalog.jsonb_build_object('customer_no', n."customer_no", 'name', n."name") || CASE WHEN (ROW(n."email")::record) *<> (ROW(o."email")::record) THEN pg_catalog.jsonb_build_object('email', n."email") ELSE '{}'::jsonb END), nullif("cdc_bridge"."wire_v1_dfb56e0ba4df7250"(o.*, CASE WHEN (ROW(n."email")::record) *<> (ROW(o."email")::record) THEN pg_catalog.jsonb_build_object('email', o."email") ELSE '{}'::jsonb END), '{}'::jsonb), pg_catalog.array_remove(ARRAY[CASE WHEN (ROW(n."email")::record) *<> (ROW(o."email")::record) THEN 'email' END, CASE WHEN (ROW(n."name")::record) *<> (ROW(o."name")::record) THEN 'name' END]::text[], NULL), CASE WHEN pg_catalog.current_setting('cdc_bridge.origin', true) IS DISTINCT FROM 'shop' THEN 'erp' WHEN pg_catalog.pg_has_role(session_user, 'cdc_bridge_relay', 'MEMBER') THEN 'shop' ELSE 'erp' END
    FROM "cdc_bridge_new" AS n JOIN "cdc_bridge_old" AS o ON n."customer_no" = o."customer_no"
    WHERE (ROW(n."name")::record) *<> (ROW(o."name")::record) OR (ROW(n."email")::record) *<> (ROW(o."email")::record)
    UNION ALL
    SELECT 'public.customers', 'I', pg_catalog.jsonb_build_object('customer_no', n."customer_no"), "cdc_bridge"."wire_v1_dfb56e0ba4df7250"(n.*, pg_catalog.jsonb_build_object('customer_no', n."customer_no", 'name', n."name", 'email', n."email")), NULL, NULL, CASE WHEN pg_catalog.current_setting('cdc_bridge.origin', true) IS DISTINCT FROM 'shop' THEN 'erp' WHEN pg_catalog.pg_has_role(session_user, 'cdc_bridge_relay', 'MEMBER') THEN 'shop' ELSE 'erp' END
    FROM "cdc_bridge_new" AS n
    WHERE NOT EXISTS (SELECT FROM "cdc_bridge_old" AS o WHERE n."customer_no" = o."customer_no");
    ELSE
        INSERT INTO "cdc_bridge"."outbox_1" (table_name, op, key, fields, old, changed, origin)
    SELECT 'public.customers', 'D', pg_catalog.jsonb_build_object('customer_no', o."customer_no"), NULL::jsonb, NULL::jsonb, NULL::text[], CASE WHEN pg_catalog.current_setting('cdc_bridge.origin', true) IS DISTINCT FROM 'shop' THEN 'erp' WHEN pg_catalog.pg_has_role(session_user, 'cdc_bridge_relay', 'MEMBER') THEN 'shop' ELSE 'erp' END
    FROM "cdc_bridge_old" AS o
    WHERE NOT EXISTS (SELECT FROM "cdc_bridge_new" AS n WHERE n."customer_no" = o."customer_no") AND (SELECT pg_catalog.pg_try_advisory_xact_lock_shared(8215657387336968454::bigint) OR pg_catalog.pg_notify('cdc_bridge', 'public.customers') IS NOT NULL)
    UNION ALL
    SELECT 'public.customers', 'U', pg_catalog.jsonb_build_object('customer_no', n."customer_no"), "cdc_bridge"."wire_v1_dfb56e0ba4df7250"(n.*, pg_catalog.jsonb_build_object('customer_no', n."customer_no", 'name', n."name") || CASE WHEN (ROW(n."email")::record) *<> (ROW(o."email")::record) THEN pg_catalog.jsonb_build_object('email', n."email") ELSE '{}'::jsonb END), nullif("cdc_bridge"."wire_v1_dfb56e0ba4df7250"(o.*, CASE WHEN (ROW(n."email")::record) *<> (ROW(o."email")::record) THEN pg_catalog.jsonb_build_object('email', o."email") ELSE '{}'::jsonb END), '{}'::jsonb), pg_catalog.array_remove(ARRAY[CASE WHEN (ROW(n."email")::record) *<> (ROW(o."email")::record) THEN 'email' END, CASE WHEN (ROW(n."name")::record) *<> (ROW(o."name")::record) THEN 'name' END]::text[], NULL), CASE WHEN pg_catalog.current_setting('cdc_bridge.origin', true) IS DISTINCT FROM 'shop' THEN 'erp' WHEN pg_catalog.pg_has_role(session_user, 'cdc_bridge_relay', 'MEMBER') THEN 'shop' ELSE 'erp' END
    FROM "cdc_bridge_new" AS n JOIN "cdc_bridge_old" AS o ON n."customer_no" = o."customer_no"
    WHERE (ROW(n."name")::record) *<> (ROW(o."name")::record) OR (ROW(n."email")::record) *<> (ROW(o."email")::record)
    UNION ALL
    SELECT 'public.customers', 'I', pg_catalog.jsonb_build_object('customer_no', n."customer_no"), "cdc_bridge"."wire_v1_dfb56e0ba4df7250"(n.*, pg_catalog.jsonb_build_object('customer_no', n."customer_no", 'name', n."name", 'email', n."email")), NULL, NULL, CASE WHEN pg_catalog.current_setting('cdc_bridge.origin', true) IS DISTINCT FROM 'shop' THEN 'erp' WHEN pg_catalog.pg_has_role(session_user, 'cdc_bridge_relay', 'MEMBER') THEN 'shop' ELSE 'erp' END
    FROM "cdc_bridge_new" AS n
    WHERE NOT EXISTS (SELECT FROM "cdc_bridge_old" AS o WHERE n."customer_no" = o."customer_no");
    END IF;
    RETURN NEW;
END
$capture$;
-- Only the DBA may attach it to a table (EXECUTE is checked when a trigger is created).
REVOKE ALL ON FUNCTION "cdc_bridge"."capture_v5_dfb56e0ba4df7250_upd"() FROM PUBLIC;
COMMENT ON FUNCTION "cdc_bridge"."capture_v5_dfb56e0ba4df7250_upd"() IS 'cdc-bridge: captures updates of public.customers (generated)';
-- Capture functions are generated per table and per kind of statement (capture/function.py):
-- `_ins`, `_upd` and `_del`. Each is called once per statement by a statement-level AFTER
-- trigger that hands it the statement's rows as transition tables (cdc_bridge_new,
-- cdc_bridge_old), and its body is a single INSERT ... SELECT over them: a statement that
-- touches 100k rows makes one set-based insert into the outbox, not 100k PL/pgSQL calls
-- that each start an executor. A one-row statement makes one call, as a row trigger did.
-- No variable, and one branch on a simple expression: PL/pgSQL prepares every expression
-- it evaluates again in each new transaction (a simple one cheaply, without an executor),
-- while the INSERTs' plans are prepared once per session.
-- The functions are replaced together with the table's triggers, in one transaction, and
-- their text is part of the hash `triggers status` compares.
-- They run as their owner (SECURITY DEFINER, search_path pinned): writing roles need no
-- grant on the bridge schema, so no role but the bridge's can add an outbox row by hand
-- (docs/security.md says why running as the invoker cannot keep that promise).
-- Functions are schema-qualified, so the writer's search_path cannot change what runs.
-- A statement trigger's return value is ignored; returning the (NULL) row variable skips
-- evaluating an expression.
-- The body is outbox.sql's `capture_into_slot`: its INSERT is one of the capture_* blocks
-- of outbox.sql, which holds every write of the outbox (fragments, not queries), into
-- the table the outbox's rotation names (one IF on a simple expression):
-- - capture_origin: who made the change. The bridge sets cdc_bridge.origin to the peer's
--   name while it applies the peer's changes (echo suppression). The setting counts only
--   in a session whose login role is a member of the relay role (the test of
--   `guard_local_write`); every other write is this side's, whatever the session set, so
--   it ships. session_user, not current_user: the function runs as its owner, and no
--   plain session can change its session_user (docs/security.md). The setting is tested
--   first and alone (a CASE stops at the first true branch; `NULL AND x` would still
--   evaluate x), so a local write pays one current_setting call and no role lookup.
-- - capture_update: old and new rows are paired by key. Keys only the old rows hold went
--   away (a key change), keys only the new rows hold arrived; the parts of the UNION ALL
--   run in order, deletes first, so the peer sees an old key go before a new one arrives.
--   A row that kept its key ships an update when a shipped field changed (no-op updates
--   and updates of fields that do not ship write nothing).
-- - capture_update_filtered: the same for a table with a `where` filter, which only ships
--   rows inside it: a row that starts (or stops) matching it arrives at (or leaves) the
--   peer. `OFFSET 0` keeps the op computed once per row, not once per use.
-- - capture_wake: wakes an idle relay. It is a condition of every capture INSERT that
--   PostgreSQL evaluates once per statement (an InitPlan: EXPLAIN shows a one-time
--   filter), and it is always true.
--   A transaction that sends NOTIFY takes a cluster-wide lock from pre-commit through its
--   commit flush, so notifying transactions commit one at a time: writers must not notify
--   when nobody waits. So the statement first asks, with one call to a built-in function:
--     pg_try_advisory_xact_lock_shared(<listening key>)
--   An idle relay holds that key exclusively, on a session of its own that ends when the
--   relay stops, crashes or loses its connection; then the call fails and the writer
--   notifies. With no relay, or a relay busy shipping (it releases the key and reads the
--   outbox again by itself), the call succeeds and the writer keeps the shared lock to
--   its commit: a relay that wants to listen again waits for those writers, then reads
--   once more, so no change is left without a read or a NOTIFY.
--   NOTIFY folds identical notifications of one transaction into one: at most one per
--   table and transaction.
--   Earlier versions asked the same in a statement trigger's WHEN clause (`cdc_bridge_notify`
--   with `notify_v2`): PostgreSQL reads and prepares a WHEN clause again for every
--   statement, and the trigger cost a one-row statement about 17,000 instructions; this
--   condition costs about 6,000 (bench/capture_instructions.py).
-- - capture_join_settings: planner settings for an update's function, the only one that
--   joins. PostgreSQL knows no row counts for transition tables, and PL/pgSQL keeps the
--   plan it made on the first call for the whole session: a plan made for a one-row
--   statement (nested loops) then ran a 20k-row statement of the same session in 263 s
--   instead of 1.1 s. So the joins are hash joins whatever the first call saw
--   (`enable_nestloop`, `enable_mergejoin` off), with a `work_mem` that holds a large
--   statement's hash tables without spilling, and `jit = off`: compiling a bulk
--   statement's capture took longer than running it (0.8 s of 4.5 s for 100k rows).
--   Each SET costs every call, so the insert and delete functions set only search_path.
CREATE OR REPLACE FUNCTION "cdc_bridge"."capture_v5_dfb56e0ba4df7250_del"() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $capture$
-- The body of a capture function: its INSERT (one of the capture_* blocks below, once per
-- table) into the table outbox_slot names. The test is one call to a built-in function on
-- a constant, which PL/pgSQL evaluates as a simple expression (no executor, no query).
BEGIN
    IF pg_catalog.pg_sequence_last_value('"cdc_bridge"."outbox_slot"'::regclass) = 0 THEN
        INSERT INTO "cdc_bridge"."outbox_0" (table_name, op, key, origin)
    SELECT 'public.customers', 'D', pg_catalog.jsonb_build_object('customer_no', o."customer_no"), CASE WHEN pg_catalog.current_setting('cdc_bridge.origin', true) IS DISTINCT FROM 'shop' THEN 'erp' WHEN pg_catalog.pg_has_role(session_user, 'cdc_bridge_relay', 'MEMBER') THEN 'shop' ELSE 'erp' END
    FROM "cdc_bridge_old" AS o
    WHERE true AND (SELECT pg_catalog.pg_try_advisory_xact_lock_shared(8215657387336968454::bigint) OR pg_catalog.pg_notify('cdc_bridge', 'public.customers') IS NOT NULL);
    ELSE
        INSERT INTO "cdc_bridge"."outbox_1" (table_name, op, key, origin)
    SELECT 'public.customers', 'D', pg_catalog.jsonb_build_object('customer_no', o."customer_no"), CASE WHEN pg_catalog.current_setting('cdc_bridge.origin', true) IS DISTINCT FROM 'shop' THEN 'erp' WHEN pg_catalog.pg_has_role(session_user, 'cdc_bridge_relay', 'MEMBER') THEN 'shop' ELSE 'erp' END
    FROM "cdc_bridge_old" AS o
    WHERE true AND (SELECT pg_catalog.pg_try_advisory_xact_lock_shared(8215657387336968454::bigint) OR pg_catalog.pg_notify('cdc_bridge', 'public.customers') IS NOT NULL);
    END IF;
    RETURN NEW;
END
$capture$;
-- Only the DBA may attach it to a table (EXECUTE is checked when a trigger is created).
REVOKE ALL ON FUNCTION "cdc_bridge"."capture_v5_dfb56e0ba4df7250_del"() FROM PUBLIC;
COMMENT ON FUNCTION "cdc_bridge"."capture_v5_dfb56e0ba4df7250_del"() IS 'cdc-bridge: captures deletes of public.customers (generated)';
DROP TRIGGER IF EXISTS "cdc_bridge_guard_fields" ON "public"."customers";
CREATE TRIGGER "cdc_bridge_guard_fields" BEFORE UPDATE ON "public"."customers"
    FOR EACH ROW
    WHEN ((pg_catalog.current_setting('cdc_bridge.origin', true) IS DISTINCT FROM 'shop'
    OR NOT pg_catalog.pg_has_role(session_user, 'cdc_bridge_relay', 'MEMBER')) AND ((ROW(NEW."phone")::record) *<> (ROW(OLD."phone")::record)))
    EXECUTE FUNCTION "cdc_bridge"."guard_v1"('public.customers', 'shop', '{"phone"}', '', '{"customer_no"}');
COMMENT ON TRIGGER "cdc_bridge_guard_fields" ON "public"."customers" IS 'cdc-bridge definition 3a275740b31a15a8';
DROP TRIGGER IF EXISTS "cdc_bridge_capture_ins" ON "public"."customers";
CREATE TRIGGER "cdc_bridge_capture_ins" AFTER INSERT ON "public"."customers"
    REFERENCING NEW TABLE AS "cdc_bridge_new"
    FOR EACH STATEMENT
    EXECUTE FUNCTION "cdc_bridge"."capture_v5_dfb56e0ba4df7250_ins"();
COMMENT ON TRIGGER "cdc_bridge_capture_ins" ON "public"."customers" IS 'cdc-bridge definition 3a275740b31a15a8';
DROP TRIGGER IF EXISTS "cdc_bridge_capture_upd" ON "public"."customers";
CREATE TRIGGER "cdc_bridge_capture_upd" AFTER UPDATE ON "public"."customers"
    REFERENCING OLD TABLE AS "cdc_bridge_old" NEW TABLE AS "cdc_bridge_new"
    FOR EACH STATEMENT
    EXECUTE FUNCTION "cdc_bridge"."capture_v5_dfb56e0ba4df7250_upd"();
COMMENT ON TRIGGER "cdc_bridge_capture_upd" ON "public"."customers" IS 'cdc-bridge definition 3a275740b31a15a8';
DROP TRIGGER IF EXISTS "cdc_bridge_capture_del" ON "public"."customers";
CREATE TRIGGER "cdc_bridge_capture_del" AFTER DELETE ON "public"."customers"
    REFERENCING OLD TABLE AS "cdc_bridge_old"
    FOR EACH STATEMENT
    EXECUTE FUNCTION "cdc_bridge"."capture_v5_dfb56e0ba4df7250_del"();
COMMENT ON TRIGGER "cdc_bridge_capture_del" ON "public"."customers" IS 'cdc-bridge definition 3a275740b31a15a8';
DROP TRIGGER IF EXISTS "cdc_bridge_no_truncate" ON "public"."customers";
CREATE TRIGGER "cdc_bridge_no_truncate" BEFORE TRUNCATE ON "public"."customers"
    FOR EACH STATEMENT
    EXECUTE FUNCTION "cdc_bridge"."refuse_truncate_v1"('public.customers');
COMMENT ON TRIGGER "cdc_bridge_no_truncate" ON "public"."customers" IS 'cdc-bridge definition 3a275740b31a15a8';
INSERT INTO "cdc_bridge".installed_tables AS t (table_name, relation, definition_hash, columns)
SELECT 'public.customers', '"public"."customers"'::regclass, '3a275740b31a15a8',
       ARRAY(SELECT a.attname::text FROM pg_attribute a
             WHERE a.attrelid = '"public"."customers"'::regclass AND a.attnum > 0 AND NOT a.attisdropped
             ORDER BY a.attnum)
ON CONFLICT (table_name) DO UPDATE
SET relation = excluded.relation, definition_hash = excluded.definition_hash,
    columns = excluded.columns, installed_at = now();
DROP TRIGGER IF EXISTS "cdc_bridge_capture_rekey" ON "public"."customers";
DROP TRIGGER IF EXISTS "cdc_bridge_capture_enter" ON "public"."customers";
DROP TRIGGER IF EXISTS "cdc_bridge_capture_leave" ON "public"."customers";
DROP FUNCTION IF EXISTS "cdc_bridge"."capture_v4_dfb56e0ba4df7250_ins"();
DROP FUNCTION IF EXISTS "cdc_bridge"."capture_v4_dfb56e0ba4df7250_upd"();
DROP FUNCTION IF EXISTS "cdc_bridge"."capture_v4_dfb56e0ba4df7250_del"();
DROP FUNCTION IF EXISTS "cdc_bridge"."capture_v3_dfb56e0ba4df7250_ins"();
DROP FUNCTION IF EXISTS "cdc_bridge"."capture_v3_dfb56e0ba4df7250_upd"();
DROP FUNCTION IF EXISTS "cdc_bridge"."capture_v3_dfb56e0ba4df7250_rekey"();
DROP FUNCTION IF EXISTS "cdc_bridge"."capture_v3_dfb56e0ba4df7250_del"();
DROP FUNCTION IF EXISTS "cdc_bridge"."capture_v2_dfb56e0ba4df7250"();
SELECT "cdc_bridge".create_wire_function_v1('"public"."sales_orders"'::regclass, 'cdc_bridge', 'wire_v1_8f89c58336d61819');
DROP TRIGGER IF EXISTS "cdc_bridge_no_truncate" ON "public"."sales_orders";
CREATE TRIGGER "cdc_bridge_no_truncate" BEFORE TRUNCATE ON "public"."sales_orders"
    FOR EACH STATEMENT
    EXECUTE FUNCTION "cdc_bridge"."refuse_truncate_v1"('public.sales_orders');
COMMENT ON TRIGGER "cdc_bridge_no_truncate" ON "public"."sales_orders" IS 'cdc-bridge definition b178ab5d550b950a';
INSERT INTO "cdc_bridge".installed_tables AS t (table_name, relation, definition_hash, columns)
SELECT 'public.sales_orders', '"public"."sales_orders"'::regclass, 'b178ab5d550b950a',
       ARRAY(SELECT a.attname::text FROM pg_attribute a
             WHERE a.attrelid = '"public"."sales_orders"'::regclass AND a.attnum > 0 AND NOT a.attisdropped
             ORDER BY a.attnum)
ON CONFLICT (table_name) DO UPDATE
SET relation = excluded.relation, definition_hash = excluded.definition_hash,
    columns = excluded.columns, installed_at = now();
DROP TRIGGER IF EXISTS "cdc_bridge_capture_ins" ON "public"."sales_orders";
DROP TRIGGER IF EXISTS "cdc_bridge_capture_upd" ON "public"."sales_orders";
DROP TRIGGER IF EXISTS "cdc_bridge_capture_rekey" ON "public"."sales_orders";
DROP TRIGGER IF EXISTS "cdc_bridge_capture_del" ON "public"."sales_orders";
DROP TRIGGER IF EXISTS "cdc_bridge_capture_enter" ON "public"."sales_orders";
DROP TRIGGER IF EXISTS "cdc_bridge_capture_leave" ON "public"."sales_orders";
DROP FUNCTION IF EXISTS "cdc_bridge"."capture_v5_8f89c58336d61819_ins"();
DROP FUNCTION IF EXISTS "cdc_bridge"."capture_v5_8f89c58336d61819_upd"();
DROP FUNCTION IF EXISTS "cdc_bridge"."capture_v5_8f89c58336d61819_del"();
DROP FUNCTION IF EXISTS "cdc_bridge"."capture_v4_8f89c58336d61819_ins"();
DROP FUNCTION IF EXISTS "cdc_bridge"."capture_v4_8f89c58336d61819_upd"();
DROP FUNCTION IF EXISTS "cdc_bridge"."capture_v4_8f89c58336d61819_del"();
DROP FUNCTION IF EXISTS "cdc_bridge"."capture_v3_8f89c58336d61819_ins"();
DROP FUNCTION IF EXISTS "cdc_bridge"."capture_v3_8f89c58336d61819_upd"();
DROP FUNCTION IF EXISTS "cdc_bridge"."capture_v3_8f89c58336d61819_rekey"();
DROP FUNCTION IF EXISTS "cdc_bridge"."capture_v3_8f89c58336d61819_del"();
DROP FUNCTION IF EXISTS "cdc_bridge"."capture_v2_8f89c58336d61819"();
SELECT "cdc_bridge".create_wire_function_v1('"public"."sales_order_lines"'::regclass, 'cdc_bridge', 'wire_v1_8438506db2a46db8');
DROP TRIGGER IF EXISTS "cdc_bridge_no_truncate" ON "public"."sales_order_lines";
CREATE TRIGGER "cdc_bridge_no_truncate" BEFORE TRUNCATE ON "public"."sales_order_lines"
    FOR EACH STATEMENT
    EXECUTE FUNCTION "cdc_bridge"."refuse_truncate_v1"('public.sales_order_lines');
COMMENT ON TRIGGER "cdc_bridge_no_truncate" ON "public"."sales_order_lines" IS 'cdc-bridge definition 00aff5c8655d50a0';
INSERT INTO "cdc_bridge".installed_tables AS t (table_name, relation, definition_hash, columns)
SELECT 'public.sales_order_lines', '"public"."sales_order_lines"'::regclass, '00aff5c8655d50a0',
       ARRAY(SELECT a.attname::text FROM pg_attribute a
             WHERE a.attrelid = '"public"."sales_order_lines"'::regclass AND a.attnum > 0 AND NOT a.attisdropped
             ORDER BY a.attnum)
ON CONFLICT (table_name) DO UPDATE
SET relation = excluded.relation, definition_hash = excluded.definition_hash,
    columns = excluded.columns, installed_at = now();
DROP TRIGGER IF EXISTS "cdc_bridge_capture_ins" ON "public"."sales_order_lines";
DROP TRIGGER IF EXISTS "cdc_bridge_capture_upd" ON "public"."sales_order_lines";
DROP TRIGGER IF EXISTS "cdc_bridge_capture_rekey" ON "public"."sales_order_lines";
DROP TRIGGER IF EXISTS "cdc_bridge_capture_del" ON "public"."sales_order_lines";
DROP TRIGGER IF EXISTS "cdc_bridge_capture_enter" ON "public"."sales_order_lines";
DROP TRIGGER IF EXISTS "cdc_bridge_capture_leave" ON "public"."sales_order_lines";
DROP FUNCTION IF EXISTS "cdc_bridge"."capture_v5_8438506db2a46db8_ins"();
DROP FUNCTION IF EXISTS "cdc_bridge"."capture_v5_8438506db2a46db8_upd"();
DROP FUNCTION IF EXISTS "cdc_bridge"."capture_v5_8438506db2a46db8_del"();
DROP FUNCTION IF EXISTS "cdc_bridge"."capture_v4_8438506db2a46db8_ins"();
DROP FUNCTION IF EXISTS "cdc_bridge"."capture_v4_8438506db2a46db8_upd"();
DROP FUNCTION IF EXISTS "cdc_bridge"."capture_v4_8438506db2a46db8_del"();
DROP FUNCTION IF EXISTS "cdc_bridge"."capture_v3_8438506db2a46db8_ins"();
DROP FUNCTION IF EXISTS "cdc_bridge"."capture_v3_8438506db2a46db8_upd"();
DROP FUNCTION IF EXISTS "cdc_bridge"."capture_v3_8438506db2a46db8_rekey"();
DROP FUNCTION IF EXISTS "cdc_bridge"."capture_v3_8438506db2a46db8_del"();
DROP FUNCTION IF EXISTS "cdc_bridge"."capture_v2_8438506db2a46db8"();
-- Roles belong to the whole cluster: create it once, never drop it here.
DO $create_role$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'cdc_bridge_relay') THEN
        EXECUTE format('CREATE ROLE %I NOLOGIN', 'cdc_bridge_relay');
    END IF;
END
$create_role$;
GRANT USAGE ON SCHEMA "cdc_bridge" TO "cdc_bridge_relay";
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA "cdc_bridge" TO "cdc_bridge_relay";
GRANT USAGE ON ALL SEQUENCES IN SCHEMA "cdc_bridge" TO "cdc_bridge_relay";
-- The relay rotates the outbox (outbox.sql: create_outbox): it empties the table writers
-- no longer fill, and names the one they fill next.
GRANT TRUNCATE ON "cdc_bridge".outbox, "cdc_bridge".outbox_0, "cdc_bridge".outbox_1 TO "cdc_bridge_relay";
GRANT UPDATE ON SEQUENCE "cdc_bridge".outbox_slot TO "cdc_bridge_relay";
-- The relay VACUUMs the outbox and the tables retention prunes, so the bridge never
-- depends on autovacuum. PostgreSQL 17 and later grant that right (MAINTAIN); before
-- 17 only the owner may vacuum a table (README: DBA guide).
DO $grant_maintain$
BEGIN
    IF pg_catalog.current_setting('server_version_num')::int >= 170000 THEN
        EXECUTE pg_catalog.format('GRANT MAINTAIN ON ALL TABLES IN SCHEMA %I TO %I',
                                  'cdc_bridge', 'cdc_bridge_relay');
    END IF;
END
$grant_maintain$;
GRANT SELECT ON "public"."items" TO "cdc_bridge_relay";
-- snapshot, reconcile and serve call it as the relay role (capture as its owner).
GRANT EXECUTE ON FUNCTION "cdc_bridge"."wire_v1_c0e2fcbdfbbd1a6d"("public"."items", jsonb) TO "cdc_bridge_relay";
GRANT SELECT, INSERT, UPDATE, DELETE ON "public"."customers" TO "cdc_bridge_relay";
-- snapshot, reconcile and serve call it as the relay role (capture as its owner).
GRANT EXECUTE ON FUNCTION "cdc_bridge"."wire_v1_dfb56e0ba4df7250"("public"."customers", jsonb) TO "cdc_bridge_relay";
GRANT SELECT, INSERT, UPDATE, DELETE ON "public"."sales_orders" TO "cdc_bridge_relay";
-- snapshot, reconcile and serve call it as the relay role (capture as its owner).
GRANT EXECUTE ON FUNCTION "cdc_bridge"."wire_v1_8f89c58336d61819"("public"."sales_orders", jsonb) TO "cdc_bridge_relay";
GRANT SELECT, INSERT, UPDATE, DELETE ON "public"."sales_order_lines" TO "cdc_bridge_relay";
-- snapshot, reconcile and serve call it as the relay role (capture as its owner).
GRANT EXECUTE ON FUNCTION "cdc_bridge"."wire_v1_8438506db2a46db8"("public"."sales_order_lines", jsonb) TO "cdc_bridge_relay";