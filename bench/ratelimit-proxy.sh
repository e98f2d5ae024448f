#!/usr/bin/env bash
# Proxy throughput with quota rules on: the ratelimit gateway and Debian's
# nginx (proxy_pass with limit_req) in front of the same nginx backend,
# small responses, keep-alive. The proxy under test is pinned to CPU 0 in
# both cases (the gateway with GOMAXPROCS=1, nginx with one worker); the
# backend and wrk share CPU 1. The quota (one zone keyed by client address,
# 1000000r/s burst=1000 nodelay) is computed for every request and refuses
# none, so both proxies do the same work.
#
# The gateway runs twice: as it ships (its own HTTP/1.1 loop serving the
# proxy listener, --fast-http=true) and with net/http's server in that
# place (--fast-http=false), the build before that loop.
#
# Two ceilings run pinned the same way: a bare Go net/http server answering
# "ok" itself (what Go's server alone costs), and a bare
# httputil.ReverseProxy in front of the same backend (Go's server and
# client with nothing of the gateway's). Each of the five is measured RUNS
# times, interleaved; the medians and the gateway-to-nginx ratio of the
# medians are printed, with the load average. Each also gets its CPU time
# per request (user + system, from /proc): on a shared machine that is
# steadier than requests a second, which other jobs on CPU 0 take from.
#
# Then the added latency: hey paced at half the gateway's throughput,
# straight to the backend, through the gateway and through nginx, RUNS
# times; the difference of the p99 latencies is what each proxy adds.
#
#   bench/ratelimit-proxy.sh   (DURATION=10s CONNS=50 RUNS=3 by default;
#                               PROFILE=FILE writes the gateway's CPU
#                               profile of its first run; RATE=N paces hey
#                               at N/s instead of half the gateway's rate)
set -euo pipefail
DURATION=${DURATION:-10s}
CONNS=${CONNS:-50}
RUNS=${RUNS:-3}
PROFILE=${PROFILE:-}
cd "$(dirname "$0")/.."
. bench/ratelimit-common.sh
bench_begin ratelimit-proxy nginx wrk hey taskset
go build -o "$TMP/ratelimit" ./ratelimit
go build -o "$TMP/ratelimitload" ./bench/ratelimitload
BACKEND=127.0.0.1:$(free_port)
NPROXY=127.0.0.1:$(free_port)
GPROXY=127.0.0.1:$(free_port)
ADMIN=127.0.0.1:$(free_port)
GPROXY2=127.0.0.1:$(free_port)
ADMIN2=127.0.0.1:$(free_port)
HELLO=127.0.0.1:$(free_port)
REVPROXY=127.0.0.1:$(free_port)

start_nginx_pair
declare -A PID
PID[nginx]=$NGINX_PROXY_PID
GOMAXPROCS=1 taskset -c 0 "$TMP/ratelimit" --listen "$ADMIN" --proxy-listen "$GPROXY" --routes "$TMP/routes.yaml" --data-dir "$TMP/data" ${PROFILE:+--pprof} 2>"$TMP/gateway.log" &
PIDS+=($!)
PID[gateway]=$!
GOMAXPROCS=1 taskset -c 0 "$TMP/ratelimit" --listen "$ADMIN2" --proxy-listen "$GPROXY2" --routes "$TMP/routes.yaml" --data-dir "$TMP/data2" --fast-http=false 2>"$TMP/gateway2.log" &
PIDS+=($!)
PID[gateway_nethttp]=$!
GOMAXPROCS=1 taskset -c 0 "$TMP/ratelimitload" hello --listen "$HELLO" &
PIDS+=($!)
PID[nethttp]=$!
GOMAXPROCS=1 taskset -c 0 "$TMP/ratelimitload" revproxy --listen "$REVPROXY" --upstream "$BACKEND" 2>/dev/null &
PIDS+=($!)
PID[revproxy]=$!
for _ in $(seq 100); do curl -fs "http://$ADMIN/readyz" >/dev/null 2>&1 && curl -fs "http://$NPROXY/" >/dev/null 2>&1 && curl -fs "http://$GPROXY2/" >/dev/null 2>&1 &&
	curl -fs "http://$HELLO/" >/dev/null 2>&1 && curl -fs "http://$REVPROXY/" >/dev/null 2>&1 && break; sleep 0.1; done

