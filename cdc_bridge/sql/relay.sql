-- Relay bookkeeping: what was sent, what the peer said, what was delivered or failed.
-- `delivered` and `failed` keep every outbox column, so a change can be shown, replayed
-- (its idempotency key is rebuilt from txid and id) or compared long after it left the outbox.

-- name: relay_create_batches
CREATE TABLE IF NOT EXISTS {schema}.batches (
    batch_id     text PRIMARY KEY,          -- the webhook-id sent to the peer
    status       text NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
    change_count int NOT NULL,
    first_id     bigint NOT NULL,           -- outbox ids covered (for listing)
    last_id      bigint NOT NULL,
    replay       bool NOT NULL DEFAULT false,
    created_at   timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz
);
CREATE INDEX IF NOT EXISTS batches_status_created ON {schema}.batches (status, created_at);

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
CREATE INDEX IF NOT EXISTS delivered_key ON {schema}.delivered (table_name, key, id);
CREATE INDEX IF NOT EXISTS delivered_at ON {schema}.delivered (delivered_at);

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
