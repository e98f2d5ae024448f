#!/usr/bin/env bash
# Event intake into ClickHouse (target: at least 200,000 events/s) and the
# report ClickHouse aggregates, on Debian's clickhouse-server started on
# loopback, with ABTEST_BENCH_EVENTS events per benchmark (default
# 1,000,000; 10 per unit):
#   BenchmarkIntakeAndReport        inserts in 50,000-event batches as the
#                                   forwarder sends them, then times the report
#                                   (report-s, while ClickHouse merges the new
#                                   parts) and again once the merges are done
#                                   (settled-report-s);
#   BenchmarkHTTPIntakeToClickHouse the whole path: POST /v1/events (10,000
#                                   per request, 4 clients), embedded store and
#                                   spool fsynced before each answer, forwarder
#                                   into ClickHouse, until every row is there.
# Usage: bench/abtest-clickhouse.sh [benchmark regexp]
set -euo pipefail
cd "$(dirname "$0")/.."
echo "machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
ABTEST_BENCH_EVENTS="${ABTEST_BENCH_EVENTS:-1000000}" \
	go test -run '^$' -bench "${1:-IntakeAndReport|HTTPIntakeToClickHouse}" -benchtime 1x ./abtest/clickhouse/
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
