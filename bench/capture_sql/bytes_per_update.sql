-- 20,000 single-row updates, each its own statement (so statement-level designs fire per
-- row too), in one transaction: storage per captured update, not speed.
DO $bytes$
BEGIN
    FOR i IN 1..20000 LOOP
        UPDATE public.items SET qty = qty + 1 WHERE id = i;
    END LOOP;
END
$bytes$;
