-- The claim's choice of deliveries as a function, so PostgreSQL plans its statement once per
-- connection (PL/pgSQL keeps its statements' plans) instead of at every claim: in the DO block
-- it replaces, the statement was parsed and planned each time (2.7 ms of planning against
-- 0.3 ms of execution when there was little to take). The planner settings are the function's
-- own (sorts and bitmap scans off, no JIT: see PLANNER_FOR_QUEUES in postgres.rs), so the
-- walk of delivery_pending in queue order stays the plan.
--
-- Pending deliveries due by p_now, heads of their chains (nothing earlier of the contact open
-- for that webhook), and expired leases, of Active webhooks not in p_skip; at most p_window of
-- each, at most p_cap per webhook, p_limit in all, in queue order. Rows are locked (SKIP
-- LOCKED); the caller holds the claim lock and leases them in its transaction.
CREATE FUNCTION crmhooks_claim_ids(p_now BIGINT, p_window BIGINT, p_cap BIGINT, p_limit BIGINT,
                                   p_skip BIGINT[])
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
          -- With webhooks skipped (at their cap), only when an Active one is left: when none
          -- is, the walk would visit every pending row of theirs to find nothing.
          AND (cardinality(p_skip) = 0 OR EXISTS (SELECT 1 FROM webhook a WHERE a.state = 1
                                                   AND a.webhook_id <> ALL (p_skip)))
        ORDER BY d.queue_pos, d.delivery_id LIMIT p_window FOR UPDATE OF d SKIP LOCKED),
    expired AS (
        SELECT d.delivery_id, d.webhook_id, d.queue_pos FROM delivery d
        JOIN webhook w ON w.webhook_id = d.webhook_id
        WHERE d.status = 1 AND d.lease_until < p_now AND w.state = 1
          AND d.webhook_id <> ALL (p_skip)
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
