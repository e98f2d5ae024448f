#!/usr/bin/env bash
# Unpack-and-switch time of a 200 MB tar.gz release with `deploy apply`
# (sha256 check, safe unpack, atomic switch, fsyncs) against plain
# `tar -xzf` of the same package, in the same run, alternating.
#
# Usage: bench/deploy-unpack.sh [rounds]   (default 3)
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT INT TERM

go build -o "$WORK/deploy" ./deploy
mkdir -p "$WORK/src/data"
# 150 files of base64 text (1.35 MB each, ~200 MB): compresses like code and assets do.
for i in $(seq 1 150); do head -c 1000000 /dev/urandom | base64 >"$WORK/src/data/f$i.txt"; done
tar -czf "$WORK/pkg.tgz" -C "$WORK/src" .
SUM=$(sha256sum "$WORK/pkg.tgz" | cut -d' ' -f1)
echo "package: $(du -m "$WORK/pkg.tgz" | cut -f1) MB compressed, $(du -sm "$WORK/src" | cut -f1) MB unpacked, $(nproc) cores, load $(cut -d' ' -f1 /proc/loadavg)"

now() { date +%s.%N; }
for r in $(seq 1 "$ROUNDS"); do
	sync
	mkdir "$WORK/tar-$r"
	s=$(now)
	tar -xzf "$WORK/pkg.tgz" -C "$WORK/tar-$r"
	t_tar=$(echo "$(now) - $s" | bc)
	rm -rf "$WORK/tar-$r"
	sync
	echo "{\"id\":\"u$r\",\"app\":\"big\",\"version\":\"$r\",\"package\":\"$WORK/pkg.tgz\",\"sha256\":\"$SUM\",\"keep\":2}" >"$WORK/task.json"
	s=$(now)
	"$WORK/deploy" apply --data-dir "$WORK/data" "$WORK/task.json" >/dev/null 2>&1
	t_deploy=$(echo "$(now) - $s" | bc)
	printf 'round %d: tar -xzf %.2f s, deploy apply (sha256 + unpack + switch) %.2f s, ratio %.2f\n' "$r" "$t_tar" "$t_deploy" "$(echo "$t_deploy / $t_tar" | bc -l)"
done
