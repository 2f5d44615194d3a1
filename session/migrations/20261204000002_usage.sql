-- Usage per tenant and minute, for billing: what ingest accepted, refused (by reason) and
-- refused for rate, and the body bytes of the accepted batches. Every ingest replica adds
-- its own counts each flush interval (an additive upsert), so the row of a minute is the
-- sum over replicas. No foreign key to tenants: a billing row outlives its tenant, and one
-- unknown tenant must not fail the flush of every other.
CREATE TABLE usage_minutes (
    tenant_id           TEXT NOT NULL,
    -- The start of the minute (UTC).
    minute              TIMESTAMPTZ NOT NULL CHECK (minute = date_trunc('minute', minute)),
    fixes_accepted      BIGINT NOT NULL DEFAULT 0 CHECK (fixes_accepted >= 0),
    -- {"latitude_out_of_range": 3, "session_stopped": 5}: fixes refused, by reason.
    fixes_rejected      JSONB NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(fixes_rejected) = 'object'),
    fixes_rate_limited  BIGINT NOT NULL DEFAULT 0 CHECK (fixes_rate_limited >= 0),
    bytes               BIGINT NOT NULL DEFAULT 0 CHECK (bytes >= 0),
    updated_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, minute)
);

-- Adds two {reason: count} objects key by key: the additive merge of fixes_rejected.
CREATE FUNCTION locus_add_counts(a JSONB, b JSONB) RETURNS JSONB
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$
        SELECT COALESCE(jsonb_object_agg(key, total), '{}'::jsonb)
        FROM (SELECT key, sum(value::bigint) AS total
              FROM (SELECT * FROM jsonb_each_text(a)
                    UNION ALL
                    SELECT * FROM jsonb_each_text(b)) AS both_counts
              GROUP BY key) AS sums
    $$;

ALTER TABLE usage_minutes ENABLE ROW LEVEL SECURITY;
ALTER TABLE usage_minutes FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_rows ON usage_minutes TO locus_app
    USING (tenant_id = ANY (locus_tenants())) WITH CHECK (tenant_id = ANY (locus_tenants()));
CREATE POLICY system_rows ON usage_minutes TO locus_system USING (true) WITH CHECK (true);

-- The flush (every tenant's rows at once) runs as locus_system; reads are a tenant's own.
-- No DELETE or UPDATE for the tenant role: a tenant cannot rewrite its bill.
GRANT SELECT ON usage_minutes TO locus_app;
GRANT SELECT, INSERT, UPDATE ON usage_minutes TO locus_system;
GRANT EXECUTE ON FUNCTION locus_add_counts(JSONB, JSONB) TO locus_app, locus_system;
