-- Standard Webhooks: `whsec_` secrets, a previous secret during a rollover, endpoints
-- disabled by a 410 Gone, and the endpoint health the stream bridge reports.

-- Secrets of the old Locus format (32 to 512 printable ASCII characters, whose bytes were
-- the HMAC key) are rewritten as `whsec_<base64 of those bytes>`: the key a partner
-- verifies with stays the same bytes, only its spelling changes. (PostgreSQL's base64
-- breaks lines every 76 characters; a secret is one line.)
UPDATE sinks
   SET secret = 'whsec_' || replace(encode(convert_to(secret, 'UTF8'), 'base64'), E'\n', '')
 WHERE secret NOT LIKE 'whsec\_%';

-- `previous_secret` signs too (a second `v1,` signature) until its expiry: set by
-- POST /v1/sink/rotate-secret, cleared by PUT /v1/sink.
--
-- `disabled_by_410_at`: the webhook answered 410 Gone. The bridge keeps the sink in its
-- table but sends nothing; the tenant's records wait, in order (never dead-lettered,
-- never skipped), until a PUT /v1/sink sets the sink again and clears it. Unlike
-- `disabled_at`, which takes the sink away (its records then take the `no_sink` path).
ALTER TABLE sinks
    ADD COLUMN previous_secret TEXT,
    ADD COLUMN previous_secret_expires_at TIMESTAMPTZ,
    ADD COLUMN disabled_by_410_at TIMESTAMPTZ,
    ADD COLUMN disabled_by_410_reason TEXT,
    ADD CONSTRAINT sinks_previous_secret_expires
        CHECK ((previous_secret IS NULL) = (previous_secret_expires_at IS NULL));

-- How a tenant's endpoint is doing, as the bridge last saw it. Written by the bridge (as
-- locus_system) when something changed, at most once per second per sink, never per
-- attempt; read by GET /v1/sink/health in the tenant's scope. No foreign key: a static
-- sink (LOCUS_BRIDGE_SINKS) reports too, and its tenant need not have a row.
CREATE TABLE sink_health (
    tenant_id            TEXT PRIMARY KEY,
    last_success_at      TIMESTAMPTZ,
    last_failure_at      TIMESTAMPTZ,
    -- The HTTP status of the last failure; NULL for a timeout or a connection error.
    last_failure_status  INTEGER,
    last_failure_reason  TEXT,
    -- Failed attempts since the last success.
    failure_streak       INTEGER NOT NULL DEFAULT 0,
    -- Whether the tenant's delivery is paused (a failing or disabled endpoint).
    paused               BOOLEAN NOT NULL DEFAULT false,
    circuit              TEXT NOT NULL DEFAULT 'closed'
                         CHECK (circuit IN ('closed', 'open', 'half_open')),
    reported_at          TIMESTAMPTZ NOT NULL DEFAULT now()
);

ALTER TABLE sink_health ENABLE ROW LEVEL SECURITY;
ALTER TABLE sink_health FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_rows ON sink_health TO locus_app
    USING (tenant_id = ANY (locus_tenants())) WITH CHECK (tenant_id = ANY (locus_tenants()));
CREATE POLICY system_rows ON sink_health TO locus_system USING (true) WITH CHECK (true);
GRANT SELECT, INSERT, UPDATE, DELETE ON sink_health TO locus_app, locus_system;
