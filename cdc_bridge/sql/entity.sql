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
LEFT JOIN {schema}.entity_xref x ON x.entity = w.entity AND x.local_key = w.local_key
ORDER BY w.n;

-- name: entity_local_keys
-- serve: the local key of each entity key (NULL: the record has not been here before).
SELECT e.n, x.local_key::text
FROM jsonb_array_elements(%(keys)s::jsonb) WITH ORDINALITY AS e(k, n)
LEFT JOIN {schema}.entity_xref x ON x.entity = %(entity)s AND x.entity_key = e.k
ORDER BY e.n;

-- name: entity_key_default
-- How the table generates its key column: an identity or serial column's sequence, or
-- the column's DEFAULT expression (e.g. gen_random_uuid()).
SELECT pg_catalog.pg_get_serial_sequence({relation}, %(column)s),
       pg_catalog.pg_get_expr(d.adbin, d.adrelid)
FROM pg_catalog.pg_attribute a
LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE a.attrelid = {relation}::regclass AND a.attname = %(column)s;

-- name: entity_next_keys
-- serve: %(n)s new keys from the key column's sequence or default, as jsonb text.
SELECT to_jsonb({generated})::text FROM generate_series(1, %(n)s);

-- name: entity_record_xref
-- serve: the keys it generated for records new here. Pairs of [entity key, local key].
INSERT INTO {schema}.entity_xref (entity, entity_key, local_key)
SELECT %(entity)s, p.value -> 0, p.value -> 1
FROM jsonb_array_elements(%(pairs)s::jsonb) AS p
ON CONFLICT DO NOTHING;

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
