#!/usr/bin/env bash
# Feeds this host's load and memory into the demo's transfer every 5 seconds
# as tagged Graphite lines through `transfer push`, until the collector takes
# over this job in the demo.
set -euo pipefail
cd "$(dirname "$0")/.."
host=$(hostname)
while true; do
  now=$(date +%s)
  read -r l1 l5 l15 _ < /proc/loadavg
  memfree=$(awk '/^MemAvailable:/ {print $2 * 1024}' /proc/meminfo)
  printf '%s;endpoint=%s %s %s\n' \
    load.1min "$host" "$l1" "$now" \
    load.5min "$host" "$l5" "$now" \
    load.15min "$host" "$l15" "$now" \
    mem.memavailable "$host" "$memfree" "$now" |
    ./bin/transfer push --addr 127.0.0.1:7120 >/dev/null || echo "push failed" >&2
  sleep 5
done
