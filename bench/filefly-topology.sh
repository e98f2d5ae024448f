#!/usr/bin/env bash
# filefly: completion time of one file sent to N agents on loopback with
# every agent's ingress and egress (and the server's egress) capped at the
# same rate B, emulating equal NICs: a single host, then tree, chain and
# star over all N agents in the same run (tree is the striped tree, tree1
# the single tree), against S/B (one host) and the
# bound S/B·(1 + log2 N / M) for M pieces. Also the server's egress per
# run as a multiple of the file size S.
#
# Usage: bench/filefly-topology.sh [AGENTS] [SIZE_MIB] [RATE]
#   defaults: 30 agents, 32 MiB, 16MB/s. All agents share this machine's
#   cores and disk: keep B × N well under what 2 cores hash and copy.
# TOPOLOGIES="tree chain" limits the runs (star takes about N × S/B).
# AGENT_LOG_LEVEL=debug AGENTS_LOG=FILE keeps the agents' JSON logs, with a
# line per piece (asked, arrived, stored), for per-hop timings.
set -euo pipefail
cd "$(dirname "$0")/.."
AGENTS=${1:-30}
SIZE_MIB=${2:-32}
RATE=${3:-16MB/s}
TOPOLOGIES=${TOPOLOGIES:-"single tree tree1 chain star"}
work=$(mktemp -d)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
	if [[ -n ${AGENTS_LOG:-} && -f $work/agents.log ]]; then cp "$work/agents.log" "$AGENTS_LOG"; fi
	rm -rf "$work"
}
trap cleanup EXIT INT TERM
go build -o "$work/filefly" ./filefly
freeport() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
waitready() { for _ in $(seq 100); do curl -fs "http://$1/readyz" >/dev/null && return 0; sleep 0.1; done; echo "$1 not ready" >&2; exit 1; }

server="127.0.0.1:$(freeport)"
"$work/filefly" --listen "$server" --data-dir "$work/server" --egress-rate "$RATE" --log-level warn 2>>"$work/server.log" &
pids+=($!)
hosts=()
for i in $(seq 1 "$AGENTS"); do
	addr="127.0.0.1:$(freeport)"
	mkdir -p "$work/a$i/srv"
	"$work/filefly" agent --listen "$addr" --data-dir "$work/a$i/data" --dest-prefix "$work/a$i" --allow-root "$work/a$i/srv" \
		--ingress-rate "$RATE" --egress-rate "$RATE" --log-level "${AGENT_LOG_LEVEL:-warn}" --log-format json 2>>"$work/agents.log" &
	pids+=($!)
	hosts+=("$addr")
done
waitready "$server"
for h in "${hosts[@]}"; do waitready "$h"; done
head -c "$((SIZE_MIB << 20))" /dev/urandom >"$work/payload.bin"
all=$(IFS=,; echo "${hosts[*]}")
served() { curl -fs "http://$server/metrics" | awk '$1=="opskit_filefly_server_served_bytes_total"{print $2}'; }
size=$((SIZE_MIB << 20))
bytes_per_s=$(python3 - "$RATE" <<'PY'
import re,sys
s=sys.argv[1].removesuffix("/s"); m=re.fullmatch(r"([\d.]+)\s*([A-Za-z]*)",s)
u={"":1,"b":1,"k":1e3,"kb":1e3,"kib":1024,"m":1e6,"mb":1e6,"mib":1<<20,"g":1e9,"gb":1e9,"gib":1<<30}[m.group(2).lower()]
print(int(float(m.group(1))*u))
PY
)
echo "filefly topology benchmark: $AGENTS agents, file $SIZE_MIB MiB, every NIC capped at $RATE; $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-8s %6s %9s %10s %14s %s\n' topology hosts seconds "x S/B" "server egress" result
for topo in $TOPOLOGIES; do
	targets=$all
	t=$topo
	n=$AGENTS
	if [[ $topo == single ]]; then targets=${hosts[0]}; t=star; n=1; fi
	before=$(served)
	start=$(date +%s.%N)
	if "$work/filefly" send "$work/payload.bin" --server "$server" --hosts "$targets" --dest "/srv/$topo.bin" \
		--topology "$t" --timeout 30m --wait --interval 5s >"$work/$topo.jsonl" 2>"$work/$topo.table"; then result=ok; else result=FAILED; fi
	end=$(date +%s.%N)
	after=$(served)
	python3 - "$topo" "$n" "$start" "$end" "$size" "$bytes_per_s" "$before" "$after" "$result" <<'PY'
import sys
topo,n,start,end,size,rate,before,after,result=sys.argv[1:]
secs=float(end)-float(start); sb=int(size)/int(rate)
print(f"{topo:<8} {int(n):>6} {secs:>9.2f} {secs/sb:>10.2f} {(float(after)-float(before))/int(size):>12.2f} S {result}")
PY
	[[ $result == ok ]] || cat "$work/$topo.table" >&2
	rm -f "$work"/a*/srv/"$topo".bin
done
pieces=$(curl -fs "http://$server/v1/transfers" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)[-1]["manifest"]["pieces"]))')
python3 - "$size" "$bytes_per_s" "$AGENTS" "$pieces" <<'PY'
import math,sys
size,rate,n,m=map(int,sys.argv[1:])
sb=size/rate
print(f"S/B = {sb:.2f}s (one host at the cap); M = {m} pieces; bound S/B(1 + log2 N / M) = {sb*(1+math.log2(n)/m):.2f}s; star needs N*S/B = {n*sb:.2f}s")
PY
