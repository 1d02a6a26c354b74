-- The web shop's tables (examples/shop.yaml). The shop generates its own ids, says words
-- where the ERP has codes, and names everything its own way.
CREATE TYPE public.order_status AS ENUM ('open', 'shipped', 'closed', 'cancelled');
CREATE TABLE public.customers (
    id            bigserial PRIMARY KEY,
    full_name     text NOT NULL,
    email_address text,
    phone         text
);
CREATE TABLE public.products (
    id          bigserial PRIMARY KEY,
    sku_code    text NOT NULL UNIQUE,
    label       text NOT NULL,
    gross_price numeric(20,2) NOT NULL,
    visible     boolean NOT NULL,
    specs       jsonb,
    tax_class   text NOT NULL               -- the shop's own: not carried by the entity
);
-- The net price lives in a 1:1 side table, keyed by the product's generated id.
CREATE TABLE public.product_prices (
    product_id bigint PRIMARY KEY REFERENCES public.products ON DELETE CASCADE,
    net_price  numeric(20,6) NOT NULL
);
CREATE TABLE public.orders (
    id          bigint GENERATED ALWAYS AS IDENTITY (START WITH 1001) PRIMARY KEY,
    customer_id bigint NOT NULL REFERENCES public.customers,
    status      public.order_status NOT NULL DEFAULT 'open',
    total       numeric(20,6) NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE public.order_lines (
    id         bigint GENERATED ALWAYS AS IDENTITY (START WITH 5001) PRIMARY KEY,
    order_id   bigint NOT NULL REFERENCES public.orders ON DELETE CASCADE,
    product_id bigint NOT NULL REFERENCES public.products,
    quantity   integer NOT NULL CHECK (quantity > 0),
    unit_price numeric(20,6) NOT NULL
);
