-- Sample ERP tables for examples/erp-commerce-api.yaml: the ERP facing a hosted shop's
-- REST API (no cdc-bridge on the shop's side). Every synced table needs a primary key
-- (or a unique index) on the configured key.
CREATE TABLE public.customers (
    id    bigint PRIMARY KEY,
    name  text NOT NULL,
    email text
);
CREATE TABLE public.orders (
    id          bigint PRIMARY KEY,
    customer_id bigint,
    total       numeric(20,6),
    status      text NOT NULL DEFAULT 'new'
);
CREATE TABLE public.products (
    sku   text PRIMARY KEY,
    name  text,
    price numeric(20,6)
);
