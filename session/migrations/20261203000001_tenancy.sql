-- Tenancy: the device registry and its credentials, partners and the tenants that granted
-- them, the bridge's webhook sinks, the audit log, and row-level security on every table.
--
-- The roles are created before the migrations by `locus_session::bootstrap` (they are
-- cluster-wide, migrations are per database):
--   locus_app     what the services connect as: not the owner, not a superuser, no
--                 BYPASSRLS, NOINHERIT. It sees the rows of the tenants named in the
--                 transaction's `locus.tenants` setting, and nothing when it is unset.
--   locus_system  granted to locus_app; background work that spans tenants (the expiry
--                 sweeper, progress counts, the outbox and audit relays, the bridge's sink
--                 table, credential exchange) runs `SET LOCAL ROLE locus_system` first, so
--                 every cross-tenant statement is one that asked for it.

ALTER TABLE tenants ADD COLUMN name TEXT, ADD COLUMN disabled_at TIMESTAMPTZ;
ALTER TABLE devices ADD COLUMN name TEXT, ADD COLUMN revoked_at TIMESTAMPTZ;

-- A device's credentials: only the SHA-256 of each secret is kept (the secrets are 256
-- random bits, so a slow hash adds nothing); the secret itself is shown once, at creation.
CREATE TABLE device_credentials (
    id           UUID PRIMARY KEY,
    tenant_id    TEXT NOT NULL,
    device_id    TEXT NOT NULL,
    secret_hash  BYTEA NOT NULL UNIQUE,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    revoked_at   TIMESTAMPTZ,
    FOREIGN KEY (tenant_id, device_id) REFERENCES devices (tenant_id, id)
);

CREATE TABLE partners (
    id           TEXT PRIMARY KEY,
    name         TEXT,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    disabled_at  TIMESTAMPTZ
);

-- A tenant lets a partner read its data.
CREATE TABLE partner_grants (
    partner_id  TEXT NOT NULL REFERENCES partners (id),
    tenant_id   TEXT NOT NULL REFERENCES tenants (id),
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (partner_id, tenant_id)
);
CREATE INDEX partner_grants_by_tenant ON partner_grants (tenant_id);

-- The stream bridge's webhook targets, read by the bridge (as locus_system) every few
-- seconds. One per tenant for now: the bridge's lanes are per tenant.
CREATE TABLE sinks (
    id           UUID PRIMARY KEY,
    tenant_id    TEXT NOT NULL UNIQUE REFERENCES tenants (id),
    partner_id   TEXT REFERENCES partners (id),
    url          TEXT NOT NULL,
    secret       TEXT NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    disabled_at  TIMESTAMPTZ
);

-- Who changed what: written in the same transaction as the change, published to the
-- tenant-events topic by a relay (published_at set once Kafka confirmed). Never a secret.
CREATE TABLE audit_log (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id      UUID NOT NULL UNIQUE,
    tenant_id     TEXT,
    actor         TEXT NOT NULL,
    actor_role    TEXT NOT NULL,
    action        TEXT NOT NULL,
    target_kind   TEXT NOT NULL,
    target_id     TEXT NOT NULL,
    before        JSONB,
    after         JSONB,
    at            TIMESTAMPTZ NOT NULL DEFAULT now(),
    published_at  TIMESTAMPTZ
);
CREATE INDEX audit_log_by_tenant ON audit_log (tenant_id, id);
CREATE INDEX audit_log_unpublished ON audit_log (id) WHERE published_at IS NULL;

-- GET /v1/sessions?device_id=...: without it the filter scans the tenant's whole index.
CREATE INDEX sessions_by_device ON sessions (tenant_id, device_id, started_at DESC);

-- The tenants a transaction may see: `SELECT set_config('locus.tenants', 'acme', true)`.
-- Unset or empty: none.
CREATE FUNCTION locus_tenants() RETURNS TEXT[]
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT string_to_array(NULLIF(current_setting('locus.tenants', true), ''), ',') $$;

-- Row-level security, forced so that even the owner's sessions obey it (a superuser
-- still bypasses it: never connect a service as one).
ALTER TABLE tenants ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenants FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_rows ON tenants TO locus_app
    USING (id = ANY (locus_tenants())) WITH CHECK (id = ANY (locus_tenants()));
CREATE POLICY system_rows ON tenants TO locus_system USING (true) WITH CHECK (true);

DO $$
DECLARE t TEXT;
BEGIN
    FOREACH t IN ARRAY ARRAY['devices', 'device_credentials', 'partner_grants', 'sinks',
                             'audit_log', 'sessions', 'session_event_outbox'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY tenant_rows ON %I TO locus_app '
                       'USING (tenant_id = ANY (locus_tenants())) '
                       'WITH CHECK (tenant_id = ANY (locus_tenants()))', t);
        EXECUTE format('CREATE POLICY system_rows ON %I TO locus_system '
                       'USING (true) WITH CHECK (true)', t);
    END LOOP;
END $$;

-- Partners carry no tenant: only the system role reads them.
ALTER TABLE partners ENABLE ROW LEVEL SECURITY;
ALTER TABLE partners FORCE ROW LEVEL SECURITY;
CREATE POLICY system_rows ON partners TO locus_system USING (true) WITH CHECK (true);

GRANT SELECT, INSERT, UPDATE, DELETE
    ON tenants, devices, device_credentials, partner_grants, sinks, audit_log,
       sessions, session_event_outbox
    TO locus_app;
GRANT SELECT, INSERT, UPDATE, DELETE
    ON tenants, devices, device_credentials, partners, partner_grants, sinks, audit_log,
       sessions, session_event_outbox
    TO locus_system;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO locus_app, locus_system;
GRANT EXECUTE ON FUNCTION locus_tenants() TO locus_app, locus_system;
