-- The entity layer's cross-reference (cdc_bridge/entity.py): for a table whose key this
-- side generates itself (config `xref`), which local key holds which entity key.

-- name: entity_create_xref
-- One row per record of such a table that has crossed the bridge: filled by `serve` when
-- it first applies a record (the key it generates here) and by the relay when it first
-- ships a record born here (the key it mints for it: the value of the column mapped to
-- the entity key where there is one, else `<system>-<local key>`).
CREATE TABLE IF NOT EXISTS {schema}.entity_xref (
    entity      text NOT NULL,
    entity_key  jsonb NOT NULL,
    local_key   jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (entity, entity_key),
    UNIQUE (entity, local_key)
);

-- name: entity_keys_of_local
-- The relay: the entity key of each local key, minting one (`minted`) for a local key
-- seen for the first time. Rows come as a JSON array of objects (entity, local_key,
-- minted);
-- the answer gives each one's position (n) and its entity key as jsonb text.
WITH wanted AS (
    SELECT e.n, e.v ->> 'entity' AS entity, e.v -> 'local_key' AS local_key,
           e.v -> 'minted' AS minted
    FROM jsonb_array_elements(%(rows)s::jsonb) WITH ORDINALITY AS e(v, n)
), added AS (
    INSERT INTO {schema}.entity_xref (entity, entity_key, local_key)
    -- A record's own row comes before references to it (it was written first): its
    -- minted key (from the column holding the entity key, if any) is the one kept.
    SELECT DISTINCT ON (entity, local_key) entity, minted, local_key FROM wanted
    ORDER BY entity, local_key, n
    ON CONFLICT DO NOTHING
    RETURNING entity, local_key, entity_key
)
SELECT w.n, coalesce(a.entity_key, x.entity_key)::text
FROM wanted w
LEFT JOIN added a ON a.entity = w.entity AND a.local_key = w.local_key
-- One index probe per key (see entity_local_keys), not a scan of the cross-reference.
LEFT JOIN LATERAL (
    SELECT x.entity_key FROM {schema}.entity_xref x
    WHERE x.entity = w.entity AND x.local_key = w.local_key
    LIMIT 1
) x ON true
ORDER BY w.n;

-- name: entity_local_keys
-- serve: the local key of each entity key (NULL: the record has not been here before).
-- One index probe per key (LATERAL ... LIMIT 1 keeps the planner from hashing the whole
-- cross-reference, which it does when its statistics lag behind a fast-growing table).
SELECT e.n, x.local_key::text
FROM jsonb_array_elements(%(keys)s::jsonb) WITH ORDINALITY AS e(k, n)
LEFT JOIN LATERAL (
    SELECT x.local_key FROM {schema}.entity_xref x
    WHERE x.entity = %(entity)s AND x.entity_key = e.k
    LIMIT 1
) x ON true
ORDER BY e.n;

-- name: entity_resolve_keys
-- serve, in the batch's transaction: the local key of each entity key of one table whose
-- key this side generates, in one statement. Keys come as a JSON array of [entity key,
-- creates]; a key not in the cross-reference that `creates` (an insert or update, not a
-- delete) gets a new local key from the key column's sequence or default, recorded now,
-- so later changes of the batch and references to it find it. NULL: not here and not
-- created (a delete). The answer is one JSON array of local keys, in the order given.
-- {conflict} is empty (the keys were just looked up: no speculative
-- insertion, which doubles the cost of an insert into this table's two unique indexes),
-- or, when that raised a unique violation (a concurrent batch recorded the key first, or
-- the generated key is taken), ON CONFLICT DO NOTHING: NULL then means look again.
WITH wanted AS (
    SELECT e.n, e.v -> 0 AS entity_key, (e.v -> 1)::boolean AS creates
    FROM jsonb_array_elements(%(keys)s::jsonb) WITH ORDINALITY AS e(v, n)
), known AS (
    SELECT w.n, w.entity_key, w.creates, x.local_key
    FROM wanted w
    LEFT JOIN LATERAL (
        SELECT x.local_key FROM {schema}.entity_xref x
        WHERE x.entity = %(entity)s AND x.entity_key = w.entity_key
        LIMIT 1
    ) x ON true
), added AS (
    INSERT INTO {schema}.entity_xref (entity, entity_key, local_key)
    SELECT %(entity)s, k.entity_key, jsonb_build_object(%(column)s::text, {generated})
    FROM known k
    WHERE k.local_key IS NULL AND k.creates
    ORDER BY k.n
    {conflict}
    RETURNING entity_key, local_key
)
SELECT coalesce(jsonb_agg(coalesce(k.local_key, a.local_key) ORDER BY k.n), '[]')::text
FROM known k
LEFT JOIN added a ON k.local_key IS NULL AND a.entity_key = k.entity_key;

-- name: entity_key_default
-- How the table generates its key column: an identity or serial column's sequence, or
-- the column's DEFAULT expression (e.g. gen_random_uuid()).
SELECT pg_catalog.pg_get_serial_sequence({relation}, %(column)s),
       pg_catalog.pg_get_expr(d.adbin, d.adrelid)
FROM pg_catalog.pg_attribute a
LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE a.attrelid = {relation}::regclass AND a.attname = %(column)s;

-- name: entity_computed
-- The relay: computed fields (config `expr`) of rows, each row typed by the table's own
-- row type, in the order given.
SELECT (SELECT jsonb_build_object({pairs}) FROM jsonb_populate_record(NULL::{table}, r.v) AS t)::text
FROM jsonb_array_elements(%(rows)s::jsonb) WITH ORDINALITY AS r(v, n)
ORDER BY r.n;

-- name: entity_keys_of_peer_ids
-- serve, for an application peer: this side's keys of the records the application knows
-- by these ids (the REST adapter's cross-reference, filled from its create answers).
SELECT x.peer_id, x.key::text
FROM {schema}.xref x
WHERE x.table_name = %(table)s AND x.peer_id = ANY(%(ids)s::text[]);
