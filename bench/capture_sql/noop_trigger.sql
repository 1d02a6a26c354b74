-- Benchmark floor, not a working capture: it writes nothing. Applied after the install and
-- the install, then floor_triggers.sql points the three capture row triggers at this
-- function. Measures what calling any PL/pgSQL row trigger costs, before it does any work.
-- It returns the row variable, as the generated capture functions do: `RETURN NULL` would
-- be an expression, which PL/pgSQL prepares again in every new transaction.
CREATE FUNCTION public.bench_floor() RETURNS trigger
LANGUAGE plpgsql AS $bench$
BEGIN
    RETURN NEW;
END
$bench$;
