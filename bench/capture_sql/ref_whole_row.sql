-- Reference design: the textbook audit trigger. One PL/pgSQL row trigger for every kind
-- of change writes to_jsonb(NEW) and to_jsonb(OLD) (NULL where there is none). It skips
-- no-op updates with the same WHEN clause as cdc-bridge's install did.
CREATE FUNCTION public.ref_whole_row() RETURNS trigger
LANGUAGE plpgsql AS $ref$
BEGIN
    INSERT INTO public.ref_outbox (table_name, op, new_row, old_row)
    VALUES (TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME, left(TG_OP, 1), to_jsonb(NEW), to_jsonb(OLD));
    RETURN NULL;
END
$ref$;
CREATE TRIGGER ref_whole_row_ins_del AFTER INSERT OR DELETE ON public.items
    FOR EACH ROW EXECUTE FUNCTION public.ref_whole_row();
CREATE TRIGGER ref_whole_row_upd AFTER UPDATE ON public.items
    FOR EACH ROW WHEN (OLD.* IS DISTINCT FROM NEW.*) EXECUTE FUNCTION public.ref_whole_row();
