-- Catalog queries for `cdc-bridge check` and `cdc-bridge triggers status`.
-- Relations are passed as exactly-quoted names (`"schema"."table"`) and resolved with
-- to_regclass, which returns NULL instead of failing when the table does not exist.

-- name: check_relation
SELECT to_regclass(%(relation)s)::oid AS oid;

-- name: check_columns
SELECT a.attname::text AS name
FROM pg_catalog.pg_attribute a
WHERE a.attrelid = to_regclass(%(relation)s) AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum;

-- name: check_unique_indexes
-- Plain unique indexes (and the primary key): not partial, no expressions.
SELECT ARRAY(
           SELECT a.attname::text
           FROM unnest(i.indkey::int2[]) AS k(attnum)
           JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
           ORDER BY a.attname
       ) AS columns
FROM pg_catalog.pg_index i
WHERE i.indrelid = to_regclass(%(relation)s)
  AND i.indisunique AND i.indisvalid
  AND i.indpred IS NULL AND i.indexprs IS NULL;

-- name: status_bridge_installed
SELECT to_regclass(%(installed_tables)s) IS NOT NULL AS installed;

-- name: status_installed_table
SELECT definition_hash, columns
FROM {schema}.installed_tables
WHERE table_name = %(label)s;

-- name: status_triggers
-- The bridge's triggers on a table, with the definition stamp in their comment.
SELECT t.tgname::text AS name,
       coalesce(pg_catalog.obj_description(t.oid, 'pg_trigger'), '') AS stamp
FROM pg_catalog.pg_trigger t
WHERE t.tgrelid = to_regclass(%(relation)s) AND NOT t.tgisinternal
  AND starts_with(t.tgname::text, %(prefix)s)
ORDER BY t.tgname;

-- name: status_capture_functions
-- The source of a table's generated capture functions, to compare with what the config
-- renders: a function replaced by hand keeps its name and its triggers' stamps.
SELECT p.proname::text AS name, p.prosrc AS source
FROM pg_catalog.pg_proc p
JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname = %(schema)s AND p.proname = ANY(%(names)s::text[])
ORDER BY p.proname;

-- name: check_login_role
-- Who the bridge logs in as (`check`'s warnings; docs/security.md). relay_member is NULL
-- while the relay role does not exist (the install creates it).
SELECT session_user::text AS login,
       r.rolsuper AS superuser,
       CASE WHEN EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = %(relay_role)s)
            THEN pg_catalog.pg_has_role(session_user, %(relay_role)s, 'MEMBER')
       END AS relay_member
FROM pg_catalog.pg_roles r
WHERE r.rolname = session_user;

-- name: check_owned_tables
-- The synced tables whose owner the login role is, or may become (SET ROLE).
SELECT t.name
FROM unnest(%(relations)s::text[]) AS t(name)
JOIN pg_catalog.pg_class c ON c.oid = to_regclass(t.name)
WHERE pg_catalog.pg_has_role(session_user, c.relowner, 'MEMBER')
ORDER BY t.name;

-- name: check_column_facts
-- Per column, what a mapping needs to know: its type, whether an insert must give it a
-- value (NOT NULL, no default, not generated), whether the table makes its value (a
-- sequence, identity or default), an enum's labels, and its one-column CHECK
-- constraints (their values are read from the definition).
SELECT a.attname::text AS name,
       pg_catalog.format_type(a.atttypid, a.atttypmod) AS type,
       a.attnotnull AND NOT a.atthasdef AND a.attidentity = '' AND a.attgenerated = ''
           AS required,
       a.atthasdef OR a.attidentity <> '' AS generated,
       CASE WHEN t.typtype = 'e' THEN ARRAY(
           SELECT e.enumlabel::text FROM pg_catalog.pg_enum e
           WHERE e.enumtypid = t.oid ORDER BY e.enumsortorder)
       END AS labels,
       ARRAY(
           SELECT pg_catalog.pg_get_constraintdef(c.oid) FROM pg_catalog.pg_constraint c
           WHERE c.conrelid = a.attrelid AND c.contype = 'c' AND c.conkey = ARRAY[a.attnum]
       ) AS checks
FROM pg_catalog.pg_attribute a
JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
WHERE a.attrelid = to_regclass(%(relation)s) AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum;

-- name: check_value_input
-- A value (as text) read as a column's type ({type}: format_type's own output); fails
-- when it is not valid input for it (run in a savepoint).
SELECT CAST(%(value)s AS {type});
