#!/usr/bin/env bash
# Propagation from publish to file on disk across many watchers of one
# namespace on one configd server on loopback, and server memory per watcher.
#
# Usage: bench/configd-propagation.sh [WATCHERS] [PUBLISHES]
# WATCH_DIR=/dev/shm/x puts the watchers' files on tmpfs (default: a temp
# dir on disk). All simulated hosts share this machine's disk and cores.
set -euo pipefail
cd "$(dirname "$0")/.."
WATCHERS=${1:-10000}
PUBLISHES=${2:-5}
work=$(mktemp -d)
server_pid=""
cleanup() {
	if [[ -n $server_pid ]]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
	rm -rf "$work"
	if [[ -n ${WATCH_DIR:-} ]]; then rm -rf "$WATCH_DIR"; fi
}
trap cleanup EXIT INT TERM
go build -o "$work/configd" ./configd
go build -o "$work/configd-watchers" ./bench/configd-watchers
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$work/configd" --listen "127.0.0.1:$port" --data-dir "$work/server" --watch-timeout 10m --log-level debug 2> >(grep --line-buffered "woke watchers" | sed -u 's/^time=[^ ]* level=DEBUG //' >&2) &
server_pid=$!
for _ in $(seq 100); do curl -fs "http://127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.1; done
echo "configd server on 127.0.0.1:$port; $WATCHERS watchers, $PUBLISHES publishes; $(nproc) cores shared by server and watchers; load average $(cut -d' ' -f1-3 /proc/loadavg)"
"$work/configd-watchers" --server "http://127.0.0.1:$port" --watchers "$WATCHERS" --publishes "$PUBLISHES" --dir "${WATCH_DIR:-$work/watchers}"
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
