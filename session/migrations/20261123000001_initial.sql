-- Tenants, devices and tracking sessions. Every row carries tenant_id, and every query
-- filters on it: an id from another tenant reads as "not found".

CREATE TABLE tenants (
    id          TEXT PRIMARY KEY,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE devices (
    tenant_id     TEXT NOT NULL REFERENCES tenants (id),
    id            TEXT NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_seen_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id)
);

CREATE TABLE sessions (
    id           UUID PRIMARY KEY,
    tenant_id    TEXT NOT NULL,
    device_id    TEXT NOT NULL,
    status       TEXT NOT NULL CHECK (status IN ('active', 'stopped')),
    stop_reason  TEXT CHECK (stop_reason IN ('requested', 'expired')),
    started_at   TIMESTAMPTZ NOT NULL,
    expires_at   TIMESTAMPTZ NOT NULL,
    stopped_at   TIMESTAMPTZ,
    fix_count    BIGINT NOT NULL DEFAULT 0,
    last_fix_at  TIMESTAMPTZ,
    last_lat     DOUBLE PRECISION,
    last_lon     DOUBLE PRECISION,
    FOREIGN KEY (tenant_id, device_id) REFERENCES devices (tenant_id, id),
    CHECK ((status = 'stopped') = (stopped_at IS NOT NULL))
);

-- A device has at most one active session: the database says so, not only the code.
CREATE UNIQUE INDEX sessions_one_active_per_device
    ON sessions (tenant_id, device_id) WHERE status = 'active';
-- The expiry sweeper's scan.
CREATE INDEX sessions_active_expiry ON sessions (expires_at) WHERE status = 'active';
-- GET /v1/sessions, newest first.
CREATE INDEX sessions_by_tenant ON sessions (tenant_id, started_at DESC);
