-- Relay bookkeeping: what was sent, what the peer said, what was delivered or failed.
-- `delivered` and `failed` keep every outbox column, so a change can be shown, replayed
-- (its idempotency key is rebuilt from txid and id) or compared long after it left the outbox.

-- name: relay_create_batches
CREATE TABLE IF NOT EXISTS {schema}.batches (
    batch_id     text PRIMARY KEY,          -- the webhook-id sent to the peer
    status       text NOT NULL,
    change_count int NOT NULL,
    first_id     bigint NOT NULL,           -- outbox ids covered (for listing)
    last_id      bigint NOT NULL,
    replay       bool NOT NULL DEFAULT false,
    created_at   timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz
);
CREATE INDEX IF NOT EXISTS batches_status_created ON {schema}.batches (status, created_at);
-- split: retried in smaller batches to find a change the peer keeps failing on;
-- abandoned: left unfinished by a relay that stopped or died (its changes went out again).
ALTER TABLE {schema}.batches DROP CONSTRAINT IF EXISTS batches_status_check;
ALTER TABLE {schema}.batches ADD CONSTRAINT batches_status_check
    CHECK (status IN ('pending', 'delivered', 'failed', 'split', 'abandoned'));

-- name: relay_create_attempts
CREATE TABLE IF NOT EXISTS {schema}.attempts (
    batch_id      text NOT NULL REFERENCES {schema}.batches ON DELETE CASCADE,
    attempted_at  timestamptz NOT NULL DEFAULT now(),
    http_status   int,                      -- NULL: no answer (connection error, timeout)
    error         text,
    response_body text,
    duration_ms   double precision
);
CREATE INDEX IF NOT EXISTS attempts_batch ON {schema}.attempts (batch_id, attempted_at);

