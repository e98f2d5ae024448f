#!/usr/bin/env bash
# Proxy throughput with quota rules on: the ratelimit gateway and Debian's
# nginx (proxy_pass with limit_req) in front of the same nginx backend,
# small responses, keep-alive. The proxy under test is pinned to CPU 0 in
# both cases (the gateway with GOMAXPROCS=1, nginx with one worker); the
# backend and wrk share CPU 1. The quota (one zone keyed by client address,
# 1000000r/s burst=1000 nodelay) is computed for every request and refuses
# none, so both proxies do the same work.
#
# Then the added latency: hey paced at half the gateway's throughput,
# through the gateway and straight to the backend; the difference of the
# p99 latencies is what the gateway adds.
#
#   bench/ratelimit-proxy.sh        (DURATION=10s CONNS=50 by default)
set -euo pipefail
DURATION=${DURATION:-10s}
CONNS=${CONNS:-50}
cd "$(dirname "$0")/.."
for b in nginx wrk hey taskset; do
	command -v $b >/dev/null || [ -x /usr/sbin/$b ] || { echo "ratelimit-proxy: $b not found (scripts/install-test-deps.sh)" >&2; exit 1; }
done
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
TMP=$(mktemp -d)
PIDS=()
cleanup() {
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$TMP"
}
trap cleanup EXIT
go build -o "$TMP/ratelimit" ./ratelimit
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
BACKEND=127.0.0.1:$(free_port)
NPROXY=127.0.0.1:$(free_port)
GPROXY=127.0.0.1:$(free_port)
ADMIN=127.0.0.1:$(free_port)

nginx_conf() { # $1 name, $2 http block body
	mkdir -p "$TMP/$1"
	cat >"$TMP/$1/nginx.conf" <<CONF
daemon off;
master_process off;
worker_processes 1;
pid $TMP/$1/nginx.pid;
error_log $TMP/$1/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $TMP/$1/body;
  proxy_temp_path $TMP/$1/proxy;
  fastcgi_temp_path $TMP/$1/fastcgi;
  uwsgi_temp_path $TMP/$1/uwsgi;
  scgi_temp_path $TMP/$1/scgi;
  keepalive_requests 1000000;
$2
}
CONF
}
nginx_conf backend "  server { listen $BACKEND; location / { return 200 \"ok\\n\"; } }"
nginx_conf proxy "  limit_req_zone \$binary_remote_addr zone=q:10m rate=1000000r/s;
  upstream backend { server $BACKEND; keepalive 64; }
  server {
    listen $NPROXY;
    location / {
      limit_req zone=q burst=1000 nodelay;
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection \"\";
    }
  }"
cat >"$TMP/routes.yaml" <<YAML
zones:
  q: {rate: 1000000r/s, key: ip, memory: 10MB}
upstreams:
  backend: {servers: [$BACKEND]}
routes:
  - {name: all, upstream: backend, limits: [{zone: q, burst: 1000, nodelay: true}]}
YAML

taskset -c 1 "$NGINX" -p "$TMP/backend" -c "$TMP/backend/nginx.conf" -e "$TMP/backend/error.log" &
PIDS+=($!)
taskset -c 0 "$NGINX" -p "$TMP/proxy" -c "$TMP/proxy/nginx.conf" -e "$TMP/proxy/error.log" &
PIDS+=($!)
GOMAXPROCS=1 taskset -c 0 "$TMP/ratelimit" --listen "$ADMIN" --proxy-listen "$GPROXY" --routes "$TMP/routes.yaml" --data-dir "$TMP/data" 2>"$TMP/gateway.log" &
PIDS+=($!)
for _ in $(seq 100); do curl -fs "http://$ADMIN/readyz" >/dev/null 2>&1 && curl -fs "http://$NPROXY/" >/dev/null 2>&1 && break; sleep 0.1; done

rps() { # $1 url
	taskset -c 1 wrk -t1 -c"$CONNS" -d"$DURATION" --latency "$1" >"$TMP/wrk.out"
	awk '/Requests\/sec/ {print $2}' "$TMP/wrk.out"
	grep -E '^ +99%' "$TMP/wrk.out" | awk '{print "#   wrk p99 " $2}' >&2
	grep -E 'Non-2xx' "$TMP/wrk.out" >&2 || true
}
echo "# wrk -t1 -c$CONNS -d$DURATION, proxy on CPU 0, backend and wrk on CPU 1"
N=$(rps "http://$NPROXY/")
echo "{\"target\":\"nginx 1.22 proxy_pass + limit_req\",\"rps\":$N}"
G=$(rps "http://$GPROXY/")
echo "{\"target\":\"ratelimit gateway + nginx-mode quota\",\"rps\":$G}"
python3 -c "print('{\"gateway_to_nginx\":%.2f}' % ($G/$N))"

HALF=$(python3 -c "print(int($G/2))")
# hey paces each of its 20 workers to HALF/20 a second: at half the
# throughput latencies are short, so its closed loop hides little.
echo "# hey at $HALF/s (half the gateway's rate) for 10 s: backend direct, then through the gateway"
p99() { # $1 url
	taskset -c 1 hey -z 10s -c 20 -q $((HALF / 20)) "$1" >"$TMP/hey.out"
	awk '/Requests\/sec/ {r=$2} /  50% in/ {p50=$3} /  99% in/ {p99=$3} END {printf "{\"rps\":%s,\"p50_ms\":%.3f,\"p99_ms\":%.3f}\n", r, p50*1000, p99*1000}' "$TMP/hey.out"
}
D=$(p99 "http://$BACKEND/")
echo "{\"path\":\"direct\",${D#\{}"
GW=$(p99 "http://$GPROXY/")
echo "{\"path\":\"gateway\",${GW#\{}"
python3 -c "import json;d=json.loads('$D');g=json.loads('$GW');print('{\"added_p99_ms\":%.3f,\"added_p50_ms\":%.3f}' % (g['p99_ms']-d['p99_ms'], g['p50_ms']-d['p50_ms']))"
