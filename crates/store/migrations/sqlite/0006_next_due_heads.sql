-- "When is the next delivery due" only asks about heads of chains (`ready` = 1): a delivery
-- waiting behind an open one of its contact cannot be sent before that one closes, whatever
-- its time. Leaving the waiting ones out of the index saves two index writes for each of them
-- (in when it is written, out when it becomes the head and is leased), and keeps a long queue
-- behind a failing delivery from making every wake-up look due.
DROP INDEX delivery_next;
CREATE INDEX delivery_next ON delivery(next_attempt_at) WHERE status = 0 AND ready = 1;
