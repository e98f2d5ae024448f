#!/usr/bin/env bash
# Runs every test (unit, fuzz seed corpora, end-to-end) and prints go test's
# per-package lines, the output of failures and an "N passed, N failed" line.
set -euo pipefail
cd "$(dirname "$0")/.."
timeout="${OPSKIT_TEST_TIMEOUT:-20m}"
go test -json -count=1 -timeout "$timeout" ./... | go run ./internal/tools/testsummary
