#!/usr/bin/env bash
# transfer as a ring, on this machine: the intake rate of one node, then of
# three nodes on loopback with the same load spread over them (the cost of
# sharding: every point of another node's share is spooled, forwarded and
# stored there), then the drain rate of a spool after one node's outage.
# Finally the in-process simulation of a 20-node ring with 30M series.
#
#   bench/transfer-cluster.sh [--series N] [--points N] [--conns N] [--sim-series N]
#
# Environment: SERIES (10000), POINTS (60), CONNS (6), SIM_SERIES
# (30000000), TRANSFER_BIN (default: build into the temp dir). KEEP_TMP=1
# keeps the temp dir. All three nodes and the load generator share this
# machine's cores: the figures are a floor, not a cluster's capacity.
set -euo pipefail

SERIES=${SERIES:-10000}
POINTS=${POINTS:-60}
CONNS=${CONNS:-6}
SIM_SERIES=${SIM_SERIES:-30000000}
while [ $# -gt 0 ]; do
	case "$1" in
	--series) SERIES=$2; shift 2 ;;
	--points) POINTS=$2; shift 2 ;;
	--conns) CONNS=$2; shift 2 ;;
	--sim-series) SIM_SERIES=$2; shift 2 ;;
	-h | --help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) echo "transfer-cluster: unknown argument $1" >&2; exit 2 ;;
	esac
done

cd "$(dirname "$0")/.."
TMP=$(mktemp -d "${TMPDIR:-/tmp}/transfer-cluster.XXXXXX")
PIDS=()
log() { echo "== $*" >&2; }
cleanup() {
	for pid in "${PIDS[@]:-}"; do [ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null || true; done
	wait 2>/dev/null || true
	[ "${KEEP_TMP:-}" = 1 ] && echo "kept $TMP" >&2 || rm -rf "$TMP"
}
trap cleanup EXIT

BIN=${TRANSFER_BIN:-$TMP/transfer}
[ -x "$BIN" ] || go build -o "$BIN" ./transfer
TOOL=$TMP/transfer-cluster
go build -o "$TOOL" ./bench/transfer-cluster

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_ready() { for _ in $(seq 300); do curl -fs "http://$1/readyz" >/dev/null 2>&1 && return 0; sleep 0.1; done; echo "$1 not ready" >&2; exit 1; }

# start NAME ADDR DIR [ARGS...]: runs a node, records its pid in PID_<NAME>.
start() {
	local name=$1 addr=$2 dir=$3
	shift 3
	"$BIN" --listen "$addr" --data-dir "$dir" --graphite-listen "" "$@" >"$TMP/$name.log" 2>&1 &
	PIDS+=($!)
	eval "PID_$name=$!"
	wait_ready "$addr"
}

log "one node"
A1=127.0.0.1:$(free_port)
start single "$A1" "$TMP/single"
"$TOOL" load --nodes "$A1" --series "$SERIES" --points "$POINTS" --conns "$CONNS" --prefix single | tee "$TMP/single.json"
kill -TERM "$PID_single"; wait "$PID_single" 2>/dev/null || true

log "three nodes"
ADDRS=() PEERS=""
for n in a b c; do
	addr=127.0.0.1:$(free_port)
	ADDRS+=("$addr")
	PEERS="$PEERS${PEERS:+,}$n=$addr"
done
i=0
for n in a b c; do
	start "$n" "${ADDRS[$i]}" "$TMP/$n" --node-name "$n" --peers "$PEERS" --forward-min-backoff 50ms --forward-max-backoff 500ms
	i=$((i + 1))
done
NODES="${ADDRS[0]},${ADDRS[1]},${ADDRS[2]}"
"$TOOL" load --nodes "$NODES" --series "$SERIES" --points "$POINTS" --conns "$CONNS" --prefix ring | tee "$TMP/ring.json"

log "spool drain: c down while a and b take the load, then back"
kill -KILL "$PID_c"; wait "$PID_c" 2>/dev/null || true
# The load cannot finish (c's storage counter never moves); stop waiting
# once every POST is answered, which --replicas 0 expresses.
"$TOOL" load --nodes "${ADDRS[0]},${ADDRS[1]}" --series "$SERIES" --points "$POINTS" --conns "$CONNS" --prefix outage --replicas 0 | tee "$TMP/outage.json"
# Timed from c's restart (its WAL replay included) to empty spools.
"$BIN" --listen "${ADDRS[2]}" --data-dir "$TMP/c" --graphite-listen "" --node-name c --peers "$PEERS" \
	--forward-min-backoff 50ms --forward-max-backoff 500ms >>"$TMP/c.log" 2>&1 &
PIDS+=($!)
"$TOOL" drain --nodes "${ADDRS[0]},${ADDRS[1]}" | tee "$TMP/drain.json"

log "simulation: 20 nodes, $SIM_SERIES series"
"$TOOL" sim --nodes 20 --series "$SIM_SERIES" | tee "$TMP/sim.json"

python3 - "$TMP" <<'PY'
import json, sys
d = sys.argv[1]
r = {k: json.load(open(f"{d}/{k}.json")) for k in ("single", "ring", "outage", "drain", "sim")}
print()
print("| measure | figure |")
print("|---|---|")
print(f"| one node, stored points/s | {r['single']['stored_points_per_s']:.0f} |")
print(f"| three nodes, stored points/s (aggregate) | {r['ring']['stored_points_per_s']:.0f} |")
print(f"| three nodes / one node | {r['ring']['stored_points_per_s'] / r['single']['stored_points_per_s']:.2f} |")
print(f"| intake with one of three nodes down, accepted points/s | {r['outage']['accepted_points_per_s']:.0f} |")
print(f"| spool drain after the outage, points/s ({r['drain']['spooled_points']:.0f} points) | {r['drain']['drain_points_per_s']:.0f} |")
s = r['sim']
print(f"| 20-node ring, {s['series']} series: max/mean series per node | {s['max_over_mean']} |")
print(f"| series moved when a 21st node joins (ideal {s['ideal_moved']}) | {s['moved_on_join']} |")
print(f"| forwarding bytes per point (2000-point batch split over 20 nodes / whole / open-falcon JSON) | {s['wire_bytes_per_point_split']} / {s['wire_bytes_per_point_whole']} / {s['falcon_json_bytes_per_point']} |")
PY
