-- The claim's choice (migration 0004) also skips every webhook of the tenants a node holds its
-- most of (p_skip_tenants), so that a tenant with slow or failing receivers cannot fill a
-- node's room. Same plan as before: the tenant is read from the webhook row already joined.
CREATE FUNCTION crmhooks_claim_ids(p_now BIGINT, p_window BIGINT, p_cap BIGINT, p_limit BIGINT,
                                   p_skip BIGINT[], p_skip_tenants BIGINT[])
RETURNS BIGINT[] LANGUAGE plpgsql
SET enable_sort = off SET enable_bitmapscan = off SET jit = off
AS $$
DECLARE ids BIGINT[];
BEGIN
    WITH pending AS (
        SELECT d.delivery_id, d.webhook_id, d.queue_pos FROM delivery d
        JOIN webhook w ON w.webhook_id = d.webhook_id
        WHERE d.status = 0 AND d.next_attempt_at <= p_now AND w.state = 1
          AND NOT EXISTS (SELECT 1 FROM delivery p WHERE p.webhook_id = d.webhook_id
                          AND p.order_key = d.order_key AND p.status IN (0, 1)
                          AND p.delivery_id < d.delivery_id)
          AND d.webhook_id <> ALL (p_skip)
          AND w.tenant_id <> ALL (p_skip_tenants)
          -- With webhooks or tenants skipped, only when an Active webhook is left: when none
          -- is, the walk would visit every pending row of theirs to find nothing.
          AND ((cardinality(p_skip) = 0 AND cardinality(p_skip_tenants) = 0)
               OR EXISTS (SELECT 1 FROM webhook a WHERE a.state = 1
                          AND a.webhook_id <> ALL (p_skip) AND a.tenant_id <> ALL (p_skip_tenants)))
        ORDER BY d.queue_pos, d.delivery_id LIMIT p_window FOR UPDATE OF d SKIP LOCKED),
    expired AS (
        SELECT d.delivery_id, d.webhook_id, d.queue_pos FROM delivery d
        JOIN webhook w ON w.webhook_id = d.webhook_id
        WHERE d.status = 1 AND d.lease_until < p_now AND w.state = 1
          AND d.webhook_id <> ALL (p_skip)
          AND w.tenant_id <> ALL (p_skip_tenants)
        ORDER BY d.lease_until LIMIT p_window FOR UPDATE OF d SKIP LOCKED),
    cand AS (SELECT * FROM pending UNION ALL SELECT * FROM expired),
    ranked AS (SELECT c.delivery_id, c.queue_pos,
               ROW_NUMBER() OVER (PARTITION BY c.webhook_id ORDER BY c.queue_pos, c.delivery_id) AS rn
               FROM cand c)
    SELECT array_agg(x.delivery_id) INTO ids FROM
        (SELECT r.delivery_id FROM ranked r WHERE r.rn <= p_cap
         ORDER BY r.queue_pos, r.delivery_id LIMIT p_limit) x;
    RETURN ids;
END$$;
