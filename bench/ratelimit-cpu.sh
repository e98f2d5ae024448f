#!/usr/bin/env bash
# CPU per proxied request, split into user and system time, for nginx 1.22
# (proxy_pass + limit_req) and one or more builds of the ratelimit gateway,
# pinned as bench/ratelimit-proxy.sh pins them (proxies on CPU 0, Go with
# GOMAXPROCS=1, nginx with one worker; the nginx backend and wrk on CPU 1).
# Each target gets wrk -t1 -c50 for DURATION, RUNS rounds, interleaved; the
# figures come from /proc/PID/stat (utime, stime) over the wrk run divided
# by the requests wrk counted. rss_mb is the proxy's resident memory after
# the run.
#
#   bench/ratelimit-cpu.sh [GATEWAY_BINARY...]
#       (no argument: the gateway built from this tree; DURATION=8s RUNS=3)
#
# Use it to compare two builds side by side: the same load reaches both.
set -euo pipefail
DURATION=${DURATION:-8s}
RUNS=${RUNS:-3}
cd "$(dirname "$0")/.."
. bench/ratelimit-common.sh
bench_begin ratelimit-cpu nginx wrk taskset
BINS=("$@")
if [ ${#BINS[@]} -eq 0 ]; then
	go build -o "$TMP/ratelimit" ./ratelimit
	BINS=("$TMP/ratelimit")
fi
BACKEND=127.0.0.1:$(free_port)
NPROXY=127.0.0.1:$(free_port)
start_nginx_pair
NAMES=(nginx) URLS=("http://$NPROXY/") TPIDS=($NGINX_PROXY_PID)
i=0
for bin in "${BINS[@]}"; do
	i=$((i + 1))
	port=127.0.0.1:$(free_port)
	GOMAXPROCS=1 taskset -c 0 "$bin" --listen "127.0.0.1:$(free_port)" --proxy-listen "$port" --routes "$TMP/routes.yaml" --data-dir "$TMP/data$i" 2>"$TMP/gateway$i.log" &
	PIDS+=($!)
	NAMES+=("gateway$i:$(basename "$bin")") URLS+=("http://$port/") TPIDS+=($!)
done
for u in "${URLS[@]}"; do
	for _ in $(seq 100); do curl -fs "$u" >/dev/null 2>&1 && break; sleep 0.1; done
done
echo "# wrk -t1 -c50 -d$DURATION, proxies on CPU 0, backend and wrk on CPU 1; $RUNS rounds"
for run in $(seq "$RUNS"); do
	for t in "${!NAMES[@]}"; do
		pid=${TPIDS[$t]}
		taskset -c 1 wrk -t1 -c50 -d1s "${URLS[$t]}" >/dev/null # warm the connections
		read -r u0 s0 < <(awk '{print $14, $15}' "/proc/$pid/stat")
		load=$(cut -d' ' -f1 /proc/loadavg)
		taskset -c 1 wrk -t1 -c50 -d"$DURATION" "${URLS[$t]}" >"$TMP/wrk.out"
		read -r u1 s1 < <(awk '{print $14, $15}' "/proc/$pid/stat")
		rss=$(awk '/^VmRSS/ {print $2}' "/proc/$pid/status")
		awk -v run="$run" -v name="${NAMES[$t]}" -v load="$load" -v u=$((u1 - u0)) -v s=$((s1 - s0)) -v tick=$((1000000 / $(getconf CLK_TCK))) -v rss="$rss" \
			'/requests in/ {n=$1} /Requests\/sec/ {r=$2} END {printf "{\"run\":%d,\"target\":\"%s\",\"rps\":%s,\"user_us_per_request\":%.1f,\"sys_us_per_request\":%.1f,\"rss_mb\":%.1f,\"load_average\":%s}\n", run, name, r, u*tick/n, s*tick/n, rss/1024, load}' "$TMP/wrk.out"
	done
done
