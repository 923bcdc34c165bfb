-- Index-driven "when is the next delivery due" and "when does the next lease end".
CREATE INDEX delivery_next ON delivery(next_attempt_at) WHERE status = 0;
CREATE INDEX delivery_lease ON delivery(lease_until) WHERE status = 1;
