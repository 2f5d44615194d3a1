-- Per-tenant limits: each column NULL means "the configured default" (LOCUS_RATE_* and
-- LOCUS_MAX_FIXES_PER_BATCH), so a change of a default reaches every tenant that did not
-- choose its own value. Written by platform admins through PUT /v1/tenants/{id}/limits
-- (audited), read by every ingest replica every LOCUS_LIMITS_REFRESH_MS (system scope).
CREATE TABLE tenant_limits (
    tenant_id               TEXT PRIMARY KEY REFERENCES tenants (id),
    fixes_per_sec           BIGINT CHECK (fixes_per_sec > 0),
    fixes_burst             BIGINT CHECK (fixes_burst > 0),
    device_fixes_per_sec    BIGINT CHECK (device_fixes_per_sec > 0),
    device_fixes_burst      BIGINT CHECK (device_fixes_burst > 0),
    max_fixes_per_batch     BIGINT CHECK (max_fixes_per_batch > 0),
    max_active_sessions     BIGINT CHECK (max_active_sessions > 0),
    requests_per_sec        BIGINT CHECK (requests_per_sec > 0),
    requests_burst          BIGINT CHECK (requests_burst > 0),
    device_requests_per_sec BIGINT CHECK (device_requests_per_sec > 0),
    device_requests_burst   BIGINT CHECK (device_requests_burst > 0),
    updated_at              TIMESTAMPTZ NOT NULL DEFAULT now()
);

ALTER TABLE tenant_limits ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenant_limits FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_rows ON tenant_limits TO locus_app
    USING (tenant_id = ANY (locus_tenants())) WITH CHECK (tenant_id = ANY (locus_tenants()));
CREATE POLICY system_rows ON tenant_limits TO locus_system USING (true) WITH CHECK (true);

GRANT SELECT, INSERT, UPDATE, DELETE ON tenant_limits TO locus_app, locus_system;
