-- Operations: audits of replays and skips, snapshot progress, and the queries behind
-- `batches`, `replay`, `skip`, `snapshot` and `cleanup`.

-- name: ops_create_replays
-- One row per `cdc-bridge replay` run, dry runs included: who, when, what and why.
CREATE TABLE IF NOT EXISTS {schema}.replays (
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
CREATE INDEX IF NOT EXISTS replays_at ON {schema}.replays (replayed_at);

-- name: ops_create_skips
-- Changes given up (or parked) on purpose by an operator: the audit of `skip` and `park`.
CREATE TABLE IF NOT EXISTS {schema}.skips (
    skip_id    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    change_id  bigint NOT NULL,
    table_name text NOT NULL,
    key        jsonb NOT NULL,
    os_user    text NOT NULL,
    db_user    text NOT NULL DEFAULT current_user,
    skipped_at timestamptz NOT NULL DEFAULT now(),
    reason     text NOT NULL
);
CREATE INDEX IF NOT EXISTS skips_at ON {schema}.skips (skipped_at);
-- skip: given up (the change moves to `delivered` as 'skipped'); park: a pending change
-- held back on purpose (it moves to `failed`, so its key waits until replay or skip).
ALTER TABLE {schema}.skips ADD COLUMN IF NOT EXISTS action text NOT NULL DEFAULT 'skip'
    CHECK (action IN ('skip', 'park'));

-- name: ops_create_snapshots
-- Progress of `cdc-bridge snapshot`: updated in the transaction of each chunk, so
-- `last_key` is exactly the last row whose upsert is in the outbox.
CREATE TABLE IF NOT EXISTS {schema}.snapshots (
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
CREATE INDEX IF NOT EXISTS snapshots_table ON {schema}.snapshots (table_name, status);

-- name: ops_list_batches
SELECT b.batch_id, b.status, b.change_count, b.first_id, b.last_id, b.replay,
       b.created_at, b.finished_at,
       (SELECT count(*) FROM {schema}.attempts a WHERE a.batch_id = b.batch_id) AS attempts,
       (SELECT a.http_status FROM {schema}.attempts a WHERE a.batch_id = b.batch_id
        ORDER BY a.attempted_at DESC LIMIT 1) AS last_http_status,
       (SELECT count(*) FROM {schema}.failed f WHERE f.batch_id = b.batch_id) AS failed_changes
FROM {schema}.batches b
WHERE (%(status)s::text IS NULL OR b.status = %(status)s)
  AND (%(since)s::timestamptz IS NULL OR b.created_at >= %(since)s)
  AND (%(table)s::text IS NULL
       OR EXISTS (SELECT 1 FROM {schema}.delivered d
                  WHERE d.batch_id = b.batch_id AND d.table_name = %(table)s)
       OR EXISTS (SELECT 1 FROM {schema}.failed f
                  WHERE f.batch_id = b.batch_id AND f.table_name = %(table)s))
ORDER BY b.created_at DESC, b.batch_id
LIMIT %(limit)s;

-- name: ops_get_batch
SELECT batch_id, status, change_count, first_id, last_id, replay, created_at, finished_at
FROM {schema}.batches WHERE batch_id = %(batch_id)s;

-- name: ops_batch_changes
-- A batch's changes wherever they are now; a pending batch's still sit in the outbox.
SELECT id, txid::text AS txid, table_name, op, key, fields, 'failed' AS state,
       http_status, reason
FROM {schema}.failed WHERE batch_id = %(batch_id)s
UNION ALL
SELECT id, txid::text, table_name, op, key, fields, result, NULL::int, NULL::text
FROM {schema}.delivered WHERE batch_id = %(batch_id)s
UNION ALL
SELECT id, txid::text, table_name, op, key, fields, 'pending', NULL::int, NULL::text
FROM {schema}.outbox
WHERE %(pending)s AND id BETWEEN %(first_id)s AND %(last_id)s
ORDER BY id;

-- name: ops_batch_attempts
SELECT attempted_at, http_status, error, response_body, duration_ms
FROM {schema}.attempts WHERE batch_id = %(batch_id)s ORDER BY attempted_at;

-- name: ops_parked_behind
-- How many outbox rows of each failed change's key wait behind it (per-key parking).
SELECT f.id, count(o.id) AS parked
FROM {schema}.failed f
LEFT JOIN {schema}.outbox o ON o.table_name = f.table_name AND o.key = f.key
WHERE f.id = ANY(%(ids)s)
GROUP BY f.id;

-- name: ops_find_change
SELECT 'failed' AS place, id, table_name, key FROM {schema}.failed WHERE id = %(id)s
UNION ALL
SELECT 'delivered', id, table_name, key FROM {schema}.delivered WHERE id = %(id)s
UNION ALL
SELECT 'outbox', id, table_name, key FROM {schema}.outbox WHERE id = %(id)s;

-- name: ops_select_changes
-- Candidate changes for a replay, from `failed` and `delivered`, in per-key commit order.
SELECT 'failed' AS place, id, txid::text AS txid, table_name, op, key, captured_at, batch_id
FROM {schema}.failed
WHERE (%(all_failed)s
       OR id = ANY(%(ids)s) OR batch_id = ANY(%(batch_ids)s)
       OR (%(table)s::text IS NOT NULL AND table_name = %(table)s
           AND (%(key)s::jsonb IS NULL OR key = %(key)s)
           AND (%(since)s::timestamptz IS NULL OR captured_at >= %(since)s)
           AND (%(until)s::timestamptz IS NULL OR captured_at < %(until)s)))
UNION ALL
SELECT 'delivered', id, txid::text, table_name, op, key, captured_at, batch_id
FROM {schema}.delivered
WHERE NOT %(all_failed)s
  AND result <> 'filtered'
  AND (id = ANY(%(ids)s) OR batch_id = ANY(%(batch_ids)s)
       OR (%(table)s::text IS NOT NULL AND table_name = %(table)s
           AND (%(key)s::jsonb IS NULL OR key = %(key)s)
           AND (%(since)s::timestamptz IS NULL OR captured_at >= %(since)s)
           AND (%(until)s::timestamptz IS NULL OR captured_at < %(until)s)))
ORDER BY id;

-- name: ops_newer_delivered
-- For selected changes: a LATER change of the same key that reached the peer and is not
-- part of the replay. Replaying the older one would put older state back at the peer.
SELECT s.id, s.table_name, s.key, min(d.id) AS newer_id, max(d.delivered_at) AS newer_at
FROM (SELECT id, table_name, key FROM {schema}.failed WHERE id = ANY(%(ids)s)
      UNION ALL
      SELECT id, table_name, key FROM {schema}.delivered WHERE id = ANY(%(ids)s)) s
JOIN {schema}.delivered d
  ON d.table_name = s.table_name AND d.key = s.key AND d.id > s.id
 AND d.result NOT IN ('skipped', 'filtered') AND NOT d.id = ANY(%(ids)s)
GROUP BY s.id, s.table_name, s.key
ORDER BY s.id;

-- name: ops_record_replay
INSERT INTO {schema}.replays (os_user, selection, change_ids, reason, dry_run, force)
VALUES (%(os_user)s, %(selection)s, %(ids)s, %(reason)s, %(dry_run)s, %(force)s)
RETURNING replay_id, db_user, replayed_at;

-- name: ops_replay_history
SELECT replay_id, replayed_at, os_user, db_user, selection, cardinality(change_ids) AS changes,
       change_ids, reason, dry_run, force
FROM {schema}.replays ORDER BY replay_id DESC LIMIT %(limit)s;

-- name: ops_still_queued
SELECT count(*) FROM {schema}.outbox WHERE id = ANY(%(ids)s);

-- name: ops_start_snapshot
INSERT INTO {schema}.snapshots (table_name, where_expr) VALUES (%(table)s, %(where)s)
RETURNING snapshot_id, table_name, where_expr, last_key, rows;

-- name: ops_abandon_snapshots
UPDATE {schema}.snapshots SET status = 'abandoned', updated_at = now()
WHERE table_name = %(table)s AND status = 'running';

-- name: ops_running_snapshot
SELECT snapshot_id, table_name, where_expr, last_key, rows
FROM {schema}.snapshots WHERE table_name = %(table)s AND status = 'running'
ORDER BY snapshot_id DESC LIMIT 1;

-- name: ops_snapshot_progress
UPDATE {schema}.snapshots
SET last_key = %(last_key)s, rows = rows + %(rows)s, updated_at = now()
WHERE snapshot_id = %(snapshot_id)s;

-- name: ops_finish_snapshot
UPDATE {schema}.snapshots SET status = 'finished', finished_at = now(), updated_at = now()
WHERE snapshot_id = %(snapshot_id)s
RETURNING rows;

-- Snapshot resume condition (ops_after_key, below): rows after the last key shipped,
-- compared as typed values although the key is stored as jsonb; an index range scan.

-- name: ops_snapshot_chunk
-- One chunk: the next rows in key order, locked FOR SHARE so that a concurrent
-- uncommitted update makes us wait and then read its committed version; their upserts
-- then get outbox ids above that update's own change.
WITH chunk AS (
    SELECT {key_aliases}, {key_object} AS key, {fields_object} AS fields
    FROM {table} AS t
    WHERE {condition}
    ORDER BY {key_order}
    LIMIT %(chunk)s
    FOR SHARE OF t
), queued AS (
    {queue}
    SELECT %(label)s, 'U', key, fields, NULL, NULL, %(origin)s FROM chunk ORDER BY {alias_order}
    RETURNING 1
)
SELECT (SELECT count(*) FROM queued) AS rows,
       (SELECT key FROM chunk ORDER BY {alias_order_desc} LIMIT 1) AS last_key;

-- name: ops_after_key
({key_columns}) > (SELECT {last_columns}
                   FROM jsonb_populate_record(NULL::{table}, %(after)s::jsonb) AS last)

-- name: ops_lock_snapshot
-- Session advisory lock in a key space of its own (a hash of schema and table label).
SELECT pg_advisory_lock(hashtextextended('cdc-bridge snapshot ' || %(name)s, 0));

-- name: ops_table_columns
SELECT a.attname::text FROM pg_attribute a
WHERE a.attrelid = {relation}::regclass AND a.attnum > 0 AND NOT a.attisdropped;

-- name: ops_count_rows
SELECT count(*) FROM {table} AS t WHERE {condition};
