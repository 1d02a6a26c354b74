UPDATE public.items SET qty = qty + 1 WHERE id <= 100000;
