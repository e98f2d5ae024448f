#!/usr/bin/env bash
# Event intake into ClickHouse (target: at least 200,000 events/s) and the
# report ClickHouse aggregates: inserts ABTEST_BENCH_EVENTS events (default
# 1,000,000; 10 per unit) into ab_events on Debian's clickhouse-server
# started on loopback, in 50,000-event batches as the forwarder sends them.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
ABTEST_BENCH_EVENTS="${ABTEST_BENCH_EVENTS:-1000000}" \
	go test -run '^$' -bench BenchmarkIntakeAndReport -benchtime 1x ./abtest/clickhouse/
