#!/usr/bin/env bash
# Samples the local stack while a long benchmark (a soak) runs, for the figures that must
# stay flat: each process's resident memory and its CPU per fix, interval by interval.
#
#   bench/sample-stack.sh [INTERVAL_SECS] [COUNT] > target/bench/soak-samples.tsv
#
# Every INTERVAL_SECS (default 30), COUNT times (default 22), one line: seconds since the
# start, the fixes accepted by ingest so far (locus_fixes_accepted_total from its /metrics),
# then for the broker (the JVM running kafka.Kafka), ingest, stream-bridge and Redis their
# current RSS (VmRSS, MiB) and CPU time so far (utime + stime, seconds). A second table, on
# stderr at the end, gives each interval's CPU microseconds per accepted fix.
set -euo pipefail
interval="${1:-30}"
count="${2:-22}"
ingest="http://${LOCUS_INGEST_LISTEN:-127.0.0.1:8080}/metrics"

# pid_of PATTERN: the oldest process whose command line matches PATTERN.
pid_of() { pgrep -o -f "$1" || true; }

# rss_cpu PID: "RSS_MiB CPU_secs", or "- -" when the process is gone.
rss_cpu() {
  local pid="$1" rss ticks
  if [ -z "$pid" ] || [ ! -r "/proc/$pid/stat" ]; then
    echo "- -"
    return
  fi
  rss="$(awk '/^VmRSS:/ {printf "%.0f", $2 / 1024}' "/proc/$pid/status")"
  # Fields 14 and 15 of /proc/PID/stat, counted after the ")" that ends the command name.
  ticks="$(sed 's/^.*) //' "/proc/$pid/stat" | awk '{print $12 + $13}')"
  echo "$rss $(awk -v t="$ticks" -v hz="$(getconf CLK_TCK)" 'BEGIN {printf "%.2f", t / hz}')"
}

accepted() {
  curl -s -m 5 "$ingest" | awk '/^locus_fixes_accepted_total/ {printf "%.0f", $2; found=1} END {if (!found) printf "0"}'
}

# Anchored on the program's path, so `cargo test -p locus-ingest` does not match.
broker="$(pid_of '^java .* kafka\.Kafka ')"
ingest_pid="$(pid_of '^([^ ]*/)?locus-ingest( |$)')"
bridge_pid="$(pid_of '^([^ ]*/)?locus-stream-bridge( |$)')"
redis_pid="$(pid_of '^([^ ]*/)?redis-server ')"

printf 't_s\taccepted\tbroker_rss_mib\tbroker_cpu_s\tingest_rss_mib\tingest_cpu_s\tbridge_rss_mib\tbridge_cpu_s\tredis_rss_mib\tredis_cpu_s\n'
start=$SECONDS
rows=()
for ((i = 0; i < count; i++)); do
  # shellcheck disable=SC2046
  row="$((SECONDS - start))	$(accepted)	$(rss_cpu "$broker" | tr ' ' '\t')	$(rss_cpu "$ingest_pid" | tr ' ' '\t')	$(rss_cpu "$bridge_pid" | tr ' ' '\t')	$(rss_cpu "$redis_pid" | tr ' ' '\t')"
  printf '%s\n' "$row"
  rows+=("$row")
  [ "$i" -lt $((count - 1)) ] && sleep "$interval"
done

{
  printf '\ninterval\tfixes\tbroker_us_per_fix\tingest_us_per_fix\tbridge_us_per_fix\tredis_us_per_fix\n'
  printf '%s\n' "${rows[@]}" | awk -F'\t' '
    NR > 1 && $2 > a {
      d = $2 - a
      printf "%s-%s s\t%d", t, $1, d
      for (c = 4; c <= 10; c += 2) printf "\t%.2f", ($c - p[c]) * 1e6 / d
      printf "\n"
    }
    { t = $1; a = $2; for (c = 4; c <= 10; c += 2) p[c] = $c }'
} >&2
