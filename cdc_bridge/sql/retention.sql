-- Retention: the bridge's own bookkeeping, pruned by age in bounded transactions
-- (used by `cdc-bridge cleanup` and, every relay.retention_interval_s, by the relay).

-- name: retention_prune_batch
-- One bounded transaction of retention: at most %(limit)s rows.
DELETE FROM {target} WHERE ctid = ANY(ARRAY(
    SELECT ctid FROM {target} WHERE {column} < now() - %(age)s::interval AND {condition}
    LIMIT %(limit)s));

-- name: retention_prune_count
SELECT count(*) FROM {target} WHERE {column} < now() - %(age)s::interval AND {condition};
