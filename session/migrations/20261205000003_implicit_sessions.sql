-- Implicit sessions: the session a client app's fixes go to. OsmAnd, OwnTracks, Overland,
-- Traccar Client and the background-geolocation SDKs cannot start a session, so the first
-- fix of a device starts one (through the session store's start, which writes its event to
-- the outbox) and later fixes go to it until it rolls over: no fix for
-- LOCUS_CLIENT_SESSION_IDLE_SECS, or the session stopped (expired, stopped by an admin).
--
-- One open row per device, said by the database (a partial unique index), so replicas
-- racing on a device's first fix agree on one session (INSERT ... ON CONFLICT DO NOTHING,
-- then read the row that won). `last_seen_at` is the device's last client request as the
-- replicas report it, each at most once per tenth of the idle time: cheap, and precise
-- enough for a rollover measured in tens of minutes. A rollover first closes the row (a
-- conditional UPDATE, so only one replica wins it and a touch in between makes it lose),
-- then stops the session.
CREATE TABLE implicit_sessions (
    session_id    UUID PRIMARY KEY REFERENCES sessions (id),
    tenant_id     TEXT NOT NULL,
    device_id     TEXT NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_seen_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    closed_at     TIMESTAMPTZ,
    -- idle: rolled over after the idle time; ended: its session stopped otherwise.
    close_reason  TEXT CHECK (close_reason IN ('idle', 'ended')),
    FOREIGN KEY (tenant_id, device_id) REFERENCES devices (tenant_id, id),
    CHECK ((closed_at IS NULL) = (close_reason IS NULL))
);

CREATE UNIQUE INDEX implicit_sessions_one_open
    ON implicit_sessions (tenant_id, device_id) WHERE closed_at IS NULL;

ALTER TABLE implicit_sessions ENABLE ROW LEVEL SECURITY;
ALTER TABLE implicit_sessions FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_rows ON implicit_sessions TO locus_app
    USING (tenant_id = ANY (locus_tenants())) WITH CHECK (tenant_id = ANY (locus_tenants()));
CREATE POLICY system_rows ON implicit_sessions TO locus_system USING (true) WITH CHECK (true);

-- Written by the device's own requests, in its tenant's scope.
GRANT SELECT, INSERT, UPDATE ON implicit_sessions TO locus_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON implicit_sessions TO locus_system;
