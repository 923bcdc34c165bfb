-- Replays as jobs: a replay runs in bounded batches (one short transaction each), so that a
-- large one never holds locks for long, and its progress can be read while it runs. `cursor`
-- is the last event of the window handled; a job whose node died (`updated` old while it is
-- still running) is picked up by another node's maintenance.
CREATE TABLE replay (
    replay_id BIGSERIAL PRIMARY KEY,
    tenant_id BIGINT NOT NULL,
    webhook_id BIGINT NOT NULL,
    since BIGINT NOT NULL,
    until BIGINT,
    only_failed BIGINT NOT NULL,
    max_events BIGINT NOT NULL,
    cursor BIGINT NOT NULL DEFAULT 0,
    matched BIGINT NOT NULL DEFAULT 0,
    queued BIGINT NOT NULL DEFAULT 0,
    skipped BIGINT NOT NULL DEFAULT 0,
    status BIGINT NOT NULL DEFAULT 0,
    error TEXT,
    created BIGINT NOT NULL,
    updated BIGINT NOT NULL,
    finished BIGINT
);
CREATE INDEX replay_running ON replay(updated) WHERE status = 0;
CREATE INDEX replay_webhook ON replay(tenant_id, webhook_id, replay_id);
