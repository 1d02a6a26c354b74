-- The ERP's own tables for the demo (an application would already have these).
CREATE TABLE customers (id bigint PRIMARY KEY, name text NOT NULL, email text, tier text);
CREATE TABLE orders (id bigint PRIMARY KEY, customer_id bigint, total numeric(12, 2), status text NOT NULL DEFAULT 'new');
CREATE TABLE products (sku text PRIMARY KEY, name text NOT NULL, price numeric(12, 2), description text);
CREATE TABLE accounts (id bigint PRIMARY KEY, company_name text, credit_limit numeric(12, 2));
