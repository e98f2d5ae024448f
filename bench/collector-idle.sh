#!/usr/bin/env bash
# Idle cost of the collector: CPU per interval and resident memory of a
# collector collecting host metrics every 10 s and relaying them to a local
# transfer, with nothing else to do.
#
# Usage: bench/collector-idle.sh [seconds]   (default 120; env INTERVAL=10s)
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-120}
INTERVAL=${INTERVAL:-10s}
WORK=$(mktemp -d)
PIDS=()
cleanup() {
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

go build -o "$WORK/collector" ./collector
go build -o "$WORK/transfer" ./transfer

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
TPORT=$(free_port)
CPORT=$(free_port)
"$WORK/transfer" --listen "127.0.0.1:$TPORT" --graphite-listen "" --data-dir "$WORK/transfer-data" 2>"$WORK/transfer.log" &
PIDS+=($!)
"$WORK/collector" --listen "127.0.0.1:$CPORT" --data-dir "$WORK/collector-data" --interval "$INTERVAL" \
	--transfer "127.0.0.1:$TPORT" --graphite-listen "127.0.0.1:0" --statsd-listen "127.0.0.1:0" 2>"$WORK/collector.log" &
CPID=$!
PIDS+=($CPID)

until curl -fsS "http://127.0.0.1:$CPORT/readyz" >/dev/null 2>&1; do sleep 0.1; done
sleep 15 # warm up: first rounds, first relay

ticks() { awk '{print $14 + $15}' "/proc/$CPID/stat"; }
metric() { curl -fsS "http://127.0.0.1:$CPORT/metrics" | awk -v m="$1" '$1 == m {print $2}'; }
HZ=$(getconf CLK_TCK)
t0=$(ticks); r0=$(metric opskit_collector_host_rounds_total); s0=$(date +%s.%N)
sleep "$DURATION"
t1=$(ticks); r1=$(metric opskit_collector_host_rounds_total); s1=$(date +%s.%N)
rss_kb=$(awk '/^VmRSS:/ {print $2}' "/proc/$CPID/status")
hwm_kb=$(awk '/^VmHWM:/ {print $2}' "/proc/$CPID/status")
points=$(metric opskit_collector_host_points_total)
sent=$(metric opskit_collector_relay_sent_points_total)

awk -v t0="$t0" -v t1="$t1" -v hz="$HZ" -v s0="$s0" -v s1="$s1" -v r0="$r0" -v r1="$r1" \
	-v rss="$rss_kb" -v hwm="$hwm_kb" -v points="$points" -v sent="$sent" -v interval="$INTERVAL" 'BEGIN {
	cpu = (t1 - t0) / hz; wall = s1 - s0; rounds = r1 - r0
	per_round = 0
	if (rounds > 0) per_round = 1000 * cpu / rounds
	printf "interval=%s wall=%.0fs rounds=%d cpu=%.2fs cpu_of_one_core=%.3f%% cpu_per_round=%.1fms rss=%.1fMB rss_peak=%.1fMB host_points=%d relayed=%d\n",
		interval, wall, rounds, cpu, 100 * cpu / wall, per_round, rss / 1024, hwm / 1024, points, sent
}'
echo "load average during the run: $(cut -d' ' -f1-3 /proc/loadavg)"
