-- Reference design: statement-level triggers with transition tables, one per kind of
-- change, each writing every row of the statement with one INSERT ... SELECT (updates
-- pair old and new rows by key, and skip rows that did not change).
CREATE FUNCTION public.ref_statement_rows() RETURNS trigger
LANGUAGE plpgsql AS $ref$
BEGIN
    INSERT INTO public.ref_outbox (table_name, op, new_row, old_row)
    SELECT 'public.items', left(TG_OP, 1),
           CASE WHEN TG_OP = 'INSERT' THEN to_jsonb(r) END,
           CASE WHEN TG_OP = 'DELETE' THEN to_jsonb(r) END
    FROM changed_rows AS r;
    RETURN NULL;
END
$ref$;
CREATE FUNCTION public.ref_statement_upd() RETURNS trigger
LANGUAGE plpgsql AS $ref$
BEGIN
    INSERT INTO public.ref_outbox (table_name, op, new_row, old_row)
    SELECT 'public.items', 'U', to_jsonb(n), to_jsonb(o)
    FROM new_rows AS n JOIN old_rows AS o ON o.id = n.id
    WHERE ROW(n.*) IS DISTINCT FROM ROW(o.*);
    RETURN NULL;
END
$ref$;
CREATE TRIGGER ref_statement_ins AFTER INSERT ON public.items
    REFERENCING NEW TABLE AS changed_rows
    FOR EACH STATEMENT EXECUTE FUNCTION public.ref_statement_rows();
CREATE TRIGGER ref_statement_upd AFTER UPDATE ON public.items
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION public.ref_statement_upd();
CREATE TRIGGER ref_statement_del AFTER DELETE ON public.items
    REFERENCING OLD TABLE AS changed_rows
    FOR EACH STATEMENT EXECUTE FUNCTION public.ref_statement_rows();
