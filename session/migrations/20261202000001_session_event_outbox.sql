-- The outbox of session events. A start, stop or expiry writes its event here in the same
-- statement or transaction as the session change, so PostgreSQL never holds a change whose
-- event can be lost. Ingest appends the rows to the Redis buffer in id order per session and
-- deletes each row only after Redis confirmed it; the append is idempotent by event_id, so
-- a row published again after a crash is buffered once.

CREATE TABLE session_event_outbox (
    -- The order of publication: a session's started row always has a smaller id than its
    -- stopped row (the stop's transaction can only see a committed start).
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id     UUID NOT NULL UNIQUE,
    session_id   UUID NOT NULL REFERENCES sessions (id),
    tenant_id    TEXT NOT NULL,
    device_id    TEXT NOT NULL,
    kind         TEXT NOT NULL CHECK (kind IN ('started', 'stopped')),
    stop_reason  TEXT CHECK (stop_reason IN ('requested', 'expired')),
    occurred_at  TIMESTAMPTZ NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    CHECK ((kind = 'stopped') = (stop_reason IS NOT NULL))
);

-- A session's earlier rows, looked up before a later one may be published.
CREATE INDEX session_event_outbox_by_session ON session_event_outbox (session_id, id);
