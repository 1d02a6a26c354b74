-- Sample shop tables for examples/shop.yaml: the shop's copy of the same records.
-- Tables received as whole rows (customers here, orders at the ERP) need every column
-- the sender ships; other columns may differ between the two sides.
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
    stock       int            -- not synced: the shop's own stock figure
);
CREATE TABLE public.accounts (
    id           bigint PRIMARY KEY,
    company_name text,
    address      text,
    credit_limit numeric(12,2),
    status       text NOT NULL DEFAULT 'active'
);