-- name: relay_create_delivered
CREATE TABLE IF NOT EXISTS {schema}.delivered (
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
DROP INDEX IF EXISTS {schema}.delivered_key;
CREATE INDEX IF NOT EXISTS delivered_key_hash ON {schema}.delivered USING hash (key);
DROP INDEX IF EXISTS {schema}.delivered_at;
CREATE INDEX IF NOT EXISTS delivered_at_brin ON {schema}.delivered USING brin (delivered_at);

-- name: relay_create_failed
-- Changes the peer refused for good. Later changes of the same (table_name, key) stay in
-- the outbox (parked) until this one is replayed or skipped, so order is never broken.
CREATE TABLE IF NOT EXISTS {schema}.failed (
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
CREATE INDEX IF NOT EXISTS failed_key ON {schema}.failed (table_name, key);

-- name: relay_fetch_pending
-- Whole source transactions from the head of the outbox. No cursor: a transaction that
-- committed late (lower ids, later commit) is simply still here on the next read.
-- `head` is the oldest %(limit)s rows not in flight. When it is full, rows of its
-- transactions may lie past it: `owners` probes each transaction once for a row past
-- the head (index outbox_txid: for nearly every transaction the next entry is another
-- transaction's, so nothing else is read), and only the transactions that go on past it,
-- or have a parked row, are counted and their last id found (`txns`); `tail` reads the
-- rows past the head, at most %(max_txn)s in all, so memory stays bounded. Every other
-- transaction's pending rows outside the batches in flight are exactly its rows in the
-- head (the head holds every such row up to its last id). When the head is not full it
-- holds every visible pending row, and nothing is probed (txn_rows is NULL: complete).
-- Rows whose key has a failed change are parked (left out); `txn_parked` says that
-- another row of the transaction is, so all of it waits (looked up only while `failed`
-- holds anything).
-- Rows of %(whole_tables)s (tables that ship whole rows unchanged) come with their
-- protocol change already encoded by PostgreSQL (change_json) and no parsed key, fields
-- or old: the relay embeds that text in the batch as is. Other rows come parsed, to be
-- narrowed to the owned fields by the SOR filter.
-- change_json is concatenated text, not jsonb_build_object(...)::text: building a jsonb
-- and printing it took twice the time (13 us a row, half of this query's cost). Every
-- piece is JSON already: to_json() quotes strings and times, jsonb prints as JSON.
-- This side's own changes of the mapped tables written into the encoding part (see
-- relay_encode_entities) come encoded as their entity change the same way: key and
-- fields renamed in jsonb order, codes mapped. A row with a value its map lacks, or with
-- old values, comes parsed: the relay refuses or translates it.
WITH head AS MATERIALIZED (
    SELECT o.* FROM {schema}.outbox o
    -- Rows of batches in flight (a hashed subplan: cheap even for thousands of ids).
    WHERE o.id NOT IN (SELECT unnest(%(in_flight)s::bigint[]))
      -- Parked rows. A filter, not an anti-join: the walk stays in id order and stops
      -- at the limit (a hash anti-join read the whole outbox), and while `failed` is
      -- empty nothing is probed.
      AND NOT ((SELECT EXISTS (SELECT FROM {schema}.failed)) AND EXISTS (
          SELECT FROM {schema}.failed f WHERE f.table_name = o.table_name AND f.key = o.key))
    ORDER BY o.id
    LIMIT %(limit)s
), bound AS MATERIALIZED (
    SELECT count(*) >= %(limit)s AS full, max(id) AS upto,
           EXISTS (SELECT FROM {schema}.failed) AS failures
    FROM head
), owners AS MATERIALIZED (
    SELECT h.txid, h.rows, h.last_id,
           -- A row of the transaction past the head (only when the head is full).
           b.full AND EXISTS (
               SELECT FROM {schema}.outbox x WHERE b.full AND x.txid = h.txid AND x.id > b.upto
           ) AS past,
           -- Another row of the transaction waits behind a failed change: all of it waits.
           b.failures AND EXISTS (
               SELECT FROM {schema}.outbox x
               JOIN {schema}.failed f ON f.table_name = x.table_name AND f.key = x.key
               WHERE b.failures AND x.txid = h.txid) AS parked
    FROM (SELECT txid, count(*) AS rows, max(id) AS last_id FROM head GROUP BY txid) h
    CROSS JOIN bound b
), txns AS MATERIALIZED (
    SELECT o.txid, o.past,
           CASE WHEN b.full THEN coalesce(s.txn_rows, o.rows) END AS txn_rows,
           coalesce(s.txn_last_id, o.last_id) AS txn_last_id,
           o.parked AS txn_parked
    FROM owners o
    CROSS JOIN bound b
    -- Only for a transaction that goes on past the head or has a parked row (the gate
    -- is a one-time filter: HAVING yields no row else).
    LEFT JOIN LATERAL (
        SELECT count(*) AS txn_rows, max(x.id) AS txn_last_id
        FROM {schema}.outbox x
        WHERE (o.past OR o.parked) AND x.txid = o.txid
          AND x.id NOT IN (SELECT unnest(%(in_flight)s::bigint[]))
        HAVING o.past OR o.parked
    ) s ON true
), tail AS (
    -- Only the transactions that go on past the head are looked up (index outbox_txid).
    SELECT x.* FROM txns t
    CROSS JOIN bound b
    CROSS JOIN LATERAL (
        SELECT x.* FROM {schema}.outbox x
        WHERE x.txid = t.txid AND x.id > b.upto
        ORDER BY x.id
        LIMIT %(max_txn)s
    ) x
    WHERE t.past
    ORDER BY x.id
    LIMIT %(max_txn)s
)
SELECT o.id, o.txid::text AS txid, o.table_name, o.op,
       CASE WHEN c.encoded THEN NULL ELSE o.key END AS key, o.key::text AS key_text,
       CASE WHEN c.encoded THEN NULL ELSE o.fields END AS fields,
       CASE WHEN c.encoded THEN NULL ELSE o.old END AS old,
       o.changed, o.origin, o.captured_at,
       {change_json} AS change_json,
       t.txn_rows, t.txn_last_id, t.txn_parked
FROM (SELECT * FROM head UNION ALL SELECT * FROM tail) o
JOIN txns t ON t.txid = o.txid
CROSS JOIN LATERAL (
    SELECT o.origin = %(system)s AND o.table_name = ANY(%(whole_tables)s::text[]) AS whole
) w
{encoding}
ORDER BY o.id;

-- name: relay_read_settings
-- The relay's read connection walks the outbox by its primary key, whatever the
-- statistics say. The relay drains the outbox and VACUUMs it, so its statistics often
-- describe it nearly empty (one row a page) while a burst has filled it since: the
-- planner then expects a few hundred rows and reads the head with a sequential scan
-- and a sort of the whole outbox (measured: 80-200 ms a read instead of 5-15 at 40,000
-- pending rows). Every statement on this connection has an index to use.
-- No JIT compilation either. Its estimates are of the whole outbox (the read stops at
-- its limit), so the read cost over jit_above_cost and was compiled at every run, and the
-- rotation's statements on this connection, whose one-row tables only a sequential scan
-- reads (costed at enable_seqscan's penalty), were compiled with inlining and
-- optimization: measured with autovacuum off on the outbox, 41% of samples of this
-- connection in the read, 180 ms of a 200 ms read in compiling, the shipping loop
-- stalled by each rotation. Nothing the relay runs here takes long enough to gain.
SELECT pg_catalog.set_config('enable_seqscan', 'off', false),
       pg_catalog.set_config('jit', 'off', false);

-- name: relay_record_settings
-- The relay's recording connection joins a batch's ids (an array, of unknown size in a
-- generic plan) to its outbox rows: a hash join, never a nested loop of one over the
-- other, which costs (batch size)^2 when both are estimated at a few rows. No JIT
-- compilation (see relay_read_settings): one statement per batch, over a batch's rows.
SELECT pg_catalog.set_config('enable_nestloop', 'off', false),
       pg_catalog.set_config('jit', 'off', false);

-- name: relay_encode_entities
-- The part of relay_fetch_pending that encodes changes when some mapped tables are
-- encoded by PostgreSQL: `c` says whether a row comes encoded, and its entity, key and
-- fields as JSON text. The tables are written into the statement (one WHEN per table
-- label in each CASE, from relay_encode_table_*), so a row costs a few jsonb probes of
-- its own key and fields: the generic form, which walked each row's fields with
-- jsonb_each and looked every name and code up in a jsonb spec, cost 6 us a row (a
-- third of the read). `g.mapped` is NULL for rows of other tables, echoes and rows
-- with old values, and false for a row with a code its map lacks: those come parsed.
CROSS JOIN LATERAL (
    SELECT CASE WHEN o.origin = %(system)s AND o.old IS NULL THEN
               CASE o.table_name {codes_known} END
           END AS mapped
    OFFSET 0
) g
CROSS JOIN LATERAL (
    SELECT w.whole OR coalesce(g.mapped, false) AS encoded,
           CASE WHEN w.whole THEN o.table_name
                WHEN g.mapped THEN CASE o.table_name {entity} END
           END AS entity,
           CASE WHEN w.whole THEN o.key::text
                WHEN g.mapped THEN '{{' || ltrim(CASE o.table_name {key_json} END, ',') || '}}'
           END AS key_json,
           -- '{{}}' for no fields, NULL for none (a delete without them).
           CASE WHEN w.whole THEN o.fields::text
                WHEN g.mapped AND o.fields IS NOT NULL
                    THEN '{{' || ltrim(CASE o.table_name {fields_json} END, ',') || '}}'
           END AS fields_json
) c

-- name: relay_encode_table_when
-- One mapped table's branch of a CASE o.table_name in relay_encode_entities, or one
-- code's in relay_encode_table_mapped_field.
WHEN {label} THEN {value}

-- name: relay_encode_table_code_known
-- A mapped column's value is JSON null, absent, or a text code its map lists.
coalesce(o.fields -> {column} = 'null'
         OR (jsonb_typeof(o.fields -> {column}) = 'string'
             AND o.fields ->> {column} IN ({codes})), true)

-- name: relay_encode_table_key
-- One column of the key, renamed, left out when the key lacks it. {field} is the JSON
-- text `,"field":`.
coalesce({field} || (o.key -> {column})::text, '')

-- name: relay_encode_table_field
-- One column of the fields, renamed, left out when the row lacks it. {field} is the JSON
-- text `,"field":`.
coalesce({field} || (o.fields -> {column})::text, '')

-- name: relay_encode_table_mapped_field
-- One column of the fields, renamed and its code mapped ({codes}: WHEN code THEN the
-- entity value's JSON text); JSON null stays null.
coalesce({field} || CASE o.fields ->> {column} {codes}
                   ELSE (o.fields -> {column})::text END, '')

-- name: relay_encoded_change
-- relay_fetch_pending's change_json for a peer that takes the batch protocol: the whole
-- change, as the protocol writes it.
CASE WHEN c.encoded THEN
    '{{"idempotency_key":'
    || to_json(%(system)s || ':' || o.txid::text || ':' || o.id::text)::text
    || ',"txid":"' || o.txid::text || '"'
    || ',"entity":' || to_json(c.entity)::text
    || ',"op":' || CASE o.op WHEN 'I' THEN '"insert"' WHEN 'U' THEN '"update"'
                             ELSE '"delete"' END
    || ',"key":' || c.key_json
    || ',"committed_at":' || to_json(o.captured_at)::text
    || ',"origin":' || to_json(o.origin)::text
    || coalesce(',"fields":' || c.fields_json, '')
    || coalesce(',"old":' || o.old::text, '')
    || '}}'
END

-- name: relay_encoded_fields
-- relay_fetch_pending's change_json for a peer that builds its own requests from a row as
-- it is (a REST body of the row's columns): the change's fields, as jsonb prints them.
-- A delete has none: it comes parsed.
CASE WHEN c.encoded THEN c.fields_json END

-- name: relay_encode_whole
-- The part of relay_fetch_pending that encodes changes when no mapped table is: only
-- the whole-row tables' own changes come encoded. Left out, the joins of
-- relay_encode_entities cost a fifth of the read even with nothing to join.
CROSS JOIN LATERAL (
    SELECT w.whole AS encoded, o.table_name AS entity, o.key::text AS key_json,
           o.fields::text AS fields_json
) c

-- name: relay_foreign_keys
-- Foreign keys between tables this side ships (source side): the relay keeps the
-- transactions that touch one group of linked tables in order, on one lane at a time.
-- Relations come as quoted names (to_regclass: a table missing here is just left out).
WITH synced AS (
    SELECT t.label, to_regclass(t.relation) AS oid
    FROM unnest(%(labels)s::text[], %(relations)s::text[]) AS t(label, relation)
)
SELECT child.label AS child, parent.label AS parent
FROM pg_catalog.pg_constraint c
JOIN synced child ON child.oid = c.conrelid
JOIN synced parent ON parent.oid = c.confrelid
WHERE c.contype = 'f';

-- name: relay_abandon_batches
-- A new leader closes the batches an earlier relay left unfinished (killed or stopped
-- mid-retry): their changes are still in the outbox and go out again in new batches.
UPDATE {schema}.batches SET status = 'abandoned', finished_at = now()
WHERE status = 'pending';

-- name: relay_close_batch
UPDATE {schema}.batches SET status = %(status)s, finished_at = now()
WHERE batch_id = %(batch_id)s;

-- name: relay_oldest_pending
-- Seconds since the oldest undelivered change was captured (NULL: the outbox is empty).
-- Every row counts: in flight, waiting for a lane, or parked behind a failed change. The
-- lowest id is the oldest capture (ids and capture times are taken in the same INSERT), so
-- one primary-key probe answers, however long the backlog is.
SELECT extract(epoch FROM clock_timestamp() - captured_at)::float8
FROM {schema}.outbox ORDER BY id LIMIT 1;

-- name: relay_ack
-- Acknowledged (or filtered) changes leave the outbox and enter `delivered` in one
-- statement: a change is in exactly one of the two at any moment. The move itself is
-- the next block, which `relay_record_outcome` shares (it is not a query on its own).
WITH {move_to_delivered};

-- name: relay_move_to_delivered
results AS (
    SELECT * FROM unnest(%(ids)s::bigint[], %(results)s::text[]) AS r(id, result)
), gone AS (
    -- `o.id = ANY`: the outbox is walked for these rows only, whatever its statistics say.
    -- The relay VACUUMs it while nearly empty, so they often say one row, and the generic
    -- plan a prepared statement gets after five runs then scanned the whole outbox for
    -- each of the batch's rows (measured: 1.8 s to record 500 changes at 10,000 pending).
    DELETE FROM {schema}.outbox o USING results r
    WHERE o.id = ANY(%(ids)s::bigint[]) AND o.id = r.id
    RETURNING o.*, r.result
)
INSERT INTO {schema}.delivered
    (id, txid, table_name, op, key, fields, old, changed, origin, captured_at, batch_id, result)
SELECT id, txid, table_name, op, key, fields, old, changed, origin, captured_at,
       %(batch_id)s, result
FROM gone

-- name: relay_record_outcome
-- One attempt's outcome in one statement (atomic on its own in autocommit): the batch
-- row, the attempt, and the acknowledged changes moved from the outbox to `delivered`.
-- A batch settled on its first attempt is finished at once (retention prunes by it).
-- One statement instead of four in a transaction: one round trip, one parse-free
-- prepared execution, no BEGIN/COMMIT. The attempt's foreign key is checked at the end
-- of the statement, when the batch row exists.
WITH batch AS (
    INSERT INTO {schema}.batches AS b
        (batch_id, status, change_count, first_id, last_id, finished_at)
    VALUES (%(batch_id)s, %(status)s, %(change_count)s, %(first_id)s, %(last_id)s,
            CASE WHEN %(status)s = 'pending' THEN NULL ELSE now() END)
    ON CONFLICT (batch_id) DO UPDATE
    SET status = excluded.status,
        finished_at = CASE WHEN excluded.status = 'pending' THEN NULL ELSE now() END
    RETURNING b.batch_id
), attempt AS (
    INSERT INTO {schema}.attempts (batch_id, http_status, error, response_body, duration_ms)
    SELECT batch_id, %(http_status)s, %(error)s, %(response_body)s, %(duration_ms)s
    FROM batch
), {move_to_delivered};

-- name: relay_fail
-- Permanently refused changes move to `failed`, keeping the peer's answer for replay.
WITH reasons AS (
    SELECT * FROM unnest(%(ids)s::bigint[], %(reasons)s::text[], %(statuses)s::int[],
                         %(bodies)s::text[]) AS r(id, reason, http_status, response_body)
), gone AS (
    DELETE FROM {schema}.outbox o USING reasons r
    WHERE o.id = ANY(%(ids)s::bigint[]) AND o.id = r.id  -- as in relay_move_to_delivered
    RETURNING o.*, r.reason, r.http_status, r.response_body
)
INSERT INTO {schema}.failed
    (id, txid, table_name, op, key, fields, old, changed, origin, captured_at, batch_id,
     http_status, reason, response_body)
SELECT id, txid, table_name, op, key, fields, old, changed, origin, captured_at,
       %(batch_id)s, http_status, reason, response_body
FROM gone;

-- name: relay_record_handoffs
-- The peer applied these rows of `sor: handoff` tables: it owns them from now on.
-- Keys come as their jsonb text (an array literal of it): exact, and nothing to parse.
INSERT INTO {schema}.handoffs (table_name, key)
SELECT * FROM unnest(%(tables)s::text[], %(keys)s::jsonb[])
ON CONFLICT DO NOTHING;

-- name: relay_settled_below
-- The watermark sent with each batch (protocol `settled_below`): below it, every source
-- transaction that could write this outbox has finished, and none of its changes is
-- still in the outbox. Each change below it left the outbox acknowledged by the peer, or
-- refused (failed, maybe skipped since); a replay sends the refused ones under a new txid
-- (ops_requeue). So every change below it that reaches the peer again is a resend of one
-- the peer applied.
-- Transactions still running at this statement's snapshot hold it back, except those
-- known to run in another database of the cluster (they cannot write this outbox, and a
-- long one elsewhere must not hold the watermark here). One that finished since the
-- snapshot, or whose database this role cannot see, counts: its rows may be invisible
-- to this snapshot. Transactions that finished before it are visible to the outbox read.
SELECT least(
    (SELECT min(x) FROM pg_snapshot_xip(s.snap) AS x
     WHERE NOT EXISTS (
         SELECT FROM pg_stat_activity a
         WHERE a.backend_xid = x::xid
           AND a.datid <> (SELECT d.oid FROM pg_database d
                           WHERE d.datname = current_database()))),
    pg_snapshot_xmax(s.snap),
    (SELECT txid FROM {schema}.outbox ORDER BY txid LIMIT 1)
)::text::bigint
FROM (SELECT pg_current_snapshot() AS snap) AS s;

-- name: relay_try_lock
SELECT pg_try_advisory_lock(hashtextextended(%(lock_name)s, 0));

-- name: relay_lock_holder
-- The session holding the relay's advisory lock (64-bit key = classid << 32 | objid).
SELECT a.pid, a.application_name, a.client_addr::text AS client_addr,
       a.backend_start
FROM pg_locks l
JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND ((l.classid::bigint << 32) | l.objid::bigint) = hashtextextended(%(lock_name)s, 0);

-- name: relay_status_tables
SELECT t.table_name AS "table",
       coalesce(p.pending, 0) AS pending,
       extract(epoch FROM now() - p.oldest) AS oldest_pending_s,
       d.last_delivery,
       coalesce(f.failed, 0) AS failed
FROM (SELECT unnest(%(tables)s::text[]) AS table_name) t
LEFT JOIN (SELECT table_name, count(*) AS pending, min(captured_at) AS oldest
           FROM {schema}.outbox GROUP BY table_name) p USING (table_name)
LEFT JOIN (SELECT table_name, max(delivered_at) AS last_delivery
           FROM {schema}.delivered WHERE result <> 'filtered' GROUP BY table_name) d
       USING (table_name)
LEFT JOIN (SELECT table_name, count(*) AS failed
           FROM {schema}.failed GROUP BY table_name) f USING (table_name)
ORDER BY t.table_name;

-- name: relay_oldest_transaction
-- The oldest open transaction of this database: its outbox rows (if any) are invisible
-- until it commits, so it is what an operator looks at when delivery seems stuck.
SELECT pid, extract(epoch FROM now() - xact_start) AS age_s, query_start, state,
       left(query, 200) AS query
FROM pg_stat_activity
WHERE datname = current_database() AND xact_start IS NOT NULL
  AND backend_xid IS NOT NULL AND pid <> pg_backend_pid()
ORDER BY xact_start
LIMIT 1;

-- name: relay_listen
-- The relay is idle: from now on writers notify (see capture.sql: capture_wake).
-- Waits for the writers that hold the key shared: they wrote while no relay listened. At
-- most %(timeout)s: set_config comes first in the target list and is LOCAL, so the limit
-- holds for this statement's lock wait alone (one round trip, in autocommit).
SELECT pg_catalog.set_config('lock_timeout', %(timeout)s, true),
       pg_catalog.pg_advisory_lock(%(key)s::bigint);

-- name: relay_stop_listening
-- The relay ships and reads again by itself: writers need not notify.
SELECT pg_catalog.pg_advisory_unlock(%(key)s::bigint);

-- name: relay_listening_holder
-- The session that listens for this bridge schema (none: writers send no NOTIFY).
SELECT l.pid
FROM pg_locks l
WHERE l.locktype = 'advisory' AND l.granted AND l.mode = 'ExclusiveLock'
  AND l.objsubid = 1 AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND ((l.classid::bigint << 32) | l.objid::bigint) = %(key)s::bigint;
