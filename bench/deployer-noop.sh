#!/usr/bin/env bash
# What deployer costs with a large fleet: 1,000 simulated agents
# (bench/deployer-agents) long poll one deployer. Measures deployer's CPU
# and resident memory at idle with every poll parked, then the wall time
# of a no-op deploy across all the agents in 10 batches of 10 % with a
# pause P between batches, and the overhead deployer adds: wall - 9 * P.
# Targets: overhead under 2 s, RSS under 100 MB.
#
# Usage: bench/deployer-noop.sh [agents] [pause] [idle]   (default 1000 1s 30s)
# DEPLOYER_FLAGS adds flags to deployer's command line (e.g. "--tick 100ms").
set -euo pipefail
cd "$(dirname "$0")/.."
AGENTS=${1:-1000}
PAUSE=${2:-1s}
IDLE=${3:-30s}
WORK=$(mktemp -d)
DPID=
cleanup() {
	if [[ -n "$DPID" ]]; then kill "$DPID" 2>/dev/null || true; wait "$DPID" 2>/dev/null || true; fi
	[[ -n "${KEEP:-}" ]] && echo "kept $WORK" || rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

go build -o "$WORK/deployer" ./deployer
go build -o "$WORK/agents" ./bench/deployer-agents
"$WORK/agents" hosts --agents "$AGENTS" --app bench >"$WORK/hosts.yaml"
cat >"$WORK/apps.yaml" <<YAML
apps:
  bench:
    batches: ["10%"]
    pause: $PAUSE
    max_fail: 0
    step_timeout: 1m
YAML

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$WORK/deployer" --listen "127.0.0.1:$PORT" --data-dir "$WORK/data" --hosts "$WORK/hosts.yaml" \
	--apps "$WORK/apps.yaml" ${DEPLOYER_FLAGS:-} 2>"$WORK/deployer.log" &
DPID=$!
for _ in $(seq 100); do curl -fsS "127.0.0.1:$PORT/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
echo "deployer $(git rev-parse --short HEAD)${DEPLOYER_FLAGS:+ $DEPLOYER_FLAGS}, $AGENTS agents, pause $PAUSE, $(nproc) cores, load $(cut -d' ' -f1 /proc/loadavg)"
"$WORK/agents" run --deployer "http://127.0.0.1:$PORT" --pid "$DPID" --agents "$AGENTS" \
	--pause "$PAUSE" --batches 10 --idle "$IDLE"
