#!/usr/bin/env bash
# make demo: runs the opskit pipeline on this machine with embedded defaults
# and data under ./var, prints what runs where, and stops everything cleanly
# on Ctrl-C (or after DEMO_SECONDS seconds, for scripted runs).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=./bin
mkdir -p var/demo-logs var/filefly-agent/srv

# The daemons whose function is built, in pipeline order: a label, the HTTP
# address (each daemon's default loopback port, see README.md), the binary
# and its arguments.
DEMO=(
  "configd        127.0.0.1:7160  configd --fleet-scrape-interval 2s"  # config server, naming service and fleet view: first up, last down
  "alarm          127.0.0.1:7140  alarm --notify-config scripts/demo/alarm.yml"  # alerts in, notifications to var/demo-logs/notifications.jsonl
  "judge          127.0.0.1:7130  judge --strategies scripts/demo/strategies.yaml --alarm 127.0.0.1:7140 --transfer-url http://127.0.0.1:7120"
  "transfer       127.0.0.1:7120  transfer --judge j1=127.0.0.1:7130"  # metrics intake, storage, query; Graphite on 7121
  "kafka          127.0.0.1:9092  kfake --listen 127.0.0.1:9092 --topics logs:3"  # an in-process Kafka for the log pipeline
  "collector      127.0.0.1:7110  collector --interval 30s --config scripts/demo/collector.yaml --kafka-brokers 127.0.0.1:9092"  # host metrics, app intake, log tailing to Kafka
  "ratelimit      127.0.0.1:7150  ratelimit --routes scripts/demo/ratelimit.yaml"  # gateway on 7151 in front of transfer's query API
  "configd-agent  127.0.0.1:7161  configd agent --app demo --namespace demo/prod/app"  # keeps demo/prod/app on disk
  "abtest         127.0.0.1:7190  abtest --experiments scripts/demo/experiments.yaml"   # experiment assignment and reports
  "deployer       127.0.0.1:7170  deployer --hosts scripts/demo/deployer-hosts.yaml --apps scripts/demo/deployer-apps.yaml"  # release control: queue, batches, gates, rollback
  "deploy         127.0.0.1:7171  deploy --stop-programs-on-exit --deployer http://127.0.0.1:7170 --host-name demo-host"  # deploy agent: takes its tasks from deployer
  "filefly        127.0.0.1:7180  filefly"                       # file distribution server
  "filefly-agent  127.0.0.1:7181  filefly agent --data-dir var/filefly-agent --dest-prefix $PWD/var/filefly-agent --allow-root $PWD/var/filefly-agent/srv"  # receives files under var/filefly-agent/srv
)

# Every daemon registers with configd's fleet view (configd fleet, page /fleet).
export OPSKIT_CONFIGD=http://127.0.0.1:7160 OPSKIT_CONFIGD_HEARTBEAT=2s

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

addrs=()
for entry in "${DEMO[@]}"; do
  read -r label addr bin args <<<"$entry"
  # Own session: a Ctrl-C in the terminal reaches this script, which then
  # stops the daemons once, in order.
  # shellcheck disable=SC2086
  setsid "$BIN/$bin" $args >"var/demo-logs/$label.log" 2>&1 &
  pids+=($!)
  names+=("$label")
  addrs+=("$bin $addr")
done

# Wait for each daemon to be ready.
ready() {
  read -r bin addr <<<"$1"
  if [[ $bin == kfake ]]; then # not an opskit daemon: ready once it accepts connections
    (exec 3<>"/dev/tcp/${addr%:*}/${addr#*:}") 2>/dev/null
    return
  fi
  "$BIN/$bin" ctl health --addr "$addr" >/dev/null 2>&1
}
for i in "${!names[@]}"; do
  for _ in $(seq 1 100); do ready "${addrs[$i]}" && break; sleep 0.1; done
  if ! ready "${addrs[$i]}"; then
    echo "${names[$i]} did not become ready; its log:"; cat "var/demo-logs/${names[$i]}.log"; stop_all
  fi
done

echo "opskit demo is running (data in ./var, logs in ./var/demo-logs):"
printf '  %-14s %-18s %s\n' DAEMON HTTP PID
for i in "${!names[@]}"; do
  printf '  %-14s %-18s %s\n' "${names[$i]}" "${addrs[$i]#* }" "${pids[$i]}"
done
cat <<'TRY'
Host metrics reach transfer every 30 s (rates from the second round on).
Fleet view: http://127.0.0.1:7160/fleet (bin/configd fleet for the console); deploys: http://127.0.0.1:7170/
Try, in another shell:
  curl -sg 'http://127.0.0.1:7120/api/v1/query?query={__name__="cpu.busy"}'
  echo "app.requests:1|c" > /dev/udp/127.0.0.1/8125          # StatsD into the collector
  bin/collector once | head -3                                 # one round as open-falcon JSON lines
  promtool query instant http://127.0.0.1:7120 '{__name__=~"load.*"}'
  printf 'port=8080\n' | bin/configd put demo/prod/app app.properties && bin/configd publish demo/prod/app -m first
  cat var/configd-agent/cache/demo/prod/app/current/app.properties   # the agent's atomic copy
  bin/configd hosts demo                                           # the naming service
  echo "demo.latency;endpoint=web01 250 $(date +%s)" | bin/transfer push --addr 127.0.0.1:7120   # judge fires DemoLatencyHigh
  echo '{"labels":{"alertname":"DiskFull","instance":"web01"}}' | bin/alarm send
  amtool --alertmanager.url=http://127.0.0.1:7140 alert query     # a notification lands in var/demo-logs/notifications.jsonl after 5 s
  for i in 1 2 3 4; do curl -s -o /dev/null -w "%{http_code} " 'http://127.0.0.1:7151/api/v1/query?query=1'; done; echo   # 200 200 200 429
  curl -s '127.0.0.1:7190/v1/assign?unit=user-1&attr.country=US&attr.age=30'   # the unit's variant in every layer
  kcat -C -b 127.0.0.1:9092 -t logs -o beginning -e -q | head -2   # the daemons' logs, shipped by the collector
  bin/filefly send README.md --hosts 127.0.0.1:7181 --dest /srv/README.md --wait   # lands in var/filefly-agent/srv
  bin/deployer submit --app demo --env prod --version 1.0 --artifact URL --sha256 HEX --wait   # a release through deployer to the deploy agent
  bin/deploy status                                              # programs the deploy agent supervises
  bin/configd fleet                                              # every daemon, its health and rates
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
