#!/usr/bin/env bash
# Idle cost of the deploy agent supervising 100 programs: its resident
# memory and CPU share over a quiet period. Targets: under 30 MB and under
# 1 % of a core. Also the time from a program's death to its restart, as
# the agent sees it (deploy status), next to the Go benchmark of it.
#
# Usage: bench/deploy-idle.sh [seconds]   (default 30)
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-30}
WORK=$(mktemp -d)
APID=
cleanup() {
	# The programs outlive an agent by design; this one is told to stop them.
	if [[ -n "$APID" ]]; then kill "$APID" 2>/dev/null || true; wait "$APID" 2>/dev/null || true; fi
	[[ -n "${KEEP:-}" ]] && echo "kept $WORK" || rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

go build -o "$WORK/deploy" ./deploy
mkdir -p "$WORK/pkg"
{
	echo "programs:"
	for i in $(seq 1 100); do
		echo "  - {name: p$i, command: [sh, -c, 'exec sleep 100000'], startsecs: 100ms}"
	done
} >"$WORK/pkg/deploy.yaml"
tar -czf "$WORK/pkg.tgz" -C "$WORK/pkg" .
SUM=$(sha256sum "$WORK/pkg.tgz" | cut -d' ' -f1)
echo "{\"id\":\"idle-1\",\"app\":\"idle\",\"version\":\"1\",\"package\":\"$WORK/pkg.tgz\",\"sha256\":\"$SUM\"}" >"$WORK/task.json"

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$WORK/deploy" --listen "127.0.0.1:$PORT" --data-dir "$WORK/data" --stop-programs-on-exit --shutdown-timeout 30s 2>"$WORK/agent.log" &
APID=$!
for _ in $(seq 100); do curl -fsS "127.0.0.1:$PORT/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
start=$(date +%s.%N)
"$WORK/deploy" apply --remote --addr "127.0.0.1:$PORT" "$WORK/task.json" >/dev/null
printf 'apply + start 100 programs: %.2f s\n' "$(echo "$(date +%s.%N) - $start" | bc)"
running=$("$WORK/deploy" status --addr "127.0.0.1:$PORT" | grep -c RUNNING)
echo "programs RUNNING: $running"

sleep 2 # let the starts settle
ticks() { awk '{print $14+$15}' "/proc/$APID/stat"; }
HZ=$(getconf CLK_TCK)
t0=$(ticks)
sleep "$DURATION"
t1=$(ticks)
rss=$(awk '/VmRSS/ {print $2}' "/proc/$APID/status")
hwm=$(awk '/VmHWM/ {print $2}' "/proc/$APID/status")
printf 'idle over %ds: CPU %.3f %% of a core, RSS %.1f MB (peak %.1f MB)\n' "$DURATION" \
	"$(echo "($t1 - $t0) * 100 / $HZ / $DURATION" | bc -l)" "$(echo "$rss/1024" | bc -l)" "$(echo "$hwm/1024" | bc -l)"

# Death to restart, seen from outside: kill a program, poll its pid.
total=0
for i in $(seq 1 10); do
	pid=$("$WORK/deploy" status --addr "127.0.0.1:$PORT" | awk '$1=="idle:p1" {sub("pid=","",$3); print $3}')
	s=$(date +%s%N)
	kill -9 "$pid"
	while :; do
		new=$(curl -fsS "127.0.0.1:$PORT/api/v1/status" | tr -d ' \n' | grep -o '"name":"idle:p1","state":"[A-Z]*","pid":[0-9]*' | sed 's/.*://' || echo 0)
		[[ "$new" != "0" && "$new" != "$pid" ]] && break
	done
	e=$(date +%s%N)
	total=$((total + (e - s) / 1000))
	sleep 0.3 # past startsecs, so the next death is a RUNNING one
done
printf 'death to restart (10 kills, polled with curl over HTTP, polling included): %.1f ms mean\n' "$(echo "$total / 10 / 1000" | bc -l)"