TICK_US=$((1000000 / $(getconf CLK_TCK)))
cpu_us() { awk -v t="$TICK_US" '{print ($14 + $15) * t}' "/proc/$1/stat"; }
rps() { # $1 url, $2 pid of the server: prints "requests/s CPU-µs/request"
	local before after
	before=$(cpu_us "$2")
	taskset -c 1 wrk -t1 -c"$CONNS" -d"$DURATION" --latency "$1" >"$TMP/wrk.out"
	after=$(cpu_us "$2")
	awk -v cpu=$((after - before)) '/requests in/ {n=$1} /Requests\/sec/ {r=$2} END {printf "%s %.1f\n", r, cpu/n}' "$TMP/wrk.out"
	grep -E '^ +99%' "$TMP/wrk.out" | awk '{print "#   wrk p99 " $2}' >&2
	grep -E 'Non-2xx' "$TMP/wrk.out" >&2 || true
}
loadavg() { cut -d' ' -f1 /proc/loadavg; }
median() { python3 -c 'import sys,statistics; print(statistics.median(float(v) for v in sys.argv[1:]))' "$@"; }
echo "# wrk -t1 -c$CONNS -d$DURATION, proxies on CPU 0 (Go with GOMAXPROCS=1, nginx with one worker), backend and wrk on CPU 1; $RUNS runs"
declare -A ALL US
for run in $(seq "$RUNS"); do
	for target in nginx gateway gateway_nethttp nethttp revproxy; do
		case $target in
		nginx) url=http://$NPROXY/ name="nginx 1.22 proxy_pass + limit_req" ;;
		gateway) url=http://$GPROXY/ name="ratelimit gateway + nginx-mode quota" ;;
		gateway_nethttp) url=http://$GPROXY2/ name="ratelimit gateway + nginx-mode quota, --fast-http=false" ;;
		nethttp) url=http://$HELLO/ name="ceiling: bare net/http server answering itself" ;;
		revproxy) url=http://$REVPROXY/ name="ceiling: bare httputil.ReverseProxy" ;;
		esac
		if [ "$target" = gateway ] && [ "$run" = 1 ] && [ -n "$PROFILE" ]; then
			secs=${DURATION%s}
			curl -fs -o "$PROFILE" "http://$ADMIN/debug/pprof/profile?seconds=$((secs - 2))" &
			prof=$!
		fi
		before=$(loadavg)
		read -r r us < <(rps "$url" "${PID[$target]}")
		if [ -n "${prof:-}" ]; then wait "$prof"; prof=; fi
		ALL[$target]="${ALL[$target]:-} $r"
		US[$target]="${US[$target]:-} $us"
		echo "{\"run\":$run,\"target\":\"$name\",\"rps\":$r,\"cpu_us_per_request\":$us,\"load_average\":$before}"
	done
done
N=$(median ${ALL[nginx]})
G=$(median ${ALL[gateway]})
echo "{\"median_rps\":{\"nginx\":$N,\"gateway\":$G,\"gateway_fast_http_off\":$(median ${ALL[gateway_nethttp]}),\"bare_nethttp\":$(median ${ALL[nethttp]}),\"bare_reverseproxy\":$(median ${ALL[revproxy]})}}"
echo "{\"median_cpu_us_per_request\":{\"nginx\":$(median ${US[nginx]}),\"gateway\":$(median ${US[gateway]}),\"gateway_fast_http_off\":$(median ${US[gateway_nethttp]}),\"bare_nethttp\":$(median ${US[nethttp]}),\"bare_reverseproxy\":$(median ${US[revproxy]})}}"
python3 -c "print('{\"gateway_to_nginx\":%.2f,\"gateway_to_bare_reverseproxy\":%.2f,\"cpu_per_request_nginx_to_gateway\":%.2f}' % ($G/$N, $G/$(median ${ALL[revproxy]}), $(median ${US[nginx]})/$(median ${US[gateway]})))"

HALF=${RATE:-$(python3 -c "print(int($G/2))")}
# hey paces each of its 20 workers to HALF/20 a second: at half the
# throughput latencies are short, so its closed loop hides little.
echo "# hey at $HALF/s (${RATE:+given, not }half the gateway's rate) for 10 s: backend direct, then through the gateway, then through nginx"
p99() { # $1 url
	taskset -c 1 hey -z 10s -c 20 -q $((HALF / 20)) "$1" >"$TMP/hey.out"
	grep -E '^ +\[[0-9]+\]|^Error distribution|^ +\[[0-9]+\] +Get' "$TMP/hey.out" | sed 's/^ */#   hey /' >&2 || true
	awk '/Requests\/sec/ {r=$2} /  50% in/ {p50=$3} /  99% in/ {p99=$3} END {printf "{\"rps\":%s,\"p50_ms\":%.3f,\"p99_ms\":%.3f}\n", r, p50*1000, p99*1000}' "$TMP/hey.out"
}
# RUNS rounds, direct then through the gateway then through nginx; the
# medians of the added p50 and p99, the gateway's and nginx's.
ADD50= ADD99= NADD50= NADD99=
for run in $(seq "$RUNS"); do
	D=$(p99 "http://$BACKEND/")
	echo "{\"run\":$run,\"path\":\"direct\",${D#\{}"
	GW=$(p99 "http://$GPROXY/")
	echo "{\"run\":$run,\"path\":\"gateway\",${GW#\{}"
	NG=$(p99 "http://$NPROXY/")
	echo "{\"run\":$run,\"path\":\"nginx\",${NG#\{}"
	read -r a50 a99 n50 n99 < <(python3 -c "import json;d=json.loads('$D');g=json.loads('$GW');n=json.loads('$NG');print('%.3f %.3f %.3f %.3f' % (g['p50_ms']-d['p50_ms'], g['p99_ms']-d['p99_ms'], n['p50_ms']-d['p50_ms'], n['p99_ms']-d['p99_ms']))")
	echo "{\"run\":$run,\"added_p99_ms\":$a99,\"added_p50_ms\":$a50,\"nginx_added_p99_ms\":$n99,\"nginx_added_p50_ms\":$n50,\"load_average\":$(loadavg)}"
	ADD50="$ADD50 $a50" ADD99="$ADD99 $a99" NADD50="$NADD50 $n50" NADD99="$NADD99 $n99"
done
echo "{\"median_added_p99_ms\":$(median $ADD99),\"median_added_p50_ms\":$(median $ADD50),\"nginx_median_added_p99_ms\":$(median $NADD99),\"nginx_median_added_p50_ms\":$(median $NADD50)}"
echo "# load average $(cut -d' ' -f1-3 /proc/loadavg)"
