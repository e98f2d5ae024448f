#!/usr/bin/env bash
# Log shipping throughput: one file of realistic access-log lines shipped
# into a kfake broker running as its own process, by the collector, by
# kcat -P (librdkafka) and by rsyslog (imfile + omkafka), each into a fresh
# broker. Prints MB/s, lines/s, CPU seconds per GiB and peak RSS of each
# shipper, per run and (with RUNS > 1) the median of each column.
#
# The producers are set alike: zstd at level 1, acks from all in-sync
# replicas, idempotent, BATCH_BYTES record batches (default 524288, the
# collector's default), 5 ms linger. What differs:
# the collector ships a JSON event per line (about twice the line's bytes)
# unless COLLECTOR_FLAGS says --logs-format line, and it bounds what is in
# flight to --logs-buffer-bytes (4 MiB) where librdkafka may buffer up to
# 1 GiB (queue.buffering.max.kbytes).
#
# Usage: bench/collector-logs.sh [bytes]   (default 1073741824 = 1 GiB)
# COLLECTOR_FLAGS adds flags to the collector's command line, e.g.
# COLLECTOR_FLAGS="--kafka-batch-bytes 262144".
# RUNS (default 1) repeats each shipper, interleaved; SHIPPERS (default
# "collector kcat rsyslog") picks which run, among them also collector_line
# (the collector with --logs-format line), collector_pK and
# collector_line_pK (either with --kafka-producers K, K = 1 to 4); with
# BASELINE_COLLECTOR=BINARY
# the shipper "baseline" runs that collector build the same way.
# SEGMENT_BYTES (default 8388608) is the broker's log.segment.bytes: kfake
# keeps a segment in one buffer that doubles as it grows, and with its
# 100 MiB default the broker's CPU grew out of proportion to the bytes it
# took (1.0-2.4 CPU s/GiB for the collector's 266 MB against 0.6-0.8 for
# kcat's 229 MB; 0.75-0.97 and 0.58-0.73 with 8 MiB segments).
# SEGMENT_BYTES=0 keeps kfake's default.
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE=${1:-1073741824}
BATCH_BYTES=${BATCH_BYTES:-524288}
SEGMENT_BYTES=${SEGMENT_BYTES:-8388608}
WORK=$(mktemp -d)
PIDS=()
cleanup() {
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

go build -o "$WORK/collector" ./collector
go build -o "$WORK/kfake" ./internal/tools/kfake
go build -o "$WORK/tool" ./bench/collector-logs

LOG="$WORK/access.log"
LINES=$("$WORK/tool" gen --bytes "$SIZE" --out "$LOG")
BYTES=$(stat -c %s "$LOG")
echo "file: $BYTES bytes, $LINES lines"
HZ=$(getconf CLK_TCK)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

start_kafka() {
	KPORT=$(free_port)
	"$WORK/kfake" --listen "127.0.0.1:$KPORT" --topics logs:3 --segment-bytes "$SEGMENT_BYTES" >"$WORK/kfake.out" 2>&1 &
	KPID=$!
	PIDS+=($KPID)
	until [ -s "$WORK/kfake.out" ]; do sleep 0.1; done
	BROKER="127.0.0.1:$KPORT"
}
# stop_kafka also prints the broker's own CPU per GiB: it shares the
# machine's cores with the shipper.
stop_kafka() {
	awk -v cpu="$(proc_cpu "$KPID")" -v bytes="$BYTES" 'BEGIN { printf "  (kfake: %.1f CPU s/GiB)\n", cpu / (bytes / 1073741824) }'
	kill "$KPID"
	wait "$KPID" 2>/dev/null || true
}

# report NAME SECONDS CPU_SECONDS PEAK_RSS_KB
report() {
	awk -v name="$1" -v s="$2" -v cpu="$3" -v rss="$4" -v bytes="$BYTES" -v lines="$LINES" 'BEGIN {
		printf "%-10s %7.1f s  %7.1f MB/s  %9.0f lines/s  %6.1f CPU s/GiB  peak RSS %6.1f MB\n",
			name, s, bytes / s / 1e6, lines / s, cpu / (bytes / 1073741824), rss / 1024 }' | tee -a "$WORK/results"
}

proc_cpu() { awk -v hz="$HZ" '{printf "%.2f", ($14 + $15) / hz}' "/proc/$1/stat"; }
proc_hwm() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status"; }

# run_collector [NAME BINARY]
run_collector() {
	local name=${1:-collector} bin=${2:-$WORK/collector} extra=${3:-}
	start_kafka
	CPORT=$(free_port)
	rm -rf "$WORK/collector-data"
	cat >"$WORK/collector.yaml" <<YAML
logs:
  inputs:
    - name: bench
      paths: ["$LOG"]
      topic: logs
      key: none
YAML
	t0=$(date +%s.%N)
	# shellcheck disable=SC2086
	"$bin" --listen "127.0.0.1:$CPORT" --data-dir "$WORK/collector-data" --config "$WORK/collector.yaml" \
		--host-metrics=false --graphite-listen "" --statsd-listen "" --transfer 127.0.0.1:1 \
		--kafka-brokers "$BROKER" --kafka-compression zstd --kafka-linger 5ms --kafka-batch-bytes "$BATCH_BYTES" $extra ${COLLECTOR_FLAGS:-} 2>"$WORK/collector.log" &
	CPID=$!
	PIDS+=($CPID)
	"$WORK/tool" wait --brokers "$BROKER" --records "$LINES" >/dev/null
	t1=$(date +%s.%N)
	report "$name" "$(echo "$t1 - $t0" | bc)" "$(proc_cpu $CPID)" "$(proc_hwm $CPID)"
	kill "$CPID"
	wait "$CPID" 2>/dev/null || true
	stop_kafka
}

