-- Reference designs (not cdc-bridge): the event table they write, the same for both, so
-- their storage compares: one row per change, the whole new and old row as jsonb.
CREATE TABLE public.ref_outbox (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    txid       xid8 NOT NULL DEFAULT pg_current_xact_id(),
    table_name text NOT NULL,
    op         text NOT NULL,
    new_row    jsonb,
    old_row    jsonb,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
