-- Benchmark floor, not a working capture: every change writes the same constant outbox row.
-- Applied after the install, then floor_triggers.sql points the three
-- capture row triggers at this function. Measures PL/pgSQL plus one outbox row per change
-- with no data work at all: the floor for any design that writes one outbox row per change
-- from a PL/pgSQL row trigger.
-- It returns the row variable, as the generated capture functions do: `RETURN NULL` would
-- be an expression, which PL/pgSQL prepares again in every new transaction.
CREATE FUNCTION public.bench_floor() RETURNS trigger
LANGUAGE plpgsql AS $bench$
BEGIN
    INSERT INTO cdc_bridge.outbox (table_name, op, key, origin)
    VALUES ('public.items', 'U', '{}', 'bench');
    RETURN NEW;
END
$bench$;
