-- The delivery log's search: by contact (the chain's key, every status; the partial
-- delivery_order index holds only open deliveries) and by EventId (the current cycle's, or
-- an earlier cycle's kept in its attempts).
CREATE INDEX delivery_webhook_key ON delivery(webhook_id, order_key, delivery_id);
CREATE INDEX delivery_event_id ON delivery(event_id);
CREATE INDEX attempt_event_id ON attempt(event_id);
