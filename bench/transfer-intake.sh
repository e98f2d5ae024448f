#!/usr/bin/env bash
# Intake with storage on, side by side: transfer (Graphite TCP and open-falcon
# HTTP, WAL on), carbon-cache (whisper) and rrdcached (journal on), fed the
# same workload by bench/loadgen. Each target runs RUNS times on a fresh data
# dir; the script prints every run's JSON line and then the medians and the
# ratios of transfer to the others. See bench/README.md.
#
#   bench/transfer-intake.sh [--series N] [--points N] [--runs N] [--conns N]
#                            [--batch N] [--targets "LIST"] [--profile DIR]
#
# Environment: SERIES, POINTS, RUNS, CONNS, BATCH, TARGETS, PROFILE (same
# meaning; flags win), TRANSFER_BIN (default: bin/transfer, built when absent),
# STORED_METRIC (transfer's stored-points counter), KEEP_TMP=1 keeps the temp
# dir for inspection.
set -euo pipefail

SERIES=${SERIES:-10000}
POINTS=${POINTS:-100}
RUNS=${RUNS:-3}
CONNS=${CONNS:-4}
BATCH=${BATCH:-1000}
TARGETS=${TARGETS:-"transfer-graphite transfer-falcon carbon-cache rrdcached"}
PROFILE=${PROFILE:-}
STORED_METRIC=${STORED_METRIC:-opskit_transfer_storage_points_appended_total}
RETENTIONS="60s:12h,5m:2d,20m:7d,3h:90d,12h:1y"

usage() { sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
	case "$1" in
	--series) SERIES=$2; shift 2 ;;
	--points) POINTS=$2; shift 2 ;;
	--runs) RUNS=$2; shift 2 ;;
	--conns) CONNS=$2; shift 2 ;;
	--batch) BATCH=$2; shift 2 ;;
	--targets) TARGETS=$2; shift 2 ;;
	--profile) PROFILE=$2; shift 2 ;;
	-h | --help) usage; exit 0 ;;
	*) echo "transfer-intake: unknown argument $1" >&2; usage >&2; exit 2 ;;
	esac
done

cd "$(dirname "$0")/.."
TMP=$(mktemp -d "${TMPDIR:-/tmp}/transfer-intake.XXXXXX")
PIDS=()

log() { echo "== $*" >&2; }

# stop_pid PID: SIGTERM, then SIGKILL after 20 s.
stop_pid() {
	local pid=$1 i
	kill -TERM "$pid" 2>/dev/null || return 0
	for i in $(seq 200); do
		kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
		sleep 0.1
	done
	kill -KILL "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
}

