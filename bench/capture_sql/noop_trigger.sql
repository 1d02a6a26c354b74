-- Benchmark floor, not a working capture: it writes nothing. Applied after the install and
-- relay_busy.sql, then floor_triggers.sql points the three capture row triggers at this
-- function. Measures what calling any PL/pgSQL row trigger costs, before it does any work.
CREATE FUNCTION public.bench_floor() RETURNS trigger
LANGUAGE plpgsql AS $bench$
BEGIN
    RETURN NULL;
END
$bench$;
