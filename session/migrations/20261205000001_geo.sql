-- Geo: what the tracker role keeps from the locations topic. Each session's track (one row
-- per fix, with the segment from the fix before it by time), its statistics, each device's
-- last known position, the outbox of records the tracker publishes (positions, geofence
-- events) and the tracker's consumer offsets.
--
-- The tracker writes all of it in ONE transaction per poll batch, together with the next
-- offset of each partition it read (tracker_offsets): PostgreSQL, not Kafka, holds the
-- truth of what was applied, so a batch read twice (redelivery after a crash) is skipped
-- by offset, and a fix sent twice (a client retry, another batch) is skipped by its key.
--
-- No foreign keys to sessions or devices: a track is written at the consumer's pace and
-- must not fail (and stop a partition) because a session row went away; the cost of a
-- foreign key check per fix is also the tracker's hot path.

-- One row per fix of a session. segment_m is the haversine distance from the previous fix
-- by recorded_at (0 for the first fix of the session and for a jump: a jump is flagged,
-- kept, and not counted toward the distance); segment_mps is that distance over the time
-- between the two fixes (NULL when there is no previous fix or no time between them).
CREATE TABLE track_points (
    tenant_id    TEXT NOT NULL,
    session_id   UUID NOT NULL,
    recorded_at  TIMESTAMPTZ NOT NULL,
    record_id    UUID NOT NULL,
    device_id    TEXT NOT NULL,
    lat          DOUBLE PRECISION NOT NULL,
    lon          DOUBLE PRECISION NOT NULL,
    accuracy     DOUBLE PRECISION,
    altitude     DOUBLE PRECISION,
    speed        DOUBLE PRECISION,
    heading      DOUBLE PRECISION,
    battery      DOUBLE PRECISION,
    segment_m    DOUBLE PRECISION NOT NULL DEFAULT 0 CHECK (segment_m >= 0),
    segment_mps  DOUBLE PRECISION CHECK (segment_mps >= 0),
    jump         BOOLEAN NOT NULL DEFAULT false,
    -- The order of a track: by time, then by record id (two fixes with the same time are
    -- neighbours in a fixed order, so a recomputation from scratch gives the same segments).
    PRIMARY KEY (session_id, recorded_at, record_id)
);

-- A fix is one row even when it arrives again in another batch or session (a client fix
-- with its own key has the same record id wherever it comes in): the dedupe is by record
-- id alone, not by the primary key, which includes recorded_at.
CREATE UNIQUE INDEX track_points_record ON track_points (record_id);

-- The statistics of a session, kept incrementally by the tracker: the sum of the segments
-- (distance_m), the count of fixes and jumps, the first and last fix by time, the bounding
-- box and the fastest segment that is not a jump. Average speed (distance over duration)
-- and duration (last - first) are computed on read.
CREATE TABLE session_stats (
    tenant_id      TEXT NOT NULL,
    session_id     UUID PRIMARY KEY,
    fix_count      BIGINT NOT NULL DEFAULT 0 CHECK (fix_count >= 0),
    distance_m     DOUBLE PRECISION NOT NULL DEFAULT 0,
    jumps          BIGINT NOT NULL DEFAULT 0 CHECK (jumps >= 0),
    first_fix_at   TIMESTAMPTZ,
    last_fix_at    TIMESTAMPTZ,
    first_lat      DOUBLE PRECISION,
    first_lon      DOUBLE PRECISION,
    last_lat       DOUBLE PRECISION,
    last_lon       DOUBLE PRECISION,
    min_lat        DOUBLE PRECISION,
    min_lon        DOUBLE PRECISION,
    max_lat        DOUBLE PRECISION,
    max_lon        DOUBLE PRECISION,
    max_speed_mps  DOUBLE PRECISION,
    updated_at     TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- The last known position of each device: the fix with the latest recorded_at seen so far.
-- The tracker only ever moves it forward in recorded_at: a late fix never replaces it.
CREATE TABLE device_positions (
    tenant_id    TEXT NOT NULL,
    device_id    TEXT NOT NULL,
    session_id   UUID NOT NULL,
    record_id    UUID NOT NULL,
    recorded_at  TIMESTAMPTZ NOT NULL,
    lat          DOUBLE PRECISION NOT NULL,
    lon          DOUBLE PRECISION NOT NULL,
    accuracy     DOUBLE PRECISION,
    altitude     DOUBLE PRECISION,
    speed        DOUBLE PRECISION,
    heading      DOUBLE PRECISION,
    battery      DOUBLE PRECISION,
    updated_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, device_id)
);

-- Records to publish, written in the tracker's transaction and published by its relay in
-- seq order, then deleted. Each published record carries its seq in the header
-- `locus-outbox-seq`; the relay reads the last record of each partition at start and
-- deletes the rows at or below it, so a crash between publish and delete publishes once.
CREATE TABLE geo_outbox (
    seq         BIGSERIAL PRIMARY KEY,
    tenant_id   TEXT NOT NULL,
    topic       TEXT NOT NULL CHECK (topic IN ('geofence_events', 'positions')),
    -- The Kafka key (the device id): it decides the partition, so one device's records
    -- stay in order.
    key         TEXT NOT NULL,
    payload     JSONB NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- When Kafka last refused the row (e.g. larger than the topic's max.message.bytes).
    -- Such a row is exempt from the restart rule above: records behind it in its
    -- partition may be on Kafka while it is not, so a higher last seq proves nothing.
    refused_at  TIMESTAMPTZ NULL
);

-- The next offset to apply per partition of the locations topic (the consumer group's
-- committed offsets are only a copy: on assignment the tracker seeks to these).
CREATE TABLE tracker_offsets (
    topic        TEXT NOT NULL,
    partition    INT NOT NULL CHECK (partition >= 0),
    next_offset  BIGINT NOT NULL CHECK (next_offset >= 0),
    PRIMARY KEY (topic, partition)
);

DO $$
DECLARE t TEXT;
BEGIN
    FOREACH t IN ARRAY ARRAY['track_points', 'session_stats', 'device_positions', 'geo_outbox'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY tenant_rows ON %I TO locus_app '
                       'USING (tenant_id = ANY (locus_tenants())) '
                       'WITH CHECK (tenant_id = ANY (locus_tenants()))', t);
        EXECUTE format('CREATE POLICY system_rows ON %I TO locus_system '
                       'USING (true) WITH CHECK (true)', t);
    END LOOP;
END $$;

-- Offsets carry no tenant: only the system role reads them.
ALTER TABLE tracker_offsets ENABLE ROW LEVEL SECURITY;
ALTER TABLE tracker_offsets FORCE ROW LEVEL SECURITY;
CREATE POLICY system_rows ON tracker_offsets TO locus_system USING (true) WITH CHECK (true);

-- The tracker (every tenant's rows in one transaction) writes as locus_system; the API
-- reads a tenant's own. The tenant role writes none of it: tracks and statistics are what
-- the tracker derived from the topic, not something a tenant edits.
GRANT SELECT ON track_points, session_stats, device_positions TO locus_app;
GRANT SELECT, INSERT, UPDATE, DELETE
    ON track_points, session_stats, device_positions, geo_outbox, tracker_offsets
    TO locus_system;
GRANT USAGE ON SEQUENCE geo_outbox_seq_seq TO locus_system;
