-- Keys as operators manage them: an id to name a key by (list, revoke), a name, a scope
-- (`tenant`, or `admin` for key management and /metrics), when it was last used, when it
-- expires, when it was revoked. Only the SHA-256 of a key is stored. Keys stored before keep
-- working; the bootstrap key (label "bootstrap") gets the admin scope.
CREATE TABLE api_key_new (
    key_id INTEGER PRIMARY KEY AUTOINCREMENT,
    key_hash TEXT NOT NULL UNIQUE,
    tenant_id INTEGER NOT NULL REFERENCES tenant(tenant_id),
    associate_id INTEGER NOT NULL,
    name TEXT NOT NULL DEFAULT '',
    scope TEXT NOT NULL DEFAULT 'tenant',
    created INTEGER NOT NULL,
    last_used INTEGER,
    expires INTEGER,
    revoked INTEGER
);
INSERT INTO api_key_new (key_hash, tenant_id, associate_id, name, scope, created)
SELECT key_hash, tenant_id, associate_id, COALESCE(label, ''),
       CASE WHEN label = 'bootstrap' THEN 'admin' ELSE 'tenant' END, created
FROM api_key ORDER BY created, key_hash;
DROP TABLE api_key;
ALTER TABLE api_key_new RENAME TO api_key;
CREATE INDEX api_key_tenant ON api_key(tenant_id, key_id);

-- Who managed what: one row per management call (webhook created, changed, started, stopped,
-- deleted, replayed; key created, revoked), read per tenant newest first, pruned with the
-- event log (`event_retention_days`). `summary` says what changed, never a secret or a header
-- value.
CREATE TABLE audit (
    audit_id INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id INTEGER NOT NULL,
    key_id INTEGER,
    associate_id INTEGER NOT NULL,
    at INTEGER NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    summary TEXT NOT NULL
);
CREATE INDEX audit_tenant ON audit(tenant_id, audit_id);
CREATE INDEX audit_at ON audit(at);
