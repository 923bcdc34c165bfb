-- The claim walks pending rows only (rows in flight used to sit at the front of every walk) and
-- finds what it filters on in the index; expired leases are found through delivery_lease.
CREATE INDEX delivery_pending ON delivery(queue_pos, delivery_id) INCLUDE (webhook_id, next_attempt_at, order_key)
    WHERE status = 0;
DROP INDEX delivery_due;
