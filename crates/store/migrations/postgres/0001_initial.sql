-- crmhooks schema for PostgreSQL: the same tables, columns and indexes as the SQLite schema.
-- Dates are BIGINT ticks (100 ns since the Unix epoch); every integer is a BIGINT so both
-- backends read the same i64 values.

CREATE TABLE tenant (
    tenant_id BIGSERIAL PRIMARY KEY,
    name TEXT NOT NULL UNIQUE
);

CREATE TABLE api_key (
    key_hash TEXT PRIMARY KEY,
    tenant_id BIGINT NOT NULL REFERENCES tenant(tenant_id),
    associate_id BIGINT NOT NULL,
    label TEXT,
    created BIGINT NOT NULL
);

CREATE TABLE contact (
    "tenant_id" BIGINT NOT NULL REFERENCES tenant(tenant_id),
    "contact_id" BIGSERIAL PRIMARY KEY,
    "activeErpLinks" BIGINT,
    "activeInterests" BIGINT,
    "associate_id" BIGINT,
    "business_idx" BIGINT NOT NULL,
    "category_idx" BIGINT NOT NULL,
    "country_id" BIGINT NOT NULL,
    "dbi_agent_id" BIGINT,
    "dbi_key" TEXT,
    "dbi_last_modified" BIGINT,
    "dbi_last_syncronized" BIGINT,
    "deleted" BIGINT,
    "DeletedDate" BIGINT,
    "department" TEXT,
    "group_id" BIGINT,
    "kananame" TEXT,
    "mother_id" BIGINT,
    "name" TEXT NOT NULL,
    "nomailing" BIGINT,
    "number1" TEXT,
    "number2" TEXT,
    "orgNr" TEXT,
    "registered_associate_id" BIGINT NOT NULL,
    "registered" BIGINT NOT NULL,
    "soundEx" TEXT,
    "source" BIGINT,
    "supportAssociateId" BIGINT,
    "supportLanguageId" BIGINT,
    "supportPersonId" BIGINT,
    "text_id" BIGINT,
    "ticketPriorityId" BIGINT,
    "tzLocationId" BIGINT,
    "updated_associate_id" BIGINT NOT NULL,
    "updated" BIGINT NOT NULL,
    "updatedCount" BIGINT NOT NULL,
    "userdef_id" BIGINT,
    "userdef2_id" BIGINT,
    "xstop" BIGINT
);
CREATE INDEX contact_tenant ON contact(tenant_id, contact_id);
CREATE INDEX contact_recycle ON contact("DeletedDate") WHERE "DeletedDate" IS NOT NULL;

CREATE TABLE webhook (
    webhook_id BIGSERIAL PRIMARY KEY,
    tenant_id BIGINT NOT NULL REFERENCES tenant(tenant_id),
    name TEXT NOT NULL,
    events TEXT NOT NULL,
    target_url TEXT NOT NULL,
    secret TEXT,
    state BIGINT NOT NULL,
    type TEXT NOT NULL,
    headers TEXT,
    properties TEXT,
    registered BIGINT NOT NULL,
    registered_associate_id BIGINT NOT NULL,
    updated BIGINT NOT NULL,
    updated_associate_id BIGINT NOT NULL,
    errors_email TEXT,
    "updatedCount" BIGINT NOT NULL DEFAULT 0,
    retry_policy TEXT,
    success_status TEXT
);
CREATE INDEX webhook_tenant ON webhook(tenant_id, webhook_id);

-- One row per (event name, webhook): the fan-out lookup at commit time is one index range.
CREATE TABLE webhook_event (
    event TEXT NOT NULL,
    webhook_id BIGINT NOT NULL REFERENCES webhook(webhook_id) ON DELETE CASCADE,
    PRIMARY KEY (event, webhook_id)
);

CREATE TABLE webhook_usage (
    webhook_usage_id BIGINT PRIMARY KEY REFERENCES webhook(webhook_id) ON DELETE CASCADE,
    total_calls BIGINT NOT NULL DEFAULT 0,
    total_errors BIGINT NOT NULL DEFAULT 0,
    consecutive_errors BIGINT NOT NULL DEFAULT 0,
    last_error TEXT,
    registered BIGINT NOT NULL,
    registered_associate_id BIGINT NOT NULL DEFAULT 0,
    updated BIGINT NOT NULL,
    updated_associate_id BIGINT NOT NULL DEFAULT 0,
    "updatedCount" BIGINT NOT NULL DEFAULT 0
);

-- The event log: every event, kept for event_retention_days, replayable.
CREATE TABLE event (
    event_seq BIGSERIAL PRIMARY KEY,
    tenant_id BIGINT NOT NULL,
    event TEXT NOT NULL,
    entity TEXT NOT NULL,
    primary_key BIGINT NOT NULL,
    changes TEXT NOT NULL,
    "values" TEXT,
    field_values TEXT,
    changed_by BIGINT NOT NULL,
    occurred BIGINT NOT NULL
);
CREATE INDEX event_tenant_time ON event(tenant_id, occurred);

-- The outbox: one row per (event, subscribed webhook). status: 0 pending, 1 in flight,
-- 2 delivered, 3 failed for good (410 Gone, webhook deleted), 4 cancelled.
CREATE TABLE delivery (
    delivery_id BIGSERIAL PRIMARY KEY,
    tenant_id BIGINT NOT NULL,
    webhook_id BIGINT NOT NULL,
    event_seq BIGINT NOT NULL,
    order_key TEXT NOT NULL,
    event_id TEXT NOT NULL,
    status BIGINT NOT NULL DEFAULT 0,
    attempt_in_cycle BIGINT NOT NULL DEFAULT 0,
    cycles BIGINT NOT NULL DEFAULT 0,
    attempts BIGINT NOT NULL DEFAULT 0,
    queue_pos BIGINT NOT NULL,
    next_attempt_at BIGINT NOT NULL,
    lease_until BIGINT,
    lease_owner TEXT,
    created BIGINT NOT NULL,
    completed BIGINT,
    last_status BIGINT,
    last_error TEXT,
    replay_of BIGINT
);
CREATE INDEX delivery_due ON delivery(queue_pos, delivery_id) WHERE status IN (0, 1);
CREATE INDEX delivery_order ON delivery(webhook_id, order_key, delivery_id) WHERE status IN (0, 1);
CREATE INDEX delivery_webhook ON delivery(webhook_id, delivery_id);
CREATE INDEX delivery_event ON delivery(event_seq);

CREATE TABLE attempt (
    attempt_id BIGSERIAL PRIMARY KEY,
    delivery_id BIGINT NOT NULL REFERENCES delivery(delivery_id) ON DELETE CASCADE,
    event_id TEXT NOT NULL,
    retry BIGINT NOT NULL,
    attempted_at BIGINT NOT NULL,
    duration_us BIGINT NOT NULL,
    status_code BIGINT,
    error TEXT,
    response_excerpt TEXT
);
CREATE INDEX attempt_delivery ON attempt(delivery_id, attempt_id);
