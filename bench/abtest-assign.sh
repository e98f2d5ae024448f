#!/usr/bin/env bash
# HTTP assign requests per second (target: at least 50,000/s): starts abtest
# with two layers of experiments and drives GET /v1/assign with wrk over
# keep-alive connections, a new random unit id per request (so most requests
# log exposures).
# Usage: bench/abtest-assign.sh [duration (default 15s)] [connections (default 64)] [wrk threads (default 2)]
# Besides requests/s it prints the server's CPU time per request (user +
# system, from /proc), which depends far less on what else the machine runs.
# ABTEST_PROFILE=FILE also saves a CPU profile of the daemon.
# ABTEST_CEILING=1 also runs the same wrk command against a trivial Go
# net/http handler answering a body of the same size (what this machine's
# kernel and net/http allow at all), ABTEST_ROUNDS times (default 3)
# alternating with abtest, and prints the medians and their ratio.
set -euo pipefail
cd "$(dirname "$0")/.."
duration="${1:-15s}"
conns="${2:-64}"
threads="${3:-2}"
command -v wrk >/dev/null || { echo "wrk not found: apt-get install wrk" >&2; exit 1; }
work="$(mktemp -d)"
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; rm -rf "$work"' EXIT
go build -o "$work/abtest" ./abtest
cat >"$work/experiments.yaml" <<'YAML'
layers: [{name: ui}, {name: pricing}]
experiments:
  - {key: ui-a, layer: ui, range: [0, 0.5], variants: [{name: control}, {name: treatment}]}
  - {key: ui-b, layer: ui, range: [0.5, 1], variants: [{name: control}, {name: treatment}]}
  - {key: price, layer: pricing, variants: [{name: control}, {name: low}, {name: high}]}
  - {key: us-only, variants: [{name: control}, {name: t}], condition: {country: US}}
YAML
wait_ready() {
	for _ in $(seq 100); do curl -sf "$1" >/dev/null && return 0; sleep 0.1; done
	echo "no answer from $1; abtest's log:" >&2
	cat "$work/abtest.log" >&2
	return 1
}
# Ports below the ephemeral range, which wrk's many connections (and their
# TIME_WAIT leftovers) occupy; the ceiling server takes port + 1.
ephemeral_low="$(cut -f1 /proc/sys/net/ipv4/ip_local_port_range)"
for _ in 1 2 3 4 5; do
	port=$((10000 + RANDOM % (ephemeral_low - 10001)))
	"$work/abtest" --listen "127.0.0.1:$port" --data-dir "$work/data" --experiments "$work/experiments.yaml" \
		--log-level warn --pprof 2>"$work/abtest.log" &
	pid=$!
	sleep 0.2
	if kill -0 "$pid" 2>/dev/null; then break; fi
	wait "$pid" || true # exited: the port was taken, try another
done
pids+=("$pid")
wait_ready "127.0.0.1:$port/readyz"
cat >"$work/assign.lua" <<'LUA'
-- Each wrk thread has its own Lua state: seed each differently (a table's address).
math.randomseed(os.time() + tonumber(tostring({}):match("0x(%x+)"), 16) % 100000)
request = function()
  return wrk.format("GET", "/v1/assign?unit=u" .. math.random(1, 100000000) .. "&attr.country=US")
end
LUA
echo "machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
sample="$(curl -s "127.0.0.1:$port/v1/assign?unit=u1&attr.country=US")"
echo "one request: $sample"

# cpu_ticks PID: user + system clock ticks the process used so far.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# bench NAME PID PORT: one wrk run; appends "requests/s cpu-us-per-request"
# to $work/NAME.runs.
bench() {
	local before after out
	before="$(cpu_ticks "$2")"
	out="$(wrk -t "$threads" -c "$conns" -d "$duration" --latency -s "$work/assign.lua" "http://127.0.0.1:$3/")"
	after="$(cpu_ticks "$2")"
	echo "$out"
	awk -v ticks="$((after - before))" -v hz="$(getconf CLK_TCK)" '
		/requests in/ { n = $1 }
		/^Requests\/sec/ { rate = $2 }
		END { us = ticks / hz * 1e6 / n; printf "%s: %.0f requests/s, %.1f us of server CPU per request\n", name, rate, us
		      printf "%f %f\n", rate, us >> file }' name="$1" file="$work/$1.runs" <<<"$out"
	echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
}

if [[ -n "${ABTEST_PROFILE:-}" ]]; then
	# A 5 s CPU profile of the daemon from the middle of the run.
	(sleep 3 && curl -s -o "$ABTEST_PROFILE" "127.0.0.1:$port/debug/pprof/profile?seconds=5") &
	profiler=$!
fi
bench abtest "${pids[0]}" "$port"
[[ -n "${profiler:-}" ]] && wait "$profiler"
curl -s "127.0.0.1:$port/metrics" | grep -E '^opskit_abtest_(assignments|exposures)_' || true
[[ -n "${ABTEST_CEILING:-}" ]] || exit 0

# The ceiling: net/http with a handler that only writes a fixed answer.
mkdir "$work/hello"
printf 'module hello\n\ngo 1.22\n' >"$work/hello/go.mod"
cat >"$work/hello/main.go" <<'GO'
// hello answers every request with the same JSON body and nothing else.
package main

import (
	"net/http"
	"os"
)

func main() {
	body := []byte(os.Args[2] + "\n")
	http.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write(body)
	})
	panic(http.ListenAndServe(os.Args[1], nil))
}
GO
(cd "$work/hello" && go build -o hello .)
hello_port=$((port + 1))
"$work/hello/hello" "127.0.0.1:$hello_port" "$sample" &
pids+=($!)
wait_ready "127.0.0.1:$hello_port/"
echo "ceiling: trivial net/http handler, same wrk command, body of ${#sample} bytes"
rounds="${ABTEST_ROUNDS:-3}"
for round in $(seq "$rounds"); do
	bench ceiling "${pids[1]}" "$hello_port"
	if ((round < rounds)); then
		bench abtest "${pids[0]}" "$port"
	fi
done
median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
for name in abtest ceiling; do
	read -r "${name}_rate" < <(cut -d' ' -f1 "$work/$name.runs" | median)
	read -r "${name}_cpu" < <(cut -d' ' -f2 "$work/$name.runs" | median)
done
awk -v ar="$abtest_rate" -v hr="$ceiling_rate" -v ac="$abtest_cpu" -v hc="$ceiling_cpu" -v n="$rounds" 'BEGIN {
	printf "medians of %d runs each: abtest %.0f requests/s, %.1f us CPU per request; ceiling %.0f requests/s, %.1f us\n", n, ar, ac, hr, hc
	printf "abtest / ceiling: %.0f %% of the requests/s, %.2fx the CPU per request\n", 100 * ar / hr, ac / hc }'
