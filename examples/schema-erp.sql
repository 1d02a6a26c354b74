-- Sample ERP tables for examples/erp.yaml and the per-path examples.
-- Every synced table needs a primary key (or a unique index) on the configured key.
-- No foreign keys between synced tables: the bridge keeps commit order per record,
-- not across tables, so a child row may arrive before its parent.
CREATE TABLE public.customers (
    id    bigint PRIMARY KEY,
    name  text NOT NULL,
    email text,
    tier  text
);
CREATE TABLE public.orders (
    id          bigint PRIMARY KEY,
    customer_id bigint,
    total       numeric(12,2),
    status      text NOT NULL DEFAULT 'new'
);
CREATE TABLE public.products (
    sku         text PRIMARY KEY,
    name        text,
    price       numeric(12,2),
    description text,
    stock       int            -- not synced: each side keeps its own
);
CREATE TABLE public.accounts (
    id           bigint PRIMARY KEY,
    company_name text,
    address      text,
    credit_limit numeric(12,2),
    status       text NOT NULL DEFAULT 'active',
    notes        text          -- not synced
);
