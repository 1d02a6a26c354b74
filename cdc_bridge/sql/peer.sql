-- Peer endpoints: what the bridge keeps about records at the peer application.

-- name: peer_create_xref
-- The cross-reference: the id a peer application gave each record it created (the REST
-- adapter's `rest.id`), by table and this side's key; later requests name the record by it.
CREATE TABLE IF NOT EXISTS {schema}.xref (
    table_name text NOT NULL,
    key        jsonb NOT NULL,
    peer_id    text NOT NULL,
    learned_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (table_name, key)
);
-- `serve` finds this side's keys by the application's ids (entity_keys_of_peer_ids).
CREATE INDEX IF NOT EXISTS xref_peer_id ON {schema}.xref (table_name, peer_id);

-- name: peer_xref_get
SELECT peer_id FROM {schema}.xref WHERE table_name = %(table)s AND key = %(key)s::jsonb;

-- name: peer_xref_save
INSERT INTO {schema}.xref (table_name, key, peer_id) VALUES (%(table)s, %(key)s::jsonb, %(peer_id)s)
ON CONFLICT (table_name, key) DO UPDATE SET peer_id = excluded.peer_id, learned_at = now();

-- name: peer_xref_forget
DELETE FROM {schema}.xref WHERE table_name = %(table)s AND key = %(key)s::jsonb;
