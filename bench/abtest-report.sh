#!/usr/bin/env bash
# abtest report over a large experiment: writes 10,000,000 events of
# 1,000,000 units into a fresh embedded event store, then times the report
# (target: under 2 s). Extra arguments go to the program (e.g. --events 1000000,
# --interleaved for every unit's events spread over the whole log).
set -euo pipefail
cd "$(dirname "$0")/.."
echo "machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
go run ./bench/abtestreport "$@"
