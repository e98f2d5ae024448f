#!/usr/bin/env bash
# StatsD intake rate: datagrams per second sent over loopback to the
# collector, and how many it counted (loss = sent - counted).
#
# Usage: bench/collector-statsd.sh [datagrams] [senders]   (default 2000000 2)
#        RATE=500000 bench/collector-statsd.sh   paces the senders
set -euo pipefail
cd "$(dirname "$0")/.."
DATAGRAMS=${1:-2000000}
SENDERS=${2:-2}
WORK=$(mktemp -d)
PIDS=()
cleanup() {
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

go build -o "$WORK/collector" ./collector
go build -o "$WORK/sender" ./bench/collector-statsd

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
CPORT=$(free_port)
SPORT=$(free_port)
# No transfer: the aggregated points wait in the spool, which does not
# matter for the intake rate.
"$WORK/collector" --listen "127.0.0.1:$CPORT" --data-dir "$WORK/data" --host-metrics=false \
	--transfer 127.0.0.1:1 --graphite-listen "" --statsd-listen "127.0.0.1:$SPORT" --statsd-interval 1s \
	--statsd-readers "${READERS:-2}" 2>"$WORK/collector.log" &
CPID=$!
PIDS+=($CPID)
until curl -fsS "http://127.0.0.1:$CPORT/readyz" >/dev/null 2>&1; do sleep 0.1; done

ticks() { awk '{print $14 + $15}' "/proc/$CPID/stat"; }
t0=$(ticks)
"$WORK/sender" --addr "127.0.0.1:$SPORT" --metrics "http://127.0.0.1:$CPORT/metrics" \
	--datagrams "$DATAGRAMS" --senders "$SENDERS" --rate "${RATE:-0}" | tee "$WORK/sender.out"
t1=$(ticks)
# The collector's own CPU for the run tells its capacity apart from the
# sender's: datagrams it can take per second of one core.
received=$(sed -n 's/.*received=\([0-9]*\).*/\1/p' "$WORK/sender.out")
awk -v t0="$t0" -v t1="$t1" -v hz="$(getconf CLK_TCK)" -v n="$received" 'BEGIN {
	cpu = (t1 - t0) / hz
	per = 0
	if (cpu > 0) per = n / cpu
	printf "collector_cpu=%.2fs datagrams_per_collector_cpu_second=%.0f\n", cpu, per
}'
echo "load average during the run: $(cut -d' ' -f1-3 /proc/loadavg)"
