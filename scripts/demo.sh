#!/usr/bin/env bash
# make demo: runs the opskit pipeline on this machine with embedded defaults
# and data under ./var, prints what runs where, and stops everything cleanly
# on Ctrl-C (or after DEMO_SECONDS seconds, for scripted runs).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=./bin
mkdir -p var/demo-logs

# The daemons whose function is built, in pipeline order, with their flags.
# Each listens on its default loopback port (see README.md).
DEMO=(
  "transfer"   # metrics intake, storage and query on 7120, Graphite on 7121
  "collector --interval 30s"   # host metrics every 30 s, app intake on 7110/7111/8125, relays to transfer
)

pids=()
names=()
stop_all() {
  trap - INT TERM
  echo
  echo "stopping..."
  # Reverse order: consumers before producers' downstreams go away.
  for ((i=${#pids[@]}-1; i>=0; i--)); do
    kill -TERM "${pids[$i]}" 2>/dev/null || true
  done
  status=0
  for i in "${!pids[@]}"; do
    code=0
    wait "${pids[$i]}" || code=$?
    if [[ $code -eq 0 ]]; then
      echo "  ${names[$i]} stopped cleanly"
    else
      echo "  ${names[$i]} exited with $code"; status=1
    fi
  done
  exit $status
}
trap stop_all INT TERM

for entry in "${DEMO[@]}"; do
  read -r name args <<<"$entry"
  # shellcheck disable=SC2086
  # Own session: a Ctrl-C in the terminal reaches this script, which then
  # stops the daemons once, in order.
  setsid "$BIN/$name" $args >"var/demo-logs/$name.log" 2>&1 &
  pids+=($!)
  names+=("$name")
done

# Wait for each daemon to be ready.
ready() { "$BIN/$1" ctl health >/dev/null 2>&1; }
for name in "${names[@]}"; do
  for _ in $(seq 1 100); do ready "$name" && break; sleep 0.1; done
  if ! ready "$name"; then
    echo "$name did not become ready; its log:"; cat "var/demo-logs/$name.log"; stop_all
  fi
done

echo "opskit demo is running (data in ./var, logs in ./var/demo-logs):"
printf '  %-10s %-22s %s\n' DAEMON HTTP PID
for i in "${!names[@]}"; do
  addr=$(grep -o 'listen=[^ ]*' "var/demo-logs/${names[$i]}.log" | head -1 | cut -d= -f2)
  printf '  %-10s %-22s %s\n' "${names[$i]}" "$addr" "${pids[$i]}"
done
cat <<'TRY'
Host metrics reach transfer every 30 s (rates from the second round on).
Try, in another shell:
  curl -s 'http://127.0.0.1:7120/api/v1/query?query={__name__="cpu.busy"}'
  echo "app.requests:1|c" > /dev/udp/127.0.0.1/8125          # StatsD into the collector
  bin/collector once | head -3                                 # one round as open-falcon JSON lines
  promtool query instant http://127.0.0.1:7120 '{__name__=~"load.*"}'
  Grafana: add a Prometheus data source at http://127.0.0.1:7120 (examples/grafana/)
Ctrl-C stops everything.
TRY

if [[ -n "${DEMO_SECONDS:-}" ]]; then
  sleep "$DEMO_SECONDS"
  stop_all
fi
while true; do
  for i in "${!pids[@]}"; do
    if ! kill -0 "${pids[$i]}" 2>/dev/null; then
      echo "${names[$i]} exited unexpectedly; see var/demo-logs/${names[$i]}.log"
      stop_all
    fi
  done
  sleep 1
done
