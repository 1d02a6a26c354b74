-- The ERP's tables (examples/erp.yaml). The ERP assigns its own natural keys (customer
-- CUST-1042, item ITEM-1), keeps one-letter codes and money as numeric(20,6).
CREATE TABLE public.customers (
    customer_no  text PRIMARY KEY,
    name         text NOT NULL,
    email        text,
    phone        text,
    credit_limit numeric(38,6)             -- not synced: the ERP's own
);
CREATE TABLE public.items (
    item_no     text PRIMARY KEY,
    description text NOT NULL,
    unit_price  numeric(20,6) NOT NULL,
    status      char(1) NOT NULL DEFAULT 'A' CHECK (status IN ('A', 'I')),  -- active, inactive
    attributes  jsonb
);
CREATE TABLE public.sales_orders (
    order_no    text PRIMARY KEY,
    customer_no text NOT NULL REFERENCES public.customers,
    state       char(1) NOT NULL CHECK (state IN ('O', 'S', 'C', 'X')),  -- open, shipped, closed, cancelled
    total       numeric(20,6) NOT NULL,
    placed_at   timestamptz NOT NULL
);
CREATE TABLE public.sales_order_lines (
    line_no    text PRIMARY KEY,
    order_no   text NOT NULL REFERENCES public.sales_orders ON DELETE CASCADE,
    item_no    text NOT NULL REFERENCES public.items,
    quantity   numeric(20,6) NOT NULL,
    unit_price numeric(20,6) NOT NULL
);
