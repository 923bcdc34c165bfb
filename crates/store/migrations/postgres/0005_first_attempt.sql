-- The columns SQLite keeps a delivery's first successful attempt in (its migration 0005), so
-- that both backends read the delivery log with the same statement.
ALTER TABLE delivery
    ADD COLUMN first_attempt_id BIGINT,
    ADD COLUMN first_attempted_at BIGINT,
    ADD COLUMN first_duration_us BIGINT,
    ADD COLUMN first_response_excerpt TEXT;