# baseline: the collector built from BASELINE_COLLECTOR (e.g. an earlier
# commit's build), for before/after figures from one run.
run_baseline() { run_collector baseline "$BASELINE_COLLECTOR"; }

# collector_line: the collector with --logs-format line (the line as the
# record's value, its metadata in headers), reported as coll-line.
run_collector_line() { run_collector coll-line "$WORK/collector" "--logs-format line"; }

# collector_pK and collector_line_pK (K = 1 to 4): the collector with
# --kafka-producers K, reported as coll-pK and line-pK.
for k in 1 2 3 4; do
	eval "run_collector_p$k() { run_collector coll-p$k \"\$WORK/collector\" \"--kafka-producers $k\"; }"
	eval "run_collector_line_p$k() { run_collector line-p$k \"\$WORK/collector\" \"--logs-format line --kafka-producers $k\"; }"
done

# kcat -P (librdkafka), set like the collector's producer: zstd level 1,
# acks=all, idempotent, BATCH_BYTES batches, 5 ms linger.
run_kcat() {
	if ! command -v kcat >/dev/null; then
		echo "kcat: not installed (apt-get install kcat)"
		return
	fi
	start_kafka
	t0=$(date +%s.%N)
	/usr/bin/time -f "%U %S %M" -o "$WORK/kcat.time" kcat -P -b "$BROKER" -t logs -z zstd -X compression.level=1 \
		-X acks=all -X enable.idempotence=true -X batch.size="$BATCH_BYTES" -X linger.ms=5 -l "$LOG"
	"$WORK/tool" wait --brokers "$BROKER" --records "$LINES" >/dev/null
	t1=$(date +%s.%N)
	read -r u s m <"$WORK/kcat.time"
	report kcat "$(echo "$t1 - $t0" | bc)" "$(echo "$u + $s" | bc)" "$m"
	stop_kafka
}

# rsyslog imfile + omkafka
run_rsyslog() {
	if ! command -v rsyslogd >/dev/null || [ ! -e /usr/lib/x86_64-linux-gnu/rsyslog/omkafka.so ]; then
		echo "rsyslog: not installed (apt-get install rsyslog rsyslog-kafka)"
		return
	fi
	start_kafka
	rm -rf "$WORK/rsyslog"
	mkdir -p "$WORK/rsyslog"
	cat >"$WORK/rsyslog.conf" <<CONF
global(workDirectory="$WORK/rsyslog" maxMessageSize="64k")
module(load="imfile")
module(load="omkafka")
template(name="line" type="string" string="%msg%")
ruleset(name="ship" queue.type="LinkedList" queue.size="100000") {
	action(type="omkafka" broker=["$BROKER"] topic="logs" template="line"
		confParam=["compression.codec=zstd", "compression.level=1", "acks=all", "enable.idempotence=true",
			"batch.size=$BATCH_BYTES", "linger.ms=5"])
}
input(type="imfile" File="$LOG" Tag="bench" ruleset="ship" freshStartTail="off")
CONF
	t0=$(date +%s.%N)
	rsyslogd -n -f "$WORK/rsyslog.conf" -i "$WORK/rsyslog.pid" 2>"$WORK/rsyslog.log" &
	RPID=$!
	PIDS+=($RPID)
	"$WORK/tool" wait --brokers "$BROKER" --records "$LINES" --timeout 20m >/dev/null
	t1=$(date +%s.%N)
	report rsyslog "$(echo "$t1 - $t0" | bc)" "$(proc_cpu $RPID)" "$(proc_hwm $RPID)"
	kill "$RPID"
	wait "$RPID" 2>/dev/null || true
	stop_kafka
}

echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
RUNS=${RUNS:-1}
for run in $(seq "$RUNS"); do
	for shipper in ${SHIPPERS:-collector kcat rsyslog}; do
		"run_$shipper"
	done
done
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
if [ "$RUNS" -gt 1 ]; then
	echo "medians of $RUNS runs:"
	for shipper in ${SHIPPERS:-collector kcat rsyslog}; do
		case $shipper in
		collector_line) shipper=coll-line ;;
		collector_line_p*) shipper=line-${shipper#collector_line_} ;;
		collector_p*) shipper=coll-${shipper#collector_} ;;
		esac
		grep "^$shipper " "$WORK/results" | awk -v name="$shipper" '
			{ s[NR] = $2; mbs[NR] = $4; lps[NR] = $6; cpu[NR] = $8; rss[NR] = $13 }
			function med(a, n,   i, j, t) {
				for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
				return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
			}
			END { if (NR) printf "%-10s %7.1f s  %7.1f MB/s  %9.0f lines/s  %6.1f CPU s/GiB  peak RSS %6.1f MB\n",
				name, med(s, NR), med(mbs, NR), med(lps, NR), med(cpu, NR), med(rss, NR) }'
	done
fi
