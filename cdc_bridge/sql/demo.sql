-- `cdc-bridge demo` (cdc_bridge/demo/story.py): each side's rows as the entity both sides
-- agree on, one `row(...)::text` per record keyed by the entity's key, so that the ERP's
-- and the shop's copies compare as text. The shop's generated ids are read back as entity
-- keys through the bridge's cross-reference ({schema}.entity_xref).

-- name: demo_erp_products
SELECT item_no, row(item_no, item_no, description, unit_price, round(unit_price * 1.19, 2),
                    status = 'A', attributes)::text
FROM public.items ORDER BY 1;

-- name: demo_shop_products
-- The net price is in the product's 1:1 side table.
SELECT x.entity_key ->> 'sku', row(x.entity_key ->> 'sku', p.sku_code, p.label, pp.net_price,
                                   p.gross_price, p.visible, p.specs)::text
FROM public.products p
JOIN public.product_prices pp ON pp.product_id = p.id
JOIN {schema}.entity_xref x ON x.entity = 'product' AND x.local_key = jsonb_build_object('id', p.id)
ORDER BY 1;

-- name: demo_erp_customers
SELECT customer_no, row(customer_no, name, email, phone)::text FROM public.customers ORDER BY 1;

-- name: demo_shop_customers
SELECT x.entity_key ->> 'number', row(x.entity_key ->> 'number', c.full_name,
                                      c.email_address, c.phone)::text
FROM public.customers c
JOIN {schema}.entity_xref x ON x.entity = 'customer' AND x.local_key = jsonb_build_object('id', c.id)
ORDER BY 1;

-- name: demo_erp_orders
-- Without the state: the ERP owns an order once it has arrived, and its later states stay
-- there (adopt).
SELECT order_no, row(order_no, customer_no, total, placed_at)::text
FROM public.sales_orders ORDER BY 1;

-- name: demo_shop_orders
SELECT xo.entity_key ->> 'number', row(xo.entity_key ->> 'number', xc.entity_key ->> 'number',
                                       o.total, o.created_at)::text
FROM public.orders o
JOIN {schema}.entity_xref xo ON xo.entity = 'order' AND xo.local_key = jsonb_build_object('id', o.id)
JOIN {schema}.entity_xref xc
  ON xc.entity = 'customer' AND xc.local_key = jsonb_build_object('id', o.customer_id)
ORDER BY 1;

-- name: demo_erp_order_lines
SELECT line_no, row(line_no, order_no, item_no, quantity, unit_price)::text
FROM public.sales_order_lines ORDER BY 1;

-- name: demo_shop_order_lines
-- The shop counts whole pieces (integer), the ERP quantities as numeric(20,6).
SELECT xl.entity_key ->> 'number', row(xl.entity_key ->> 'number', xo.entity_key ->> 'number',
                                       xp.entity_key ->> 'sku', l.quantity::numeric(20,6),
                                       l.unit_price)::text
FROM public.order_lines l
JOIN {schema}.entity_xref xl ON xl.entity = 'order_line' AND xl.local_key = jsonb_build_object('id', l.id)
JOIN {schema}.entity_xref xo ON xo.entity = 'order' AND xo.local_key = jsonb_build_object('id', l.order_id)
JOIN {schema}.entity_xref xp
  ON xp.entity = 'product' AND xp.local_key = jsonb_build_object('id', l.product_id)
ORDER BY 1;
