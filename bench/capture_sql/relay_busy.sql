-- The full install, as writers see it while a relay is busy shipping: the relay has said
-- it is not listening, so the triggers skip the NOTIFY (which serializes commits).
UPDATE cdc_bridge.relay_wakeup SET listening = false;
