-- Capture: the outbox and the functions the generated triggers call.
-- Every block is idempotent so that re-running an install is harmless. A versioned
-- function (`..._v1`) is never changed once released: a new behaviour gets `_v2`.

-- name: create_schema
CREATE SCHEMA IF NOT EXISTS {schema};

-- name: create_outbox
-- One row per captured change, written in the same transaction as the change.
-- Rows leave when the peer has acknowledged them (no read cursor, so a transaction
-- that commits late is never skipped).
CREATE TABLE IF NOT EXISTS {schema}.outbox (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    txid        xid8 NOT NULL DEFAULT pg_current_xact_id(),
    table_name  text NOT NULL,
    op          text NOT NULL CHECK (op IN ('I', 'U', 'D')),
    key         jsonb NOT NULL,
    fields      jsonb,
    old         jsonb,
    changed     text[],
    origin      text NOT NULL,
    captured_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
COMMENT ON TABLE {schema}.outbox IS
    'cdc-bridge: changes waiting to be acknowledged by the peer. fields = new values of the shipped fields (key included); old = previous values of changed fields owned by both sides; origin = the system that made the change.';

-- name: create_installed_tables
-- What `triggers status` compares against: the definition hash and the columns the
-- table had when its triggers were installed.
CREATE TABLE IF NOT EXISTS {schema}.installed_tables (
    table_name      text PRIMARY KEY,
    relation        regclass NOT NULL,
    definition_hash text NOT NULL,
    columns         text[] NOT NULL,
    installed_at    timestamptz NOT NULL DEFAULT now()
);

-- name: create_handoffs
-- Rows of `sor: handoff` tables the peer now owns (recorded when the peer applied them).
CREATE TABLE IF NOT EXISTS {schema}.handoffs (
    table_name text NOT NULL,
    key        jsonb NOT NULL,
    handed_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (table_name, key)
);

-- name: create_capture_function
-- Arguments (fixed per trigger): 0 table label, 1 this system's name, 2 key columns,
-- 3 shipped columns ('*' = whole row), 4 columns owned by both sides, 5 forced op ('' = from TG_OP).
-- Hot path: PL/pgSQL evaluates plain expressions cheaply, but every SELECT is a full
-- executor run. So the common cases (one key column, whole rows, no `both` fields) use
-- expressions only, and an UPDATE of a whole-row table runs a single query.
CREATE OR REPLACE FUNCTION {schema}.capture_v1() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $capture_v1$
DECLARE
    v_label   text   := TG_ARGV[0];
    v_keys    text[] := TG_ARGV[2]::text[];
    v_one_key text   := CASE WHEN cardinality(v_keys) = 1 THEN v_keys[1] END;
    v_whole   bool   := TG_ARGV[3] = '*';
    v_both    text[] := TG_ARGV[4]::text[];
    v_op      text   := coalesce(nullif(TG_ARGV[5], ''), left(TG_OP, 1));
    v_origin  text   := coalesce(nullif(current_setting('cdc_bridge.origin', true), ''), TG_ARGV[1]);
    v_new     jsonb;
    v_old     jsonb;
    v_key     jsonb;
    v_old_key jsonb;
    v_fields  jsonb;
    v_changed text[];
    v_prior   jsonb;
BEGIN
    IF TG_OP <> 'INSERT' THEN
        v_old := to_jsonb(OLD);
        IF v_one_key IS NOT NULL THEN
            v_old_key := jsonb_build_object(v_one_key, v_old -> v_one_key);
        ELSE
            v_old_key := (SELECT jsonb_object_agg(k, v_old -> k) FROM unnest(v_keys) AS k);
        END IF;
    END IF;
    IF v_op = 'D' THEN
        INSERT INTO {schema}.outbox (table_name, op, key, origin)
        VALUES (v_label, 'D', v_old_key, v_origin);
        RETURN NULL;
    END IF;

    v_new := to_jsonb(NEW);
    IF v_one_key IS NOT NULL THEN
        v_key := jsonb_build_object(v_one_key, v_new -> v_one_key);
    ELSE
        v_key := (SELECT jsonb_object_agg(k, v_new -> k) FROM unnest(v_keys) AS k);
    END IF;
    IF v_whole THEN
        v_fields := v_new;
    ELSE
        v_fields := (SELECT jsonb_object_agg(k, v_new -> k)
                     FROM unnest(v_keys || TG_ARGV[3]::text[]) AS k);
    END IF;

    IF v_op = 'U' AND v_old_key IS DISTINCT FROM v_key THEN
        -- The key itself changed: the peer sees the old row go and the new one arrive.
        INSERT INTO {schema}.outbox (table_name, op, key, origin)
        VALUES (v_label, 'D', v_old_key, v_origin);
        v_op := 'I';
    END IF;

    IF v_op = 'U' THEN
        v_changed := ARRAY(
            SELECT k FROM jsonb_object_keys(v_fields) AS k
            WHERE v_new -> k IS DISTINCT FROM v_old -> k ORDER BY k);
        IF cardinality(v_both) > 0 THEN
            -- Fields owned by both sides ship only when changed, with their previous value,
            -- so the receiver can tell a concurrent edit from a stale one.
            v_prior := (SELECT jsonb_object_agg(k, v_old -> k) FROM unnest(v_both) AS k
                        WHERE k = ANY (v_changed));
            v_fields := v_fields - ARRAY(SELECT unnest(v_both) EXCEPT SELECT unnest(v_changed));
        END IF;
    END IF;

    INSERT INTO {schema}.outbox (table_name, op, key, fields, old, changed, origin)
    VALUES (v_label, v_op, v_key, v_fields, v_prior, v_changed, v_origin);
    RETURN NULL;
END
$capture_v1$;
-- Runs with its owner's rights, so application roles need no grant on the outbox; only
-- the DBA may attach it to a table (EXECUTE is checked when a trigger is created).
REVOKE ALL ON FUNCTION {schema}.capture_v1() FROM PUBLIC;

-- name: create_relay_wakeup
-- Whether the relay is idle and waiting for a NOTIFY. A transaction that sends NOTIFY
-- takes a cluster-wide lock from pre-commit through its commit flush, so notifying
-- transactions commit one at a time. A busy relay reads the outbox again by itself, so
-- writers only notify while it says it is listening. A missing row means "listening".
CREATE TABLE IF NOT EXISTS {schema}.relay_wakeup (
    id         int PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    listening  bool NOT NULL DEFAULT true,
    changed_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO {schema}.relay_wakeup (id) VALUES (1) ON CONFLICT (id) DO NOTHING;

-- name: create_notify_function
-- Statement-level: wakes the relay, if it is waiting. NOTIFY folds identical
-- notifications of one transaction into one: at most one per table and transaction.
CREATE OR REPLACE FUNCTION {schema}.notify_v1() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $notify_v1$
BEGIN
    IF coalesce((SELECT w.listening FROM {schema}.relay_wakeup w WHERE w.id = 1), true) THEN
        PERFORM pg_notify(TG_ARGV[0], TG_ARGV[1]);
    END IF;
    RETURN NULL;
END
$notify_v1$;
REVOKE ALL ON FUNCTION {schema}.notify_v1() FROM PUBLIC;

-- name: create_guard_function
-- Refuses a local write to data the peer owns. The trigger's WHEN clause already
-- excludes writes the bridge applies for the peer; this function only explains.
-- Arguments: 0 table label, 1 owner (peer name), 2 guarded fields ('' = the whole row),
-- 3 'handoff' when only handed-off rows are guarded, 4 key columns.
CREATE OR REPLACE FUNCTION {schema}.guard_v1() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $guard_v1$
DECLARE
    v_row    jsonb := to_jsonb(CASE WHEN TG_OP = 'INSERT' THEN NEW ELSE OLD END);
    v_key    jsonb;
    v_fields text[];
BEGIN
    IF TG_ARGV[3] = 'handoff' THEN
        v_key := (SELECT jsonb_object_agg(k, v_row -> k) FROM unnest(TG_ARGV[4]::text[]) AS k);
        IF TG_OP = 'INSERT' OR NOT EXISTS (
                SELECT 1 FROM {schema}.handoffs h
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
REVOKE ALL ON FUNCTION {schema}.guard_v1() FROM PUBLIC;

-- name: create_truncate_guard_function
-- TRUNCATE fires no row triggers, so it would bypass capture: refuse it on synced tables.
CREATE OR REPLACE FUNCTION {schema}.refuse_truncate_v1() RETURNS trigger
LANGUAGE plpgsql AS $refuse_truncate_v1$
BEGIN
    RAISE EXCEPTION 'cdc-bridge: TRUNCATE of synced table % would not be captured; refused', TG_ARGV[0]
        USING ERRCODE = 'feature_not_supported',
              HINT = 'Use DELETE so the change reaches the peer, or uninstall the triggers first.';
END
$refuse_truncate_v1$;

-- name: record_installed_table
INSERT INTO {schema}.installed_tables AS t (table_name, relation, definition_hash, columns)
SELECT {label}, {relation}::regclass, {hash},
       ARRAY(SELECT a.attname::text FROM pg_attribute a
             WHERE a.attrelid = {relation}::regclass AND a.attnum > 0 AND NOT a.attisdropped
             ORDER BY a.attnum)
ON CONFLICT (table_name) DO UPDATE
SET relation = excluded.relation, definition_hash = excluded.definition_hash,
    columns = excluded.columns, installed_at = now();

-- name: forget_installed_table
DELETE FROM {schema}.installed_tables WHERE table_name = {label};

-- name: create_relay_role
-- Roles belong to the whole cluster: create it once, never drop it here.
DO $create_role$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = {role_name}) THEN
        EXECUTE format('CREATE ROLE %I NOLOGIN', {role_name});
    END IF;
END
$create_role$;

-- name: grant_bridge_schema
GRANT USAGE ON SCHEMA {schema} TO {role};
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {schema} TO {role};
GRANT USAGE ON ALL SEQUENCES IN SCHEMA {schema} TO {role};

-- name: grant_read_table
GRANT SELECT ON {table} TO {role};

-- name: grant_write_table
GRANT SELECT, INSERT, UPDATE, DELETE ON {table} TO {role};

-- name: revoke_table
REVOKE ALL ON {table} FROM {role};

-- name: drop_bridge_schema
DROP SCHEMA IF EXISTS {schema} CASCADE;

-- name: revoke_bridge_role_in_schema
-- Lets `DROP SCHEMA ... CASCADE` leave no grant behind; the role itself stays.
DO $revoke$
BEGIN
    IF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = {role_name})
       AND EXISTS (SELECT FROM pg_catalog.pg_namespace WHERE nspname = {schema_name}) THEN
        EXECUTE format('REVOKE ALL ON ALL TABLES IN SCHEMA %I FROM %I', {schema_name}, {role_name});
        EXECUTE format('REVOKE ALL ON SCHEMA %I FROM %I', {schema_name}, {role_name});
    END IF;
END
$revoke$;
