-- Retention: the bridge's own bookkeeping, pruned by age in bounded transactions
-- (used by `cdc-bridge cleanup` and, every relay.retention_interval_s, by the relay).

-- name: retention_prune_batch
-- One bounded transaction of retention: at most %(limit)s rows.
DELETE FROM {target} WHERE ctid = ANY(ARRAY(
    SELECT ctid FROM {target} WHERE {column} < now() - %(age)s::interval AND {condition}
    LIMIT %(limit)s));

-- name: retention_prune_count
SELECT count(*) FROM {target} WHERE {column} < now() - %(age)s::interval AND {condition};

-- name: retention_no_failed_change
-- Condition fragment: no change in `failed` names this batch (it explains the failure).
NOT EXISTS (SELECT FROM {failed} f WHERE f.batch_id = {batch})

-- name: retention_below_watermark
-- Condition fragment: the key's source transaction is below its sender's watermark, so
-- the watermark alone recognizes a resend of it (inbound_claim_keys).
{keys}.txid < (SELECT w.settled_below FROM {watermarks} w WHERE w.source = {keys}.source)
