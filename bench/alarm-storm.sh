#!/usr/bin/env bash
# Storm benchmark: ALERTS firing alerts across GROUPS groups posted to alarm
# and to Debian's Alertmanager (prometheus-alertmanager) in the same run, one
# target after the other, both with the same routing (group_by [group],
# group_wait 1s) and a webhook receiver run by bench/alarmstorm. Prints one
# JSON line per target and run (intake rate, notification latency, peak RSS,
# load average), then the medians and the ratios of alarm to Alertmanager.
# Targets alternate within each of RUNS rounds, each on a fresh data dir.
#
#   bench/alarm-storm.sh [--alerts N] [--groups N] [--batch N] [--concurrency N] [--runs N]
#
# Environment: ALERTS, STORM_GROUPS, BATCH, CONCURRENCY, RUNS (flags win),
# KEEP_TMP=1 keeps the temp dir.
set -euo pipefail

ALERTS=${ALERTS:-100000}
GROUPS_N=${STORM_GROUPS:-10000}
BATCH=${BATCH:-100}
CONCURRENCY=${CONCURRENCY:-8}
RUNS=${RUNS:-3}

usage() { sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
	case "$1" in
	--alerts) ALERTS=$2; shift 2 ;;
	--groups) GROUPS_N=$2; shift 2 ;;
	--batch) BATCH=$2; shift 2 ;;
	--concurrency) CONCURRENCY=$2; shift 2 ;;
	--runs) RUNS=$2; shift 2 ;;
	-h | --help) usage; exit 0 ;;
	*) echo "alarm-storm: unknown argument $1" >&2; usage >&2; exit 2 ;;
	esac
done

cd "$(dirname "$0")/.."
TMP=$(mktemp -d "${TMPDIR:-/tmp}/alarm-storm.XXXXXX")
PID=

log() { echo "== $*" >&2; }

stop_target() {
	[ -n "$PID" ] || return 0
	kill -TERM "$PID" 2>/dev/null || true
	for _ in $(seq 100); do
		kill -0 "$PID" 2>/dev/null || break
		sleep 0.1
	done
	kill -KILL "$PID" 2>/dev/null || true
	wait "$PID" 2>/dev/null || true
	PID=
}

cleanup() {
	stop_target
	if [ "${KEEP_TMP:-}" = 1 ]; then log "kept $TMP"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

AM=$(command -v prometheus-alertmanager || command -v alertmanager || true)
if [ -z "$AM" ]; then
	echo "alarm-storm: prometheus-alertmanager not found: apt-get install prometheus-alertmanager" >&2
	exit 1
fi

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

wait_ready() { # URL
	for _ in $(seq 300); do
		curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
		kill -0 "$PID" 2>/dev/null || { echo "alarm-storm: target exited; log:" >&2; tail -20 "$TMP"/*.log >&2; exit 1; }
		sleep 0.1
	done
	echo "alarm-storm: $1 not ready" >&2
	exit 1
}

log "building alarm and alarmstorm"
go build -o "$TMP/alarm" ./alarm
go build -o "$TMP/alarmstorm" ./bench/alarmstorm

HOOK=127.0.0.1:$(free_port)
cat >"$TMP/notify.yml" <<YAML
route:
  receiver: storm
  group_by: [group]
  group_wait: 1s
  group_interval: 1m
  repeat_interval: 4h
receivers:
- name: storm
  webhook_configs:
  - url: http://$HOOK/
YAML

results=()
run_target() { # NAME
	local name=$1 port out
	port=$(free_port)
	case "$name" in
	alarm)
		rm -rf "$TMP/alarm-data"
		"$TMP/alarm" --listen "127.0.0.1:$port" --data-dir "$TMP/alarm-data" --notify-config "$TMP/notify.yml" \
			--no-history --notify-workers 16 >"$TMP/alarm.log" 2>&1 &
		PID=$!
		wait_ready "http://127.0.0.1:$port/readyz"
		;;
	alertmanager)
		rm -rf "$TMP/am-data"
		"$AM" --config.file "$TMP/notify.yml" --storage.path "$TMP/am-data" --web.listen-address "127.0.0.1:$port" \
			--cluster.listen-address= >"$TMP/alertmanager.log" 2>&1 &
		PID=$!
		wait_ready "http://127.0.0.1:$port/-/ready"
		;;
	esac
	log "storm of $ALERTS alerts in $GROUPS_N groups to $name"
	out=$("$TMP/alarmstorm" --name "$name" --target "127.0.0.1:$port" --listen "$HOOK" --pid "$PID" \
		--alerts "$ALERTS" --groups "$GROUPS_N" --batch "$BATCH" --concurrency "$CONCURRENCY")
	out="${out%\}},\"load1\":$(cut -d' ' -f1 /proc/loadavg)}"
	echo "$out"
	results+=("$out")
	stop_target
}

for round in $(seq "$RUNS"); do
	if [ $((round % 2)) = 1 ]; then
		run_target alarm
		run_target alertmanager
	else
		run_target alertmanager
		run_target alarm
	fi
done

python3 - "${results[@]}" <<'PY'
import json, statistics, sys
runs = [json.loads(a) for a in sys.argv[1:]]
def med(target, key):
    return statistics.median(r[key] for r in runs if r["target"] == target)
a, m = "alarm", "alertmanager"
print(f"medians of {sum(r['target'] == a for r in runs)} runs each")
print(f"intake: alarm {med(a,'alerts_per_second'):.0f}/s, alertmanager {med(m,'alerts_per_second'):.0f}/s, ratio {med(a,'alerts_per_second')/med(m,'alerts_per_second'):.2f}x")
print(f"latency p50/p99: alarm {med(a,'latency_p50_seconds'):.2f}/{med(a,'latency_p99_seconds'):.2f}s, alertmanager {med(m,'latency_p50_seconds'):.2f}/{med(m,'latency_p99_seconds'):.2f}s")
print(f"peak RSS: alarm {med(a,'peak_rss_mib'):.0f} MiB, alertmanager {med(m,'peak_rss_mib'):.0f} MiB, ratio {med(a,'peak_rss_mib')/med(m,'peak_rss_mib'):.2f}")
PY
