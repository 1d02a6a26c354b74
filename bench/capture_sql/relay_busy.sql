-- The full install, as writers see it while a relay is busy shipping: the relay has said
-- it is not listening, so the triggers skip the NOTIFY (which serializes commits).
SELECT setval('cdc_bridge.relay_listening', 0);
