-- Geofences per tenant, and where each device stands with each of them.
--
-- A tenant admin manages its own fences through the admin API (PUT/GET/DELETE
-- /v1/geofences/{geofence_id}, audited, in the tenant's scope). The tracker reads every
-- tenant's fences (system scope) every LOCUS_TRACKER_FENCE_REFRESH_MS and moves the states
-- in its one transaction per poll batch, as locus_system; each transition also writes one
-- geo_outbox row (topic 'geofence_events') in that same transaction, so a state change and
-- its event commit together or not at all.

-- A fence is a GeoJSON Polygon or MultiPolygon (`geometry`, as the admin sent it, checked
-- by locus_geo::Shape::from_geojson before it is stored), or a circle (`center_lat`,
-- `center_lon`, `radius_m`): exactly one of the two.
CREATE TABLE geofences (
    tenant_id    TEXT NOT NULL REFERENCES tenants (id),
    geofence_id  TEXT NOT NULL CHECK (geofence_id ~ '^[A-Za-z0-9._:-]{1,128}$'),
    name         TEXT,
    geometry     JSONB CHECK (geometry IS NULL OR geometry->>'type' IN ('Polygon', 'MultiPolygon')),
    center_lat   DOUBLE PRECISION CHECK (center_lat BETWEEN -90 AND 90),
    center_lon   DOUBLE PRECISION CHECK (center_lon BETWEEN -180 AND 180),
    radius_m     DOUBLE PRECISION CHECK (radius_m > 0),
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, geofence_id),
    CHECK (
        (geometry IS NOT NULL AND center_lat IS NULL AND center_lon IS NULL AND radius_m IS NULL)
        OR (geometry IS NULL AND center_lat IS NOT NULL AND center_lon IS NOT NULL
            AND radius_m IS NOT NULL)
    )
);

-- Where a device stands with a fence: inside or not, as decided by the fix of `at` and
-- `record_id` (the fix of the last transition). No row is "outside": a device's first fix
-- inside a fence is an enter. Rows move only on a transition.
--
-- No foreign key to geofences: the tracker works from a cached index (at most
-- LOCUS_TRACKER_FENCE_REFRESH_MS old), and a fence deleted meanwhile must not fail its
-- whole batch. Deleting a fence deletes its states (same transaction, tenant scope).
CREATE TABLE geofence_states (
    tenant_id    TEXT NOT NULL,
    device_id    TEXT NOT NULL,
    geofence_id  TEXT NOT NULL,
    inside       BOOLEAN NOT NULL,
    at           TIMESTAMPTZ NOT NULL,
    record_id    UUID NOT NULL,
    PRIMARY KEY (tenant_id, device_id, geofence_id)
);
-- A fence's delete removes its states: without this it scans the tenant's devices.
CREATE INDEX geofence_states_by_fence ON geofence_states (tenant_id, geofence_id);

-- The latest fix of each device that was checked against its tenant's fences. A fix not
-- newer than it is late (or read again) and moves nothing: the device's states say where
-- it stood at `at`, and an older fix says nothing about now. One watermark per device, not
-- per fence, so a late fix cannot enter a fence the device was last seen outside of
-- without a row saying so. The tracker locks this row (an upsert) before it reads or moves
-- the device's states: two transactions on one device take turns, and the second sees
-- what the first committed.
CREATE TABLE geofence_devices (
    tenant_id    TEXT NOT NULL,
    device_id    TEXT NOT NULL,
    -- NULL until the device's first fix is checked.
    at           TIMESTAMPTZ,
    record_id    UUID,
    PRIMARY KEY (tenant_id, device_id)
);

DO $$
DECLARE t TEXT;
BEGIN
    FOREACH t IN ARRAY ARRAY['geofences', 'geofence_states', 'geofence_devices'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY tenant_rows ON %I TO locus_app '
                       'USING (tenant_id = ANY (locus_tenants())) '
                       'WITH CHECK (tenant_id = ANY (locus_tenants()))', t);
        EXECUTE format('CREATE POLICY system_rows ON %I TO locus_system '
                       'USING (true) WITH CHECK (true)', t);
    END LOOP;
END $$;

-- A tenant admin writes its own fences; the tracker reads them all. States are the
-- tracker's: the tenant role reads them and deletes them with their fence, never writes one.
GRANT SELECT, INSERT, UPDATE, DELETE ON geofences TO locus_app;
GRANT SELECT ON geofences TO locus_system;
GRANT SELECT, DELETE ON geofence_states TO locus_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON geofence_states, geofence_devices TO locus_system;
