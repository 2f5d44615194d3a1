-- A partner's Kafka login (SCRAM-SHA-512), for the partner topics the stream bridge writes.
-- Only what the broker needs to check a login is kept: the salt, the iteration count and
-- the salted password (RFC 5802's SaltedPassword, which AlterUserScramCredentials takes).
-- The password itself is shown once by POST /v1/partners/{id}/kafka-credentials and never
-- stored. A platform object like `partners`: only the system role reads or writes it.
CREATE TABLE partner_kafka_credentials (
    partner_id       TEXT PRIMARY KEY REFERENCES partners (id),
    mechanism        TEXT NOT NULL DEFAULT 'SCRAM-SHA-512'
                     CHECK (mechanism = 'SCRAM-SHA-512'),
    iterations       INTEGER NOT NULL CHECK (iterations BETWEEN 4096 AND 16384),
    salt             BYTEA NOT NULL,
    salted_password  BYTEA NOT NULL,
    updated_at       TIMESTAMPTZ NOT NULL DEFAULT now()
);

ALTER TABLE partner_kafka_credentials ENABLE ROW LEVEL SECURITY;
ALTER TABLE partner_kafka_credentials FORCE ROW LEVEL SECURITY;
CREATE POLICY system_rows ON partner_kafka_credentials TO locus_system
    USING (true) WITH CHECK (true);
GRANT SELECT, INSERT, UPDATE, DELETE ON partner_kafka_credentials TO locus_system;