cleanup() {
	local pid
	for pid in "${PIDS[@]}"; do stop_pid "$pid"; done
	PIDS=()
	if [ "${KEEP_TMP:-}" = 1 ]; then log "kept $TMP"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# start NAME CMD...: runs CMD in the background, logging to $TMP/NAME.log.
start() {
	local name=$1; shift
	LAST_LOG=$TMP/$name.log
	"$@" >"$LAST_LOG" 2>&1 &
	PIDS+=("$!")
	LAST_PID=$!
}

# forget PID: drops PID from the processes cleanup stops.
forget() {
	local keep=() pid
	for pid in "${PIDS[@]}"; do [ "$pid" = "$1" ] || keep+=("$pid"); done
	PIDS=("${keep[@]}")
}

# stop_last: stops the most recently started process.
stop_last() {
	stop_pid "$LAST_PID"
	forget "$LAST_PID"
}

# measure ARGS...: runs loadgen in the background (so a signal reaches the
# traps at once) and appends its JSON line to the results.
measure() {
	"${LOADGEN[@]}" "$@" >"$TMP/last.json" &
	local pid=$!
	PIDS+=("$pid")
	wait "$pid" || true
	forget "$pid"
	cat "$TMP/last.json" | tee -a "$RESULTS"
}

# free_port VAR: sets VAR to a loopback TCP port nobody listens on and that
# this script has not handed out yet, below the kernel's ephemeral range so
# that no outgoing connection on the machine holds it.
GIVEN_PORTS=" "
EPHEMERAL_LOW=$(cut -f1 /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
[ "$EPHEMERAL_LOW" -gt 12000 ] || EPHEMERAL_LOW=32768
free_port() {
	local port
	while :; do
		port=$((10000 + RANDOM % (EPHEMERAL_LOW - 10000)))
		case "$GIVEN_PORTS" in *" $port "*) continue ;; esac
		(exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && continue
		GIVEN_PORTS="$GIVEN_PORTS$port "
		printf -v "$1" '%s' "$port"
		return
	done
}

# wait_for DESCRIPTION CMD...: retries CMD for up to 30 s; on failure shows
# the log of the process started last and returns 1.
wait_for() {
	local what=$1 i; shift
	for i in $(seq 300); do
		"$@" >/dev/null 2>&1 && return 0
		if ! kill -0 "$LAST_PID" 2>/dev/null; then
			echo "transfer-intake: $what exited; the end of its log:" >&2
			tail -n 20 "$LAST_LOG" >&2
			return 1
		fi
		sleep 0.1
	done
	echo "transfer-intake: $what not ready after 30 s; the end of its log:" >&2
	tail -n 20 "$LAST_LOG" >&2
	return 1
}

# failed TARGET MODE WHY: records a run that could not start, so the summary
# counts it.
failed() {
	printf '{"target":"%s","mode":"%s","error":"%s"}\n' "$1" "$2" "$3" | tee -a "$RESULTS"
	stop_last
}

tcp_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# need BINARY PACKAGE: the path of a peer binary, or a clear message.
need() {
	local path
	path=$(command -v "$1" 2>/dev/null || true)
	[ -n "$path" ] || for d in /usr/sbin /usr/bin; do [ -x "$d/$1" ] && path=$d/$1; done
	if [ -z "$path" ]; then
		echo "transfer-intake: $1 not found: apt-get install $2" >&2
		exit 1
	fi
	echo "$path"
}

for t in $TARGETS; do
	case "$t" in
	transfer-graphite | transfer-falcon) NEED_TRANSFER=1 ;;
	carbon-cache) CARBON=$(need carbon-cache graphite-carbon) ;;
	rrdcached) RRDCACHED=$(need rrdcached rrdcached) ;;
	*) echo "transfer-intake: unknown target $t" >&2; exit 2 ;;
	esac
done

log "building loadgen"
go build -o "$TMP/loadgen" ./bench/loadgen
if [ -n "${NEED_TRANSFER:-}" ]; then
	TRANSFER=${TRANSFER_BIN:-bin/transfer}
	if [ ! -x "$TRANSFER" ]; then
		log "building transfer"
		go build -o "$TMP/transfer" ./transfer
		TRANSFER=$TMP/transfer
	fi
	if ! "$TRANSFER" --help 2>&1 | grep -q -- --graphite-listen; then
		echo "transfer-intake: $TRANSFER has no --graphite-listen flag: the daemon is not wired yet" >&2
		exit 1
	fi
	# A private copy: a rebuild of bin/transfer during the runs must not
	# change what is measured.
	if [ "$TRANSFER" != "$TMP/transfer" ]; then
		cp "$TRANSFER" "$TMP/transfer"
		TRANSFER=$TMP/transfer
	fi
	log "transfer: $("$TRANSFER" --version 2>&1 | head -n 1)"
fi

LOADGEN=("$TMP/loadgen" --series "$SERIES" --points "$POINTS" --conns "$CONNS" --batch "$BATCH")
RESULTS=$TMP/results.jsonl

# run_transfer MODE RUN
run_transfer() {
	local mode=$1 run=$2 dir http graphite args=()
	dir=$TMP/transfer-$mode-$run
	mkdir -p "$dir"
	free_port http
	free_port graphite
	[ -n "$PROFILE" ] && args+=(--pprof)
	start "transfer-$mode-$run" "$TRANSFER" --listen "127.0.0.1:$http" --graphite-listen "127.0.0.1:$graphite" \
		--data-dir "$dir/data" "${args[@]}"
	wait_for transfer curl -sf "http://127.0.0.1:$http/readyz" || { failed "transfer-$mode" "$mode" "transfer did not start"; return; }
	local profiler=
	if [ -n "$PROFILE" ]; then
		mkdir -p "$PROFILE"
		curl -s -o "$PROFILE/transfer-$mode-$run.pprof" "http://127.0.0.1:$http/debug/pprof/profile?seconds=${PROFILE_SECONDS:-10}" &
		profiler=$!
	fi
	local addr=127.0.0.1:$graphite
	[ "$mode" = falcon ] && addr=127.0.0.1:$http
	measure --target "transfer-$mode" --mode "$mode" --addr "$addr" \
		--metrics-url "http://127.0.0.1:$http/metrics" --stored-metric "$STORED_METRIC"
	[ -z "$profiler" ] || wait "$profiler" || true
	stop_last
	rm -rf "$dir"
}

