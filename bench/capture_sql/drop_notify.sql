-- Diagnostic variant only: the capture install without its NOTIFY trigger, to show
-- how much of the overhead is NOTIFY (which serializes the commits that issue it).
DROP TRIGGER cdc_bridge_notify ON public.items;
