-- Written for the benchmark only: the same outbox rows as the generated capture function
-- for a whole-row table, from one statement-level trigger reading transition tables.
CREATE FUNCTION public.bench_capture_statement() RETURNS trigger
LANGUAGE plpgsql AS $bench$
BEGIN
    INSERT INTO cdc_bridge.outbox (table_name, op, key, fields, changed, origin)
    SELECT 'public.items', 'U', jsonb_build_object('id', n.id), to_jsonb(n),
           ARRAY(SELECT e.key FROM jsonb_each(to_jsonb(n)) AS e
                 WHERE e.value IS DISTINCT FROM to_jsonb(o) -> e.key ORDER BY e.key),
           coalesce(nullif(current_setting('cdc_bridge.origin', true), ''), 'bench')
    FROM new_rows AS n JOIN old_rows AS o ON o.id = n.id
    WHERE n IS DISTINCT FROM o;
    PERFORM pg_notify('cdc_bridge', 'public.items');
    RETURN NULL;
END
$bench$;
CREATE TRIGGER bench_capture_statement AFTER UPDATE ON public.items
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION public.bench_capture_statement();
