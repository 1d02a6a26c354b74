-- Reconcile: read this side's rows window by window (matching the peer's key-ordered
-- pages) and queue fixes into the outbox, where the running relay ships them.

-- name: reconcile_local_window
-- The rows whose key lies in (after, upto]; a NULL bound is open. `in_scope` is false
-- for rows this side does not ship (its `where` filter, or handed off to the peer).
SELECT {key_object} AS key, {fields_object} AS fields, {in_scope} AS in_scope
FROM {table} AS t
WHERE (%(after)s::jsonb IS NULL
       OR ({key_columns}) > (SELECT {bound_columns}
                             FROM jsonb_populate_record(NULL::{table}, %(after)s::jsonb) AS b))
  AND (%(upto)s::jsonb IS NULL
       OR ({key_columns}) <= (SELECT {bound_columns}
                              FROM jsonb_populate_record(NULL::{table}, %(upto)s::jsonb) AS b))
ORDER BY {key_columns};

-- name: reconcile_queue_upserts
-- Like a snapshot chunk: the rows' current state as upserts, in key order, read FOR SHARE
-- so a concurrent uncommitted change is waited for and its outbox row stays below ours.
WITH fixed AS (
    SELECT {key_object} AS key, {fields_object} AS fields
    FROM {table} AS t
    WHERE ({key_columns}) IN (SELECT {bound_columns}
                              FROM jsonb_populate_recordset(NULL::{table}, %(keys)s::jsonb) AS b)
    ORDER BY {key_columns}
    FOR SHARE OF t
), queued AS (
    {queue}
    SELECT %(label)s, 'U', key, fields, NULL, NULL, %(origin)s FROM fixed
    RETURNING 1
)
SELECT count(*) FROM queued;

-- name: reconcile_queue_deletes
-- Rows only the peer has: deletes, for keys that still do not exist here.
WITH queued AS (
    {queue}
    SELECT %(label)s, 'D', k.key, NULL, NULL, NULL, %(origin)s
    FROM jsonb_array_elements(%(keys)s::jsonb) WITH ORDINALITY AS k(key, n)
    WHERE NOT EXISTS (
        SELECT 1 FROM {table} AS t
        WHERE ({key_columns}) = (SELECT {bound_columns}
                                 FROM jsonb_populate_record(NULL::{table}, k.key) AS b))
    ORDER BY k.n
    RETURNING 1
)
SELECT count(*) FROM queued;

-- name: reconcile_pending
-- Changes not yet acknowledged: what the peer lacks may simply be on its way.
SELECT count(*) FROM {schema}.outbox WHERE table_name = %(label)s;
