#!/usr/bin/env bash
# The Kafka broker of docker-compose.yml, run in the apache/kafka image with the local
# stack's settings (scripts/kafka/server.properties.in: SASL/SCRAM-SHA-512, the standard
# authorizer, locus-admin the super user) and listeners for the compose network (kafka:9092)
# and the host (localhost:29092). locus-admin's password is /credentials/locus-admin,
# generated on the first start; the data directory is formatted once, with that credential.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
data=/var/lib/kafka/data
config=/tmp/server.properties

mkdir -p /credentials
if [ ! -s /credentials/locus-admin ]; then
  (umask 077 && od -An -N24 -tx1 /dev/urandom | tr -d ' \n' >/credentials/locus-admin)
fi
admin="$(cat /credentials/locus-admin)"

jaas="org.apache.kafka.common.security.scram.ScramLoginModule required username=\"locus-admin\" password=\"$admin\";"
{
  sed -e "s|@PORT@|9092|g" -e "s|@CONTROLLER_PORT@|9093|g" -e "s|@DATA_DIR@|$data|g" \
    -e "s|@RETENTION_HOURS@|24|g" -e "s|@ADMIN_PASSWORD@|$admin|g" "$here/server.properties.in"
  # Later keys win: the compose network's and the host's listeners, both SASL only.
  cat <<PROPS
listeners=SASL_PLAINTEXT://:9092,CONTROLLER://127.0.0.1:9093,HOST://:29092
advertised.listeners=SASL_PLAINTEXT://kafka:9092,HOST://localhost:29092
listener.security.protocol.map=CONTROLLER:SASL_PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT,HOST:SASL_PLAINTEXT
listener.name.host.sasl.enabled.mechanisms=SCRAM-SHA-512
listener.name.host.scram-sha-512.sasl.jaas.config=$jaas
PROPS
} >"$config"
chmod 600 "$config"

# The super user's client settings, for the healthcheck and the principals service.
{
  printf 'security.protocol=SASL_PLAINTEXT\nsasl.mechanism=SCRAM-SHA-512\n'
  printf 'sasl.jaas.config=%s\n' "$jaas"
} >/credentials/admin.properties
chmod 600 /credentials/admin.properties

if [ ! -f "$data/meta.properties" ]; then
  /opt/kafka/bin/kafka-storage.sh format --cluster-id "$(/opt/kafka/bin/kafka-storage.sh random-uuid)" \
    --config "$config" --add-scram "SCRAM-SHA-512=[name=locus-admin,password=$admin]"
fi
exec /opt/kafka/bin/kafka-server-start.sh "$config"
