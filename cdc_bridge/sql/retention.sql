-- Retention: the bridge's own bookkeeping, pruned by age in bounded transactions
-- (used by `cdc-bridge cleanup` and, every relay.retention_interval_s, by the relay).

-- name: retention_prune_batch
-- One bounded transaction of retention: at most %(limit)s rows.
DELETE FROM {target} WHERE ctid = ANY(ARRAY(
    SELECT ctid FROM {target} WHERE {column} < now() - %(age)s::interval AND {condition}
    LIMIT %(limit)s));

-- name: retention_prune_count
SELECT count(*) FROM {target} WHERE {column} < now() - %(age)s::interval AND {condition};

-- name: retention_no_failed_change
-- Condition fragment: no change in `failed` names this batch (it explains the failure).
NOT EXISTS (SELECT FROM {failed} f WHERE f.batch_id = {batch})

-- name: retention_below_watermark
-- Condition fragment: the key's source transaction is below its sender's watermark, so
-- the watermark alone recognizes a resend of it (inbound_claim_keys).
{keys}.txid < (SELECT w.settled_below FROM {watermarks} w WHERE w.source = {keys}.source)

-- name: retention_vacuumable
-- Of the bridge's tables named, whether this role may VACUUM each (`may_vacuum`: its
-- owner or a member of it, the database owner or a superuser, and from PostgreSQL 17 a
-- holder of MAINTAIN; VACUUM skips any other table with only a warning, so the bridge
-- asks first), and whether autovacuum looks after it (`autovacuumed`: on for the server
-- and not switched off for the table). A table neither may be vacuumed by this role nor
-- is autovacuumed keeps the space of every row retention deletes.
SELECT c.relname::text,
       (pg_catalog.pg_has_role(c.relowner, 'USAGE')
        OR (SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.rolname = current_user)
        OR pg_catalog.pg_has_role((SELECT d.datdba FROM pg_catalog.pg_database d
                                   WHERE d.datname = pg_catalog.current_database()), 'USAGE')
        OR CASE WHEN pg_catalog.current_setting('server_version_num')::int >= 170000
                THEN pg_catalog.has_table_privilege(c.oid, 'MAINTAIN') ELSE false END)
       AS may_vacuum,
       (pg_catalog.current_setting('autovacuum')::bool
        AND coalesce((SELECT o.option_value::bool
                      FROM pg_catalog.pg_options_to_table(c.reloptions) o
                      WHERE o.option_name = 'autovacuum_enabled'), true))
       AS autovacuumed
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %(schema)s AND c.relname = ANY(%(tables)s::text[])
ORDER BY 1;

-- name: retention_vacuum
-- Marks the space of deleted rows for reuse (no lock that blocks writers; cannot run in
-- a transaction block: the connection is in autocommit).
VACUUM {target};

-- name: retention_xref_gone
-- Condition fragment: a cross-reference row of {label}'s entity whose record is gone here
-- (its local row no longer exists) and no change of it made here waits in the outbox or
-- in `failed` (the relay still translates those through it; echoes it drops unread).
entity = {entity} AND NOT EXISTS (
    SELECT FROM {table} t
    WHERE ({key}) = (SELECT {key} FROM jsonb_populate_record(NULL::{table}, {xref}.local_key)))
AND NOT EXISTS (
    SELECT FROM {outbox} o
    WHERE o.table_name = {label} AND o.key = {xref}.local_key AND o.origin = {system})
AND NOT EXISTS (
    SELECT FROM {failed} f
    WHERE f.table_name = {label} AND f.key = {xref}.local_key AND f.origin = {system})
