-- Benchmark floor for the update workload only, not a working capture: it writes nothing.
-- Applied after the install: the capture insert and delete triggers are
-- dropped and the update trigger calls PostgreSQL's built-in C function
-- suppress_redundant_updates_trigger() instead (it returns NEW when the row changed).
-- Measures what calling a C-language row trigger costs, next to the PL/pgSQL floors.
DROP TRIGGER cdc_bridge_capture_ins ON public.items;
DROP TRIGGER cdc_bridge_capture_del ON public.items;
DROP TRIGGER cdc_bridge_capture_upd ON public.items;
CREATE TRIGGER cdc_bridge_capture_upd BEFORE UPDATE ON public.items
    FOR EACH ROW
    EXECUTE FUNCTION suppress_redundant_updates_trigger();
