-- Reference design: PgQ's C trigger (the extension, from `postgresql-15-pgq3` on Debian).
-- logutriga writes each change to the queue's event table as urlencoded text.
CREATE EXTENSION IF NOT EXISTS pgq;
SELECT pgq.create_queue('bench');
CREATE TRIGGER ref_pgq AFTER INSERT OR UPDATE OR DELETE ON public.items
    FOR EACH ROW EXECUTE FUNCTION pgq.logutriga('bench');
