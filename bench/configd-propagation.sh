#!/usr/bin/env bash
# Propagation from publish to file on disk across many watchers of one
# namespace on one configd server on loopback, and server memory per watcher.
#
# Usage: bench/configd-propagation.sh [WATCHERS] [PUBLISHES]
# WATCH_DIR=/dev/shm/x puts the watchers' files on tmpfs (default: a temp
# dir on disk). All simulated hosts share this machine's disk and cores.
# CLIENT=nethttp has the watchers use net/http's Client as the agent does
# (default raw: each watcher writes its request and parses the answer on
# its own keep-alive connection, the same exchange for a fraction of the
# CPU, which here is taken from the server's two cores).
# CONFIGD=path runs that server binary instead of one built from this tree
# (to compare two builds under the same simulator).
# PROFILE_DIR=dir saves CPU profiles of the server (server.cpu) and of the
# simulated watchers (watchers.cpu) over the publishes, and the server
# binary beside them (configd) for go tool pprof.
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
if [[ -n ${CONFIGD:-} ]]; then cp "$CONFIGD" "$work/configd"; else go build -o "$work/configd" ./configd; fi
go build -o "$work/configd-watchers" ./bench/configd-watchers
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
profile_args=()
server_args=()
if [[ -n ${PROFILE_DIR:-} ]]; then
	mkdir -p "$PROFILE_DIR"
	cp "$work/configd" "$PROFILE_DIR/configd"
	server_args=(--pprof)
	profile_args=(--server-cpuprofile "$PROFILE_DIR/server.cpu" --cpuprofile "$PROFILE_DIR/watchers.cpu")
fi
"$work/configd" --listen "127.0.0.1:$port" --data-dir "$work/server" --watch-timeout 10m --log-level debug "${server_args[@]}" 2> >(grep --line-buffered "woke watchers" | sed -u 's/^time=[^ ]* level=DEBUG //' >&2) &
server_pid=$!
for _ in $(seq 100); do curl -fs "http://127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.1; done
echo "configd server on 127.0.0.1:$port; $WATCHERS watchers, $PUBLISHES publishes; $(nproc) cores shared by server and watchers; load average $(cut -d' ' -f1-3 /proc/loadavg)"
"$work/configd-watchers" --server "http://127.0.0.1:$port" --watchers "$WATCHERS" --publishes "$PUBLISHES" --client "${CLIENT:-raw}" --dir "${WATCH_DIR:-$work/watchers}" "${profile_args[@]}"
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
