-- The claim walks only pending rows (in-flight ones used to sit at the front of every walk),
-- and reads everything it filters on from the index, without visiting the table.
CREATE INDEX delivery_pending ON delivery(queue_pos, delivery_id, webhook_id, next_attempt_at, order_key) WHERE status = 0;
-- Nothing walks the open rows by queue position any more; one index less to keep up on every
-- insert and status change.
DROP INDEX delivery_due;