# run_carbon RUN: carbon-cache with whisper, unthrottled, its own
# instrumentation every second (kept at 1 s resolution).
run_carbon() {
	local run=$1 dir line pickle query
	dir=$TMP/carbon-$run
	mkdir -p "$dir/conf" "$dir/storage/whisper" "$dir/log"
	free_port line
	free_port pickle
	free_port query
	cat >"$dir/conf/carbon.conf" <<-EOF
		[cache]
		STORAGE_DIR = $dir/storage/
		LOCAL_DATA_DIR = $dir/storage/whisper/
		WHITELISTS_DIR = $dir/storage/lists/
		CONF_DIR = $dir/conf/
		LOG_DIR = $dir/log/
		PID_DIR = $dir/
		ENABLE_LOGROTATION = False
		USER =
		DATABASE = whisper
		MAX_CACHE_SIZE = inf
		MAX_UPDATES_PER_SECOND = inf
		MAX_CREATES_PER_MINUTE = inf
		LINE_RECEIVER_INTERFACE = 127.0.0.1
		LINE_RECEIVER_PORT = $line
		ENABLE_UDP_LISTENER = False
		PICKLE_RECEIVER_INTERFACE = 127.0.0.1
		PICKLE_RECEIVER_PORT = $pickle
		CACHE_QUERY_INTERFACE = 127.0.0.1
		CACHE_QUERY_PORT = $query
		USE_FLOW_CONTROL = True
		CACHE_WRITE_STRATEGY = sorted
		WHISPER_AUTOFLUSH = False
		WHISPER_FALLOCATE_CREATE = True
		CARBON_METRIC_INTERVAL = 1
		ENABLE_TAGS = False
		LOG_UPDATES = False
		LOG_CREATES = False
		LOG_CACHE_HITS = False
		LOG_CACHE_QUEUE_SORTS = False
		LOG_LISTENER_CONNECTIONS = False
	EOF
	cat >"$dir/conf/storage-schemas.conf" <<-EOF
		[carbon]
		pattern = ^carbon\.
		retentions = 1s:1h

		[default]
		pattern = .*
		retentions = $RETENTIONS
	EOF
	start "carbon-$run" "$CARBON" --config="$dir/conf/carbon.conf" --pidfile="$dir/carbon.pid" \
		--logdir="$dir/log" --nodaemon start
	wait_for carbon-cache tcp_open "$line" || { failed carbon-cache graphite "carbon-cache did not start"; return; }
	measure --target carbon-cache --mode graphite --addr "127.0.0.1:$line" \
		--whisper-dir "$dir/storage/whisper" --poll 250ms
	stop_last
	rm -rf "$dir"
}

# run_rrdcached RUN: rrdcached with its journal, files created through it
# before the clock starts, then every update accepted and flushed.
run_rrdcached() {
	local run=$1 dir
	dir=$TMP/rrdcached-$run
	mkdir -p "$dir/data" "$dir/journal"
	start "rrdcached-$run" "$RRDCACHED" -g -B -b "$dir/data" -j "$dir/journal" -F \
		-l "unix:$dir/rrdcached.sock" -p "$dir/rrdcached.pid"
	wait_for rrdcached test -S "$dir/rrdcached.sock" || { failed rrdcached rrdcached "rrdcached did not start"; return; }
	measure --target rrdcached --mode rrdcached --addr "unix:$dir/rrdcached.sock" \
		--rrd-create --rrd-flush --rrd-retentions "$RETENTIONS"
	stop_last
	rm -rf "$dir"
}

log "workload: $SERIES series x $POINTS points, $CONNS connections, batch $BATCH, $RUNS runs; targets: $TARGETS"
log "machine: $(nproc) cores; $(free -h | awk '/^Mem:/ {print $2 " memory, " $7 " available"}')"
: >"$RESULTS"
# Targets take turns within each round, so a noisy period hurts all of them.
for round in $(seq "$RUNS"); do
	for t in $TARGETS; do
		log "run $round/$RUNS: $t"
		case "$t" in
		transfer-graphite) run_transfer graphite "$round" ;;
		transfer-falcon) run_transfer falcon "$round" ;;
		carbon-cache) run_carbon "$round" ;;
		rrdcached) run_rrdcached "$round" ;;
		esac
	done
done
echo
"$TMP/loadgen" summary <"$RESULTS"
