-- crmhooks schema for SQLite. Dates are BIGINT ticks (100 ns since the Unix epoch), so the
-- same values and comparisons work on PostgreSQL.

CREATE TABLE tenant (
    tenant_id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE
);

CREATE TABLE api_key (
    key_hash TEXT PRIMARY KEY,
    tenant_id INTEGER NOT NULL REFERENCES tenant(tenant_id),
    associate_id INTEGER NOT NULL,
    label TEXT,
    created INTEGER NOT NULL
);

CREATE TABLE contact (
    "tenant_id" INTEGER NOT NULL REFERENCES tenant(tenant_id),
    "contact_id" INTEGER PRIMARY KEY AUTOINCREMENT,
    "activeErpLinks" INTEGER,
    "activeInterests" INTEGER,
    "associate_id" INTEGER,
    "business_idx" INTEGER NOT NULL,
    "category_idx" INTEGER NOT NULL,
    "country_id" INTEGER NOT NULL,
    "dbi_agent_id" INTEGER,
    "dbi_key" TEXT,
    "dbi_last_modified" INTEGER,
    "dbi_last_syncronized" INTEGER,
    "deleted" INTEGER,
    "DeletedDate" INTEGER,
    "department" TEXT,
    "group_id" INTEGER,
    "kananame" TEXT,
    "mother_id" INTEGER,
    "name" TEXT NOT NULL,
    "nomailing" INTEGER,
    "number1" TEXT,
    "number2" TEXT,
    "orgNr" TEXT,
    "registered_associate_id" INTEGER NOT NULL,
    "registered" INTEGER NOT NULL,
    "soundEx" TEXT,
    "source" INTEGER,
    "supportAssociateId" INTEGER,
    "supportLanguageId" INTEGER,
    "supportPersonId" INTEGER,
    "text_id" INTEGER,
    "ticketPriorityId" INTEGER,
    "tzLocationId" INTEGER,
    "updated_associate_id" INTEGER NOT NULL,
    "updated" INTEGER NOT NULL,
    "updatedCount" INTEGER NOT NULL,
    "userdef_id" INTEGER,
    "userdef2_id" INTEGER,
    "xstop" INTEGER
);
CREATE INDEX contact_tenant ON contact(tenant_id, contact_id);
CREATE INDEX contact_recycle ON contact("DeletedDate") WHERE "DeletedDate" IS NOT NULL;

CREATE TABLE webhook (
    webhook_id INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id INTEGER NOT NULL REFERENCES tenant(tenant_id),
    name TEXT NOT NULL,
    events TEXT NOT NULL,
    target_url TEXT NOT NULL,
    secret TEXT,
    state INTEGER NOT NULL,
    type TEXT NOT NULL,
    headers TEXT,
    properties TEXT,
    registered INTEGER NOT NULL,
    registered_associate_id INTEGER NOT NULL,
    updated INTEGER NOT NULL,
    updated_associate_id INTEGER NOT NULL,
    errors_email TEXT,
    "updatedCount" INTEGER NOT NULL DEFAULT 0,
    retry_policy TEXT,
    success_status TEXT
);
CREATE INDEX webhook_tenant ON webhook(tenant_id, webhook_id);

-- One row per (event name, webhook): the fan-out lookup at commit time is one index range.
CREATE TABLE webhook_event (
    event TEXT NOT NULL,
    webhook_id INTEGER NOT NULL REFERENCES webhook(webhook_id) ON DELETE CASCADE,
    PRIMARY KEY (event, webhook_id)
);

CREATE TABLE webhook_usage (
    webhook_usage_id INTEGER PRIMARY KEY REFERENCES webhook(webhook_id) ON DELETE CASCADE,
    total_calls INTEGER NOT NULL DEFAULT 0,
    total_errors INTEGER NOT NULL DEFAULT 0,
    consecutive_errors INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    registered INTEGER NOT NULL,
    registered_associate_id INTEGER NOT NULL DEFAULT 0,
    updated INTEGER NOT NULL,
    updated_associate_id INTEGER NOT NULL DEFAULT 0,
    "updatedCount" INTEGER NOT NULL DEFAULT 0
);

-- The event log: every event, kept for event_retention_days, replayable.
CREATE TABLE event (
    event_seq INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id INTEGER NOT NULL,
    event TEXT NOT NULL,
    entity TEXT NOT NULL,
    primary_key INTEGER NOT NULL,
    changes TEXT NOT NULL,
    "values" TEXT,
    field_values TEXT,
    changed_by INTEGER NOT NULL,
    occurred INTEGER NOT NULL
);
CREATE INDEX event_tenant_time ON event(tenant_id, occurred);

-- The outbox: one row per (event, subscribed webhook). status: 0 pending, 1 in flight,
-- 2 delivered, 3 failed for good (410 Gone, webhook deleted), 4 cancelled.
CREATE TABLE delivery (
    delivery_id INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id INTEGER NOT NULL,
    webhook_id INTEGER NOT NULL,
    event_seq INTEGER NOT NULL,
    order_key TEXT NOT NULL,
    event_id TEXT NOT NULL,
    status INTEGER NOT NULL DEFAULT 0,
    attempt_in_cycle INTEGER NOT NULL DEFAULT 0,
    cycles INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    queue_pos INTEGER NOT NULL,
    next_attempt_at INTEGER NOT NULL,
    lease_until INTEGER,
    lease_owner TEXT,
    created INTEGER NOT NULL,
    completed INTEGER,
    last_status INTEGER,
    last_error TEXT,
    replay_of INTEGER
);
CREATE INDEX delivery_due ON delivery(queue_pos, delivery_id) WHERE status IN (0, 1);
CREATE INDEX delivery_order ON delivery(webhook_id, order_key, delivery_id) WHERE status IN (0, 1);
CREATE INDEX delivery_webhook ON delivery(webhook_id, delivery_id);
CREATE INDEX delivery_event ON delivery(event_seq);

CREATE TABLE attempt (
    attempt_id INTEGER PRIMARY KEY AUTOINCREMENT,
    delivery_id INTEGER NOT NULL REFERENCES delivery(delivery_id) ON DELETE CASCADE,
    event_id TEXT NOT NULL,
    retry INTEGER NOT NULL,
    attempted_at INTEGER NOT NULL,
    duration_us INTEGER NOT NULL,
    status_code INTEGER,
    error TEXT,
    response_excerpt TEXT
);
CREATE INDEX attempt_delivery ON attempt(delivery_id, attempt_id);
