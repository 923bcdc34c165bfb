-- Replays as jobs: a replay runs in bounded batches (one short transaction each), so that a
-- large one never holds the writer for long, and its progress can be read while it runs.
-- `cursor` is the last event of the window handled; a job whose node died (`updated` old while
-- it is still running) is picked up by another node's maintenance.
CREATE TABLE replay (
    replay_id INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id INTEGER NOT NULL,
    webhook_id INTEGER NOT NULL,
    since INTEGER NOT NULL,
    until INTEGER,
    only_failed INTEGER NOT NULL,
    max_events INTEGER NOT NULL,
    cursor INTEGER NOT NULL DEFAULT 0,
    matched INTEGER NOT NULL DEFAULT 0,
    queued INTEGER NOT NULL DEFAULT 0,
    skipped INTEGER NOT NULL DEFAULT 0,
    status INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    created INTEGER NOT NULL,
    updated INTEGER NOT NULL,
    finished INTEGER
);
CREATE INDEX replay_running ON replay(updated) WHERE status = 0;
CREATE INDEX replay_webhook ON replay(tenant_id, webhook_id, replay_id);
