-- Only the head of each (webhook, contact) chain can be sent: the oldest open delivery. `ready`
-- marks the heads, so the claim walks heads only, however many later events of a contact wait
-- behind one in flight, and never the rows in flight. Inserts may set it themselves; triggers
-- keep it true on every path that opens or closes a delivery. (The claim still checks for an
-- open predecessor, so a wrong 1 cannot break the order; the store marks missing heads again
-- when it opens, so a wrong 0 cannot stall a chain.)
ALTER TABLE delivery ADD COLUMN ready INTEGER NOT NULL DEFAULT 0;
UPDATE delivery SET ready = 1 WHERE status IN (0, 1) AND NOT EXISTS (
    SELECT 1 FROM delivery p WHERE p.webhook_id = delivery.webhook_id AND p.order_key = delivery.order_key
    AND p.status IN (0, 1) AND p.delivery_id < delivery.delivery_id);

-- The claim reads everything it filters on from this index, without visiting the table.
CREATE INDEX delivery_ready ON delivery(queue_pos, delivery_id, webhook_id, next_attempt_at, order_key)
    WHERE status = 0 AND ready = 1;
-- Nothing walks the open rows by queue position any more: one index less to keep up.
DROP INDEX delivery_due;

CREATE TRIGGER delivery_head_on_insert AFTER INSERT ON delivery
WHEN NEW.status IN (0, 1) AND NEW.ready = 0 BEGIN
    UPDATE delivery SET ready = 1 WHERE delivery_id = NEW.delivery_id AND NOT EXISTS (
        SELECT 1 FROM delivery p WHERE p.webhook_id = NEW.webhook_id AND p.order_key = NEW.order_key
        AND p.status IN (0, 1) AND p.delivery_id < NEW.delivery_id);
END;

CREATE TRIGGER delivery_next_head AFTER UPDATE OF status ON delivery
WHEN OLD.status IN (0, 1) AND NEW.status NOT IN (0, 1) BEGIN
    UPDATE delivery SET ready = 1 WHERE delivery_id = (
        SELECT p.delivery_id FROM delivery p WHERE p.webhook_id = NEW.webhook_id AND p.order_key = NEW.order_key
        AND p.status IN (0, 1) ORDER BY p.delivery_id LIMIT 1);
END;
