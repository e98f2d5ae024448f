#!/usr/bin/env bash
# HTTP assign requests per second (target: at least 50,000/s): starts abtest
# with two layers of experiments and drives GET /v1/assign with wrk, a new
# random unit id per request (so most requests log an exposure).
# Usage: bench/abtest-assign.sh [duration (default 15s)] [connections (default 64)]
# ABTEST_PROFILE=FILE also saves a CPU profile of the daemon.
set -euo pipefail
cd "$(dirname "$0")/.."
duration="${1:-15s}"
conns="${2:-64}"
command -v wrk >/dev/null || { echo "wrk not found: apt-get install wrk" >&2; exit 1; }
work="$(mktemp -d)"
trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT
go build -o "$work/abtest" ./abtest
cat >"$work/experiments.yaml" <<'YAML'
layers: [{name: ui}, {name: pricing}]
experiments:
  - {key: ui-a, layer: ui, range: [0, 0.5], variants: [{name: control}, {name: treatment}]}
  - {key: ui-b, layer: ui, range: [0.5, 1], variants: [{name: control}, {name: treatment}]}
  - {key: price, layer: pricing, variants: [{name: control}, {name: low}, {name: high}]}
  - {key: us-only, variants: [{name: control}, {name: t}], condition: {country: US}}
YAML
port=$((20000 + RANDOM % 20000))
"$work/abtest" --listen "127.0.0.1:$port" --data-dir "$work/data" --experiments "$work/experiments.yaml" \
	--log-level warn --pprof 2>"$work/abtest.log" &
pid=$!
for _ in $(seq 50); do curl -sf "127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.1; done
cat >"$work/assign.lua" <<'LUA'
-- Each wrk thread has its own Lua state: seed each differently (a table's address).
math.randomseed(os.time() + tonumber(tostring({}):match("0x(%x+)"), 16) % 100000)
request = function()
  return wrk.format("GET", "/v1/assign?unit=u" .. math.random(1, 100000000) .. "&attr.country=US")
end
LUA
echo "machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "one request: $(curl -s "127.0.0.1:$port/v1/assign?unit=u1&attr.country=US")"
if [[ -n "${ABTEST_PROFILE:-}" ]]; then
	# A 5 s CPU profile of the daemon from the middle of the run.
	(sleep 3 && curl -s -o "$ABTEST_PROFILE" "127.0.0.1:$port/debug/pprof/profile?seconds=5") &
	profiler=$!
fi
wrk -t 2 -c "$conns" -d "$duration" --latency -s "$work/assign.lua" "http://127.0.0.1:$port/"
[[ -n "${profiler:-}" ]] && wait "$profiler"
curl -s "127.0.0.1:$port/metrics" | grep -E '^abtest_(assignments|exposures)_' || true
