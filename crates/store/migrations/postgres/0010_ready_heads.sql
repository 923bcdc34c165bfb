-- Only the head of each (webhook, contact) chain can be sent: the oldest open delivery. `head`
-- marks the heads, as `ready` does on SQLite, so that the claim walks heads only, however many
-- later events of a contact wait behind one in flight (a claim used to visit thousands of rows
-- that were not heads when the queue was long). The statements that open deliveries set it
-- (the change's fan-out, replay, resend), the record that closes a head sets it on the next
-- delivery of the chain, and after their commits both look for a head the other made while
-- they ran. The claim still checks for an open predecessor, so a wrong true cannot break the
-- order; a missing mark (a node that died between its commit and that look) is set again by
-- `crmhooks_mark_heads`, which each node runs about once a second, a slice of the open rows
-- at a time.
ALTER TABLE delivery ADD COLUMN head BOOLEAN NOT NULL DEFAULT false;
UPDATE delivery d SET head = true WHERE d.status IN (0, 1) AND NOT EXISTS (
    SELECT 1 FROM delivery p WHERE p.webhook_id = d.webhook_id AND p.order_key = d.order_key
    AND p.status IN (0, 1) AND p.delivery_id < d.delivery_id);

-- The claim reads everything it filters on from this index, without visiting the table.
CREATE INDEX delivery_ready ON delivery(queue_pos, delivery_id) INCLUDE (webhook_id, next_attempt_at, order_key)
    WHERE status = 0 AND head;
-- Nothing walks all pending rows by queue position any more: one index less to keep up.
DROP INDEX delivery_pending;
-- "When is the next delivery due" asks about heads only: a delivery waiting behind an open one
-- of its contact cannot go before that one closes, whatever its time.
DROP INDEX delivery_next;
CREATE INDEX delivery_next ON delivery(next_attempt_at) WHERE status = 0 AND head;

-- Marks the heads that lost their mark, a slice at a time: walks at most p_rows open rows of
-- the chains after (p_webhook, p_key) along delivery_order, and marks the first of each chain
-- when it is pending and unmarked. Returns how many it marked and the last chain it walked
-- (NULL when it reached the end: the next walk starts again from the first chain). Rows locked
-- by others are skipped (their holder is leasing or closing them), so it never waits and
-- never deadlocks with a record. The first open row of a chain stays its first: rows are
-- never reopened, and new ones come later.
CREATE FUNCTION crmhooks_mark_heads(p_webhook BIGINT, p_key TEXT, p_rows BIGINT)
RETURNS TABLE (marked BIGINT, last_webhook BIGINT, last_key TEXT) LANGUAGE plpgsql
SET enable_sort = off SET enable_bitmapscan = off SET jit = off
SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off
AS $$
DECLARE
    r RECORD;
    prev_w BIGINT;
    prev_k TEXT;
    walked BIGINT := 0;
    ids BIGINT[] := '{}';
BEGIN
    FOR r IN SELECT d.delivery_id, d.webhook_id, d.order_key, d.status, d.head FROM delivery d
             WHERE d.status IN (0, 1) AND (d.webhook_id, d.order_key) > (p_webhook, p_key)
             ORDER BY d.webhook_id, d.order_key, d.delivery_id LIMIT p_rows LOOP
        IF prev_w IS DISTINCT FROM r.webhook_id OR prev_k IS DISTINCT FROM r.order_key THEN
            IF r.status = 0 AND NOT r.head THEN
                ids := ids || r.delivery_id;
            END IF;
            prev_w := r.webhook_id;
            prev_k := r.order_key;
        END IF;
        walked := walked + 1;
    END LOOP;
    marked := 0;
    IF cardinality(ids) > 0 THEN
        UPDATE delivery d SET head = true WHERE d.delivery_id IN (
            SELECT x.delivery_id FROM delivery x WHERE x.delivery_id = ANY (ids)
            AND x.status = 0 AND NOT x.head FOR UPDATE SKIP LOCKED);
        GET DIAGNOSTICS marked = ROW_COUNT;
    END IF;
    IF walked >= p_rows THEN
        last_webhook := prev_w;
        last_key := prev_k;
    END IF;
    RETURN NEXT;
END$$;

-- The claim's choice (migrations 0004, 0006, 0008) walks the heads: pending deliveries marked
-- `head`, in queue order, along delivery_ready; the check for an open predecessor stays.
CREATE OR REPLACE FUNCTION crmhooks_claim_ids(p_now BIGINT, p_window BIGINT, p_cap BIGINT, p_limit BIGINT,
                                              p_skip BIGINT[], p_skip_tenants BIGINT[])
RETURNS BIGINT[] LANGUAGE plpgsql
SET enable_sort = off SET enable_bitmapscan = off SET jit = off
SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off
AS $$
DECLARE ids BIGINT[];
BEGIN
    WITH pending AS (
        SELECT d.delivery_id, d.webhook_id, d.queue_pos FROM delivery d
        JOIN webhook w ON w.webhook_id = d.webhook_id
        WHERE d.status = 0 AND d.head AND d.next_attempt_at <= p_now AND w.state = 1
          AND NOT EXISTS (SELECT 1 FROM delivery p WHERE p.webhook_id = d.webhook_id
                          AND p.order_key = d.order_key AND p.status IN (0, 1)
                          AND p.delivery_id < d.delivery_id)
          AND d.webhook_id <> ALL (p_skip)
          AND w.tenant_id <> ALL (p_skip_tenants)
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
