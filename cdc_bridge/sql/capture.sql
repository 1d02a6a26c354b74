-- Capture: the outbox and the functions the generated triggers call.
-- Every block is idempotent so that re-running an install is harmless. A versioned
-- function (`..._v1`) is never changed once released: a new behaviour gets `_v2`.

-- name: create_schema
CREATE SCHEMA IF NOT EXISTS {schema};

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

-- name: retire_relay_listening
-- Earlier versions kept "is the relay listening?" in a sequence the relay set. A relay
-- that crashed while idle left it at "listening", and every writer then sent NOTIFY for
-- nobody (see the notify trigger). That state now lives in an advisory lock held by the
-- relay's own session, which ends with it; the sequence goes.
DROP SEQUENCE IF EXISTS {schema}.relay_listening;

-- name: retire_notify_function
-- Earlier versions woke the relay from a trigger of their own on every table
-- (`cdc_bridge_notify`, calling this function); capture does it now (`capture_wake`).
-- CASCADE drops those triggers with it, and nothing else depends on the function.
DROP FUNCTION IF EXISTS {schema}.notify_v2() CASCADE;

-- name: capture_wake
(SELECT pg_catalog.pg_try_advisory_xact_lock_shared({key}::bigint) OR pg_catalog.pg_notify({channel}, {label}) IS NOT NULL)

-- name: create_wire_function
-- Writes, at install, one function per synced table that makes a jsonb of its rows exact:
-- wire_v1_<digest>(row, fields jsonb) returns `fields` (NULL: the whole row, to_jsonb(row))
-- with the values that jsonb would change replaced by their PostgreSQL text form (a JSON
-- string):
-- - real / double precision -0 (jsonb numbers have no negative zero): "-0";
-- - json: always its text (jsonb drops its spacing, key order and duplicate keys);
-- - jsonb holding a string, or the document `null` (which would arrive as SQL NULL):
--   its text;
-- - arrays whose lower bounds are not all 1, or whose elements are real, double precision,
--   json or jsonb: the array's text ('[0:2]={{1,2,3}}');
-- - composite values with a field of those types (or an array, or a composite): their
--   text ('("x",{{a}})').
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
CREATE OR REPLACE FUNCTION {schema}.create_wire_function_v1(
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
REVOKE ALL ON FUNCTION {schema}.create_wire_function_v1(regclass, text, text) FROM PUBLIC;

-- name: install_wire_function
SELECT {schema}.create_wire_function_v1({relation}::regclass, {schema_name}, {function_name});

-- name: grant_wire_function
-- snapshot, reconcile and serve call it as the relay role (capture as its owner).
GRANT EXECUTE ON FUNCTION {function}({table}, jsonb) TO {role};

-- name: drop_wire_function
DROP FUNCTION IF EXISTS {function};

-- name: create_table_capture_function
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
CREATE OR REPLACE FUNCTION {function}() RETURNS trigger
LANGUAGE plpgsql {security}{settings}
AS $capture${body}$capture$;
-- Only the DBA may attach it to a table (EXECUTE is checked when a trigger is created).
REVOKE ALL ON FUNCTION {function}() FROM PUBLIC;
COMMENT ON FUNCTION {function}() IS {comment};

-- name: capture_join_settings
SET jit = off SET enable_nestloop = off SET enable_mergejoin = off SET work_mem = '64MB'

-- name: capture_origin
CASE WHEN pg_catalog.current_setting('cdc_bridge.origin', true) IS DISTINCT FROM {peer} THEN {system} WHEN pg_catalog.pg_has_role(session_user, {role}, 'MEMBER') THEN {peer} ELSE {system} END


-- name: drop_table_capture_function
DROP FUNCTION IF EXISTS {function}();

-- name: guard_local_write
pg_catalog.current_setting('cdc_bridge.origin', true) IS DISTINCT FROM {peer}
    OR NOT pg_catalog.pg_has_role(session_user, {role}, 'MEMBER')

-- name: create_guard_function
-- Refuses a local write to data the peer owns. The trigger's WHEN clause
-- (the `guard_local_write` block) already excludes writes the bridge applies for the peer;
-- this function only explains. That clause is true for every write but the bridge's own
-- apply: a session setting alone proves nothing (any session can SET it), so the
-- session's login role must also be a member of the relay role, and a plain role that
-- sets the origin is refused like any other local write. pg_has_role runs only when the
-- setting names the peer, so an ordinary local write pays one current_setting call.
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
-- TRUNCATE fires no DELETE triggers, so it would bypass capture: refuse it on synced tables.
CREATE OR REPLACE FUNCTION {schema}.refuse_truncate_v1() RETURNS trigger
LANGUAGE plpgsql AS $refuse_truncate_v1$
BEGIN
    RAISE EXCEPTION 'cdc-bridge: TRUNCATE of synced table % would not be captured; refused', TG_ARGV[0]
        USING ERRCODE = 'feature_not_supported',
              HINT = 'Use DELETE so the change reaches the peer, or uninstall the triggers first.';
END
$refuse_truncate_v1$;
REVOKE ALL ON FUNCTION {schema}.refuse_truncate_v1() FROM PUBLIC;

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
-- The relay rotates the outbox (outbox.sql: create_outbox): it empties the table writers
-- no longer fill, and names the one they fill next.
GRANT TRUNCATE ON {schema}.outbox, {schema}.outbox_0, {schema}.outbox_1 TO {role};
GRANT UPDATE ON SEQUENCE {schema}.outbox_slot TO {role};

-- name: grant_bridge_maintain
-- The relay VACUUMs the outbox and the tables retention prunes, so the bridge never
-- depends on autovacuum. PostgreSQL 17 and later grant that right (MAINTAIN); before
-- 17 only the owner may vacuum a table (README: DBA guide).
DO $grant_maintain$
BEGIN
    IF pg_catalog.current_setting('server_version_num')::int >= 170000 THEN
        EXECUTE pg_catalog.format('GRANT MAINTAIN ON ALL TABLES IN SCHEMA %I TO %I',
                                  {schema_name}, {role_name});
    END IF;
END
$grant_maintain$;

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
