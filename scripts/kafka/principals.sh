#!/usr/bin/env bash
# principals.sh BOOTSTRAP ADMIN_CONFIG CREDENTIALS_DIR TOPIC_PREFIX
#
# Makes the Kafka principals of scripts/kafka/acls.txt exist with their ACLs, on the broker at
# BOOTSTRAP, as the super user whose client settings are in ADMIN_CONFIG (a Kafka tools
# properties file). Idempotent: run it as often as you like.
#
# - Each principal's password is CREDENTIALS_DIR/<principal> (0600): generated the first time,
#   kept after, so the services' credentials survive restarts. Rotating one: delete (or
#   overwrite) the file and run this again, then restart the service that uses it.
# - Its SCRAM-SHA-512 credential is set to that password (kafka-configs' --alter, which
#   replaces the credential; a running client keeps its session until it reconnects).
# - Its ACLs are added (an ACL that exists already is left as it is; one no longer listed in
#   acls.txt is NOT removed: `./locus kafka acls --remove ...` does that).
#
# Environment: KAFKA_LIBS (the broker's jars, default .locus/kafka/libs), KAFKA_TOOLS_LOG (the
# tools' output, default /dev/null).
set -euo pipefail

[ "$#" -eq 4 ] || {
  echo "usage: $0 BOOTSTRAP ADMIN_CONFIG CREDENTIALS_DIR TOPIC_PREFIX" >&2
  exit 2
}
bootstrap="$1" admin_config="$2" credentials="$3" prefix="$4"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
libs="${KAFKA_LIBS:-$here/../../.locus/kafka/libs}"
log="${KAFKA_TOOLS_LOG:-/dev/null}"

tool() {
  java -Xmx256m -XX:TieredStopAtLevel=1 -Dlog4j2.configurationFile="$here/log4j2-tools.yaml" \
    -cp "$libs/*" "$@" --bootstrap-server "$bootstrap" --command-config "$admin_config" \
    >>"$log" 2>&1
}

# The ACL lines, @PREFIX@ replaced: principal type pattern name operations.
lines="$(sed -e 's/#.*//' -e "s|@PREFIX@|$prefix|g" "$here/acls.txt" | awk 'NF == 5')"

mkdir -p "$credentials"
chmod 700 "$credentials"
for principal in $(printf '%s\n' "$lines" | awk '{print $1}' | sort -u); do
  file="$credentials/$principal"
  if [ ! -s "$file" ]; then
    # 24 random bytes in hex: nothing to quote in JAAS and properties files.
    (umask 077 && od -An -N24 -tx1 /dev/urandom | tr -d ' \n' >"$file")
  fi
  chmod 600 "$file"
  # The password through a file of mode 0600, not the command line (visible in ps).
  config="$(mktemp)"
  printf 'SCRAM-SHA-512=iterations=8192,password=%s\n' "$(cat "$file")" >"$config"
  if ! tool org.apache.kafka.tools.ConfigCommand --alter --entity-type users \
    --entity-name "$principal" --add-config-file "$config"; then
    rm -f "$config"
    echo "principals.sh: could not set the SCRAM credential of $principal (see $log)" >&2
    exit 1
  fi
  rm -f "$config"
done

# One AclCommand per (resource type, pattern, name, operations) with every principal that has
# exactly that line: each call is a JVM start (~2 s), so the common lines (reading
# locations, idempotent writes) are one call each.
printf '%s\n' "$lines" | awk '{ key = $2 " " $3 " " $4 " " $5; p[key] = p[key] " " $1 }
  END { for (k in p) print k p[k] }' | sort | while read -r type pattern name operations principals; do
  args=(--add --force --resource-pattern-type "$pattern")
  case "$type" in
    topic) args+=(--topic "$name") ;;
    group) args+=(--group "$name") ;;
    cluster) args+=(--cluster) ;;
    transactional-id) args+=(--transactional-id "$name") ;;
    *)
      echo "principals.sh: unknown resource type $type in acls.txt" >&2
      exit 1
      ;;
  esac
  for principal in $principals; do
    args+=(--allow-principal "User:$principal")
  done
  IFS=, read -r -a ops <<<"$operations"
  for op in "${ops[@]}"; do
    args+=(--operation "$op")
  done
  tool org.apache.kafka.tools.AclCommand "${args[@]}" || {
    echo "principals.sh: could not add the ACLs on $type $name for$principals (see $log)" >&2
    exit 1
  }
done
