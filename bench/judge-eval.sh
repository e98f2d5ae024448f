#!/usr/bin/env bash
# judge evaluation benchmark, side by side with Debian's Prometheus.
#
# Workload: METRICS metric names × HOSTS endpoints series (default 500 × 200
# = 100,000), two strategies per metric (1,000 in all): all(#3) > 90 and
# avg(#5) > 99. Prometheus gets the equivalent alerting rules
# (min_over_time over 3 steps > 90, avg_over_time over 5 steps > 99) with
# an evaluation interval of one step, and the same points by remote write.
#
# 1. Paced, both at once: ROUNDS rounds at one round per second (one point
#    per series each), Prometheus evaluating its rules every second, so both
#    evaluate every point once per strategy. judge's points are 30 s apart
#    in their timestamps (open-falcon's smallest step), Prometheus's carry
#    the wall clock. Prints each process's CPU seconds per million points
#    and how many alerts each has firing at the end.
# 2. judge alone, unpaced: points per second over HTTP (JSON decoding
#    included) and judge's resident memory per series.
#
#   bench/judge-eval.sh [--metrics N] [--hosts N] [--rounds N]
#
# Environment: METRICS, HOSTS, ROUNDS, FAST_ROUNDS, KEEP_TMP=1.
set -euo pipefail

METRICS=${METRICS:-500}
HOSTS=${HOSTS:-200}
ROUNDS=${ROUNDS:-30}
FAST_ROUNDS=${FAST_ROUNDS:-20}

usage() { sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
	case "$1" in
	--metrics) METRICS=$2; shift 2 ;;
	--hosts) HOSTS=$2; shift 2 ;;
	--rounds) ROUNDS=$2; shift 2 ;;
	-h | --help) usage; exit 0 ;;
	*) echo "judge-eval: unknown argument $1" >&2; usage >&2; exit 2 ;;
	esac
done

cd "$(dirname "$0")/.."
TMP=$(mktemp -d "${TMPDIR:-/tmp}/judge-eval.XXXXXX")
PIDS=()
log() { echo "== $*" >&2; }
cleanup() {
	for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
	for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
	if [ "${KEEP_TMP:-}" = 1 ]; then log "kept $TMP"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

PROM=$(command -v prometheus || true)
[ -n "$PROM" ] || { echo "judge-eval: prometheus not found: apt-get install prometheus" >&2; exit 1; }

log "building judge and judgeload"
go build -o "$TMP/judge" ./judge
go build -o "$TMP/judgeload" ./bench/judgeload

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# cpu_ticks PID: user+system clock ticks so far.
cpu_ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
wait_http() {
	for _ in $(seq 300); do
		curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
		sleep 0.1
	done
	echo "judge-eval: $1 not ready" >&2
	exit 1
}

{
	echo "strategies:"
	for ((m = 0; m < METRICS; m++)); do
		printf -- '- name: m%d_warn\n  metric: bench.m%d\n  condition: all(#3) > 90\n' "$m" "$m"
		printf -- '- name: m%d_crit\n  metric: bench.m%d\n  condition: avg(#5) > 99\n' "$m" "$m"
	done
} >"$TMP/strategies.yaml"
{
	echo "groups:"
	echo "- name: bench"
	echo "  interval: 1s"
	echo "  rules:"
	for ((m = 0; m < METRICS; m++)); do
		printf '  - alert: m%d_warn\n    expr: min_over_time(bench_m%d[3s]) > 90\n' "$m" "$m"
		printf '  - alert: m%d_crit\n    expr: avg_over_time(bench_m%d[5s]) > 99\n' "$m" "$m"
	done
} >"$TMP/rules.yml"
printf 'global:\n  evaluation_interval: 1s\nrule_files: [%s]\n' "$TMP/rules.yml" >"$TMP/prometheus.yml"

JPORT=$(free_port)
PPORT=$(free_port)
"$TMP/judge" --listen "127.0.0.1:$JPORT" --data-dir "$TMP/judge-data" --strategies "$TMP/strategies.yaml" \
	--log-level warn >"$TMP/judge.log" 2>&1 &
JPID=$!
PIDS+=("$JPID")
"$PROM" --config.file "$TMP/prometheus.yml" --storage.tsdb.path "$TMP/prom-data" \
	--web.listen-address "127.0.0.1:$PPORT" --web.enable-remote-write-receiver >"$TMP/prometheus.log" 2>&1 &
PPID_=$!
PIDS+=("$PPID_")
wait_http "http://127.0.0.1:$JPORT/readyz"
wait_http "http://127.0.0.1:$PPORT/-/ready"
sleep 2

HZ=$(getconf CLK_TCK)
POINTS=$((METRICS * HOSTS * ROUNDS))
log "paced run: $ROUNDS rounds of $((METRICS * HOSTS)) points to both, one round per second"
j0=$(cpu_ticks "$JPID")
p0=$(cpu_ticks "$PPID_")
"$TMP/judgeload" --judge "127.0.0.1:$JPORT" --prom "127.0.0.1:$PPORT" --metrics "$METRICS" --hosts "$HOSTS" \
	--rounds "$ROUNDS" --rate 1
sleep 3 # the last rule evaluations
j1=$(cpu_ticks "$JPID")
p1=$(cpu_ticks "$PPID_")
awk -v j=$((j1 - j0)) -v p=$((p1 - p0)) -v hz="$HZ" -v n="$POINTS" 'BEGIN {
	printf "paced: points=%d judge_cpu_s=%.2f prometheus_cpu_s=%.2f\n", n, j/hz, p/hz
	printf "paced: judge_cpu_s_per_Mpoints=%.3f prometheus_cpu_s_per_Mpoints=%.3f ratio=%.1f\n", j/hz/(n/1e6), p/hz/(n/1e6), (j > 0 ? p/j : 0)
}'
# What each did: judge's firing transitions; Prometheus's rule evaluations.
JFIRED=$(curl -fsS "http://127.0.0.1:$JPORT/metrics" | awk '/^opskit_judge_transitions_total\{status="firing"/ {s += $2} END {print s+0}' || true)
PEVALS=$(curl -fsS "http://127.0.0.1:$PPORT/metrics" | awk '/^prometheus_rule_evaluations_total/ {s += $2} END {print s+0}' || true)
echo "paced: judge_firing_transitions=$JFIRED prometheus_rule_evaluations=$PEVALS"

kill -TERM "$PPID_"
wait "$PPID_" 2>/dev/null || true
log "fast run: judge alone, $FAST_ROUNDS rounds as fast as it takes them"
j0=$(cpu_ticks "$JPID")
"$TMP/judgeload" --judge "127.0.0.1:$JPORT" --metrics "$METRICS" --hosts "$HOSTS" --rounds "$FAST_ROUNDS" \
	--conns 2 --batch 10000 | sed 's/^/fast: /'
j1=$(cpu_ticks "$JPID")
awk -v j=$((j1 - j0)) -v hz="$HZ" -v n=$((METRICS * HOSTS * FAST_ROUNDS)) 'BEGIN {
	printf "fast: judge_cpu_s_per_Mpoints=%.3f (HTTP and JSON decoding included)\n", j/hz/(n/1e6)
}'
RSS=$(rss_kb "$JPID")
awk -v r="$RSS" -v s=$((METRICS * HOSTS)) 'BEGIN { printf "judge: rss_mb=%.1f rss_bytes_per_series=%.0f (whole process)\n", r/1024, r*1024/s }'
