#!/usr/bin/env bash
# Overload protection, measured: an in-repo backend of SLOTS slots x SERVICE
# (capacity SLOTS/SERVICE a second) behind the ratelimit gateway, offered
# open-loop load (latency counted from each request's intended send time).
#
#  1. with adaptive concurrency (ALGORITHM, default auto): 0.5x, 1x, 2x, 4x
#     capacity, PHASE seconds each;
#  2. the same route without a limiter, 0.5x then 4x: the collapse;
#  3. with the limiter at 2x, the backend's slots halved after 10 s: how the
#     limit moves (polled every 100 ms) and what latency costs meanwhile.
#
#  0. first, without the gateway, the backend's real capacity: 2 x SLOTS
#     requests kept in flight for MEASURE, at SLOTS and at SLOTS/2 slots
#     (sleep-based slots overrun on a busy machine, so nominal SLOTS/SERVICE
#     overstates it); the phases report goodput_of_measured against it.
#
# Prints one JSON line per phase (goodput_rps, goodput_of_measured, refused,
# p50/p99/p99.9 ms of the answered requests, the adaptive limit's range).
#
#   bench/ratelimit-overload.sh [--algorithm auto|seed|gradient2]
#
# Environment: SLOTS (10), SERVICE (10ms), PHASE (5s), MEASURE (5s), ALGORITHM,
# MIN_LIMIT (2: the limiter's floor; its default of 9, brpc's worker count,
# is above the 5 slots left in run 3, where the limit could not settle).
set -euo pipefail

SLOTS=${SLOTS:-10}
SERVICE=${SERVICE:-10ms}
PHASE=${PHASE:-5s}
MEASURE=${MEASURE:-5s}
ALGORITHM=${ALGORITHM:-auto}
MIN_LIMIT=${MIN_LIMIT:-2}
while [ $# -gt 0 ]; do
	case "$1" in
	--algorithm) ALGORITHM=$2; shift 2 ;;
	-h | --help) sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) echo "ratelimit-overload: unknown argument $1" >&2; exit 2 ;;
	esac
done

cd "$(dirname "$0")/.."
. bench/ratelimit-common.sh
bench_begin ratelimit-overload

go build -o "$TMP/ratelimit" ./ratelimit
go build -o "$TMP/ratelimitload" ./bench/ratelimitload

BACKEND=127.0.0.1:$(free_port)
ADMIN=127.0.0.1:$(free_port)
PROXY=127.0.0.1:$(free_port)
CAPACITY=$(python3 -c "import re;s='$SERVICE';v=float(re.sub('[a-z]+','',s));u=re.sub('[0-9.]+','',s);print(int($SLOTS/(v/{'ms':1e3,'s':1,'us':1e6}[u])))")

start_backend() { # $1: slots (default SLOTS); a fresh one per run: a backlog must not carry over
	if [ -n "${BE:-}" ]; then kill "$BE"; wait "$BE" 2>/dev/null || true; fi
	"$TMP/ratelimitload" backend --listen "$BACKEND" --slots "${1:-$SLOTS}" --service "$SERVICE" 2>>"$TMP/backend.log" &
	BE=$!
	PIDS+=($BE)
	for _ in $(seq 50); do curl -s -o /dev/null "http://$BACKEND/" && return; sleep 0.1; done
}

start_gateway() { # $1: adaptive section or empty
	cat >"$TMP/routes.yaml" <<YAML
upstreams:
  app:
    servers: [$BACKEND]
    timeout: 30s
$1
routes:
  - {name: app, upstream: app}
YAML
	"$TMP/ratelimit" --listen "$ADMIN" --proxy-listen "$PROXY" --routes "$TMP/routes.yaml" --data-dir "$TMP/data" 2>>"$TMP/gateway.log" &
	GW=$!
	PIDS+=($GW)
	for _ in $(seq 100); do curl -fs "http://$ADMIN/readyz" >/dev/null 2>&1 && return; sleep 0.1; done
	echo "gateway did not start" >&2; cat "$TMP/gateway.log" >&2; exit 1
}
stop_gateway() { kill "$GW"; wait "$GW" 2>/dev/null || true; }

measure() { # $1: slots; prints the JSON line, sets MEASURED
	start_backend "$1"
	local line
	line=$("$TMP/ratelimitload" capacity --url "http://$BACKEND/" --concurrency $((2 * $1)) --duration "$MEASURE")
	echo "$line" | sed "s/^{/{\"slots\":$1,/"
	MEASURED=$(echo "$line" | python3 -c 'import json,sys; print(json.load(sys.stdin)["measured_capacity_rps"])')
}

echo "# backend: $SLOTS slots x $SERVICE = $CAPACITY/s nominal; no-load latency $SERVICE; load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# 0. the backend's real capacity, without the gateway"
measure $((SLOTS / 2))
HALF_MEASURED=$MEASURED
measure "$SLOTS"
FULL_MEASURED=$MEASURED
echo "# 1. adaptive ($ALGORITHM), 0.5x 1x 2x 4x of nominal; goodput_of_measured against $FULL_MEASURED/s"
start_backend
start_gateway "    adaptive: {algorithm: $ALGORITHM, min_limit: $MIN_LIMIT}"
"$TMP/ratelimitload" load --url "http://$PROXY/" --capacity "$CAPACITY" --phases "0.5:$PHASE,1:$PHASE,2:$PHASE,4:$PHASE" --limits-url "http://$ADMIN/limits" --measured-capacity "$FULL_MEASURED" 2>"$TMP/limits1.log"
stop_gateway

echo "# 2. no limiter, 0.5x then 4x"
start_backend
start_gateway ""
"$TMP/ratelimitload" load --url "http://$PROXY/" --capacity "$CAPACITY" --phases "0.5:$PHASE,4:$PHASE" --timeout 5s --measured-capacity "$FULL_MEASURED"
stop_gateway

echo "# 3. adaptive ($ALGORITHM) at 2x, slots halved to $((SLOTS / 2)) at 15 s, after 10 s at 2x (phases: 5 s at 0.5x, then 5 s steps at 2x); goodput_of_measured against $HALF_MEASURED/s (meaningful after the cut)"
start_backend
start_gateway "    adaptive: {algorithm: $ALGORITHM, min_limit: $MIN_LIMIT}"
"$TMP/ratelimitload" load --url "http://$PROXY/" --capacity "$CAPACITY" --skip 0s --phases "0.5:5s,2:5s,2:5s,2:5s,2:5s,2:5s" \
	--limits-url "http://$ADMIN/limits" --halve-url "http://$BACKEND" --halve-at 15s --halve-to $((SLOTS / 2)) --measured-capacity "$HALF_MEASURED" 2>"$TMP/limits3.log"
stop_gateway
echo "# adaptive limit every 100 ms in run 3:"
cat "$TMP/limits3.log"
echo "# load average $(cut -d' ' -f1-3 /proc/loadavg)"
