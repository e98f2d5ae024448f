#!/usr/bin/env bash
# Where the gateway's added p99 at half rate comes from. hey paces 20
# connections at RATE a second (default 20000, about half the gateway's
# throughput in bench/ratelimit-proxy.sh) for DURATION, RUNS rounds,
# interleaved, to:
#
#   direct         the nginx backend itself
#   nginx          nginx 1.22 proxy_pass + limit_req, one worker on CPU 0
#   gateway        the gateway as it ships (GOMAXPROCS=1 on CPU 0)
#   gateway_nogc   the same with GOGC=off (no collection during the run)
#   gateway_2cpu   the same with GOMAXPROCS=2 and no pinning (it may run
#                  on the CPU hey and the backend use)
#
# Each line gives p50 and p99 (hey's are to the 0.1 ms) and the added p99 against the direct run of the same
# round; the gateway's runs also give the collections the runtime made
# during the run (from /metrics), so GC pauses can be told from the rest.
#
#   bench/ratelimit-latency.sh [GATEWAY_BINARY]   (RATE=20000 DURATION=10s RUNS=3)
set -euo pipefail
RATE=${RATE:-20000}
DURATION=${DURATION:-10s}
RUNS=${RUNS:-3}
cd "$(dirname "$0")/.."
. bench/ratelimit-common.sh
bench_begin ratelimit-latency nginx hey taskset curl python3
BIN=${1:-}
if [ -z "$BIN" ]; then
	go build -o "$TMP/ratelimit" ./ratelimit
	BIN=$TMP/ratelimit
fi
BACKEND=127.0.0.1:$(free_port)
NPROXY=127.0.0.1:$(free_port)
start_nginx_pair
declare -A URL ADMIN
URL[direct]=http://$BACKEND/ URL[nginx]=http://$NPROXY/
start_gateway() { # $1 name, then the command prefix
	local name=$1 port admin
	shift
	port=127.0.0.1:$(free_port) admin=127.0.0.1:$(free_port)
	"$@" "$BIN" --listen "$admin" --proxy-listen "$port" --routes "$TMP/routes.yaml" --data-dir "$TMP/$name" 2>"$TMP/$name.log" &
	PIDS+=($!)
	URL[$name]=http://$port/ ADMIN[$name]=$admin
}
start_gateway gateway env GOMAXPROCS=1 taskset -c 0
start_gateway gateway_nogc env GOMAXPROCS=1 GOGC=off taskset -c 0
start_gateway gateway_2cpu env GOMAXPROCS=2
TARGETS=(direct nginx gateway gateway_nogc gateway_2cpu)
for t in "${TARGETS[@]}"; do
	for _ in $(seq 100); do curl -fs "${URL[$t]}" >/dev/null 2>&1 && break; sleep 0.1; done
done
gcs() { curl -fs "http://${ADMIN[$1]}/metrics" | awk '/^go_gc_duration_seconds_count/ {print $2}'; }
median() { python3 -c 'import sys,statistics; print(round(statistics.median(float(v) for v in sys.argv[1:]), 3))' "$@"; }
echo "# hey -c 20 at $RATE/s for $DURATION; direct, nginx and the gateways on CPU 0 (gateway_2cpu unpinned), hey and the backend on CPU 1; $RUNS rounds"
declare -A ADDED
for run in $(seq "$RUNS"); do
	direct99=
	for t in "${TARGETS[@]}"; do
		load=$(cut -d' ' -f1 /proc/loadavg)
		g0=
		[ -n "${ADMIN[$t]:-}" ] && g0=$(gcs "$t")
		taskset -c 1 hey -z "$DURATION" -c 20 -q $((RATE / 20)) "${URL[$t]}" >"$TMP/hey.out"
		gc=null
		[ -n "$g0" ] && gc=$(($(gcs "$t") - g0))
		read -r rps p50 p99 < <(awk '/Requests\/sec/ {r=$2} /  50% in/ {a=$3} /  99% in/ {b=$3} END {printf "%s %.3f %.3f\n", r, a*1000, b*1000}' "$TMP/hey.out")
		if [ "$t" = direct ]; then direct99=$p99; fi
		added=$(python3 -c "print(round($p99 - $direct99, 3))")
		ADDED[$t]="${ADDED[$t]:-} $added"
		echo "{\"run\":$run,\"target\":\"$t\",\"rps\":$rps,\"p50_ms\":$p50,\"p99_ms\":$p99,\"added_p99_ms\":$added,\"gc_cycles\":$gc,\"load_average\":$load}"
	done
done
printf '{"median_added_p99_ms":{'
sep=
for t in "${TARGETS[@]:1}"; do printf '%s"%s":%s' "$sep" "$t" "$(median ${ADDED[$t]})"; sep=,; done
echo '}}'
echo "# load average $(cut -d' ' -f1-3 /proc/loadavg)"
