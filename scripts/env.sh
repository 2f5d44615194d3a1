# shellcheck shell=bash
# Locus: environment of the local stack.
#
# Sourced by ./locus (and usable by hand: `source scripts/env.sh`). Every variable gets its
# default only when it is not already set, so anything exported before running ./locus wins,
# e.g. `LOCUS_KAFKA_PORT=19092 ./locus up`.

# --- Ports of the local services that ./locus installs/starts (all on 127.0.0.1) ----------
: "${LOCUS_PG_PORT:=5432}"
: "${LOCUS_REDIS_PORT:=6379}"
: "${LOCUS_KAFKA_PORT:=9092}"                    # Apache Kafka, the broker listener
: "${LOCUS_KAFKA_CONTROLLER_PORT:=9093}"         # Apache Kafka, the KRaft controller listener

# --- The local Apache Kafka node ------------------------------------------------------------
# Heap of the broker JVM (-Xms and -Xmx). 1 GiB is Kafka's own default: RSS settles near
# 1.3 GiB under the benchmark, beside PostgreSQL, Redis and the apps on a 24 GiB machine.
: "${LOCUS_KAFKA_HEAP:=1g}"
# How long the local broker keeps records (log.retention.hours; at most 1 GiB per partition).
: "${LOCUS_KAFKA_RETENTION_HOURS:=24}"

# --- Service connections -------------------------------------------------------------------
# The apps connect as locus_app (row-level security applies to it); `locus-ingest migrate`
# connects as the owner to create the roles and tables.
: "${LOCUS_DATABASE_URL:=postgres://locus_app@127.0.0.1:${LOCUS_PG_PORT}/locus}"
: "${LOCUS_DATABASE_OWNER_URL:=postgres://postgres@127.0.0.1:${LOCUS_PG_PORT}/locus}"
: "${LOCUS_REDIS_URL:=redis://127.0.0.1:${LOCUS_REDIS_PORT}}"
: "${LOCUS_KAFKA_BROKERS:=127.0.0.1:${LOCUS_KAFKA_PORT}}"
: "${LOCUS_KAFKA_TOPIC_PREFIX:=locus.}"

# --- Auth (local development only) ----------------------------------------------------------
# Development mode lets ingest accept HS256 tokens signed with the published secret below
# (`./locus token`); a production start refuses both. Device tokens are ES256, signed with
# the key file (`./locus up` writes one with `locus-ingest keygen`).
: "${LOCUS_DEV_MODE:=true}"
: "${LOCUS_JWT_SECRET:=locus-local-dev-secret-change-me}"
: "${LOCUS_TOKEN_SIGNING_KEY_FILE:=${LOCUS_STATE_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/.locus}/token-signing-key.pem}"

# --- Listen addresses of the Locus processes -----------------------------------------------
: "${LOCUS_INGEST_LISTEN:=127.0.0.1:8080}"
: "${LOCUS_BRIDGE_LISTEN:=127.0.0.1:8081}"
: "${LOCUS_TRACKER_LISTEN:=127.0.0.1:8083}"
: "${LOCUS_RECEIVER_LISTEN:=127.0.0.1:9300}"     # demo partner: `locus-bench receiver`

# --- Demo partner sinks (webhooks to the demo receiver) ------------------------------------
: "${LOCUS_DEMO_WEBHOOK_SECRET:=demo-webhook-secret}"
if [ -z "${LOCUS_BRIDGE_SINKS:-}" ]; then
  _locus_sink="$(printf '{"url":"http://%s/webhook","secret":"%s"}' \
    "$LOCUS_RECEIVER_LISTEN" "$LOCUS_DEMO_WEBHOOK_SECRET")"
  LOCUS_BRIDGE_SINKS="$(printf '{"acme":%s,"globex":%s}' "$_locus_sink" "$_locus_sink")"
  unset _locus_sink
fi
# The demo receiver listens on loopback over plain http: sinks on special addresses and
# plain http:// sinks are refused (at registration and at connect time) unless the operator
# allows them. Local stack only; docs/security.md, "Sink targets".
: "${LOCUS_SINK_ALLOW_PRIVATE:=true}"
: "${LOCUS_SINK_ALLOW_HTTP:=true}"

# --- Tests (`./locus test`): the admin connection used to create throwaway databases -------
: "${LOCUS_TEST_DATABASE_ADMIN_URL:=postgres://postgres@127.0.0.1:${LOCUS_PG_PORT}/postgres}"

export LOCUS_PG_PORT LOCUS_REDIS_PORT LOCUS_KAFKA_PORT LOCUS_KAFKA_CONTROLLER_PORT \
  LOCUS_KAFKA_HEAP LOCUS_KAFKA_RETENTION_HOURS \
  LOCUS_DATABASE_URL LOCUS_DATABASE_OWNER_URL LOCUS_REDIS_URL LOCUS_KAFKA_BROKERS LOCUS_KAFKA_TOPIC_PREFIX \
  LOCUS_DEV_MODE LOCUS_JWT_SECRET LOCUS_TOKEN_SIGNING_KEY_FILE \
  LOCUS_INGEST_LISTEN LOCUS_BRIDGE_LISTEN LOCUS_RECEIVER_LISTEN \
  LOCUS_DEMO_WEBHOOK_SECRET LOCUS_BRIDGE_SINKS LOCUS_SINK_ALLOW_PRIVATE LOCUS_SINK_ALLOW_HTTP \
  LOCUS_TEST_DATABASE_ADMIN_URL
export LOCUS_TRACKER_LISTEN
