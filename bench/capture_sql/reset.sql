DELETE FROM public.items WHERE id > 100000;
