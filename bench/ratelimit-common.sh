# Sourced by the ratelimit bench scripts (bench/ratelimit-proxy.sh,
# -cpu.sh, -latency.sh, -overload.sh): the shared prelude (tools checked,
# a temporary directory removed on exit with every process started), the
# nginx backend, the nginx proxy with limit_req the gateway is compared
# with, and the gateway's routes with the same quota, so every script
# measures the same setup. start_nginx_pair expects BACKEND and NPROXY.

# bench_begin NAME TOOL... fails naming the first missing tool, then sets
# NGINX, TMP and PIDS (processes killed on exit).
bench_begin() {
	local name=$1 b
	shift
	for b in "$@"; do
		command -v "$b" >/dev/null || [ -x "/usr/sbin/$b" ] || { echo "$name: $b not found (scripts/install-test-deps.sh)" >&2; exit 1; }
	done
	NGINX=$(command -v nginx || echo /usr/sbin/nginx)
	TMP=$(mktemp -d)
	PIDS=()
	trap bench_cleanup EXIT
}

bench_cleanup() {
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$TMP"
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

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

# start_nginx_pair writes the configurations and routes.yaml, starts the
# backend on CPU 1 and the proxy on CPU 0, and sets NGINX_PROXY_PID.
start_nginx_pair() {
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
	NGINX_PROXY_PID=$!
}
