#!/usr/bin/env bash
# Installs the Debian packages opskit's tests and benchmarks run against.
# Idempotent: does nothing when they are all installed. As root it installs
# the missing ones with apt-get; as another user it lists them and exits 1.
#
# Usage: scripts/install-test-deps.sh [package...]
# With arguments, only those packages are checked and installed.
set -euo pipefail

# One package per line; add new test dependencies here.
PACKAGES=(
	clickhouse-server
	clickhouse-client
	kcat
	rrdtool
	rrdcached
	prometheus # also provides promtool
	graphite-carbon
	prometheus-alertmanager # also provides amtool
	collectd-core # collectd with write_graphite, for the collector's Graphite intake
	chromium # headless, renders abtest's HTML report in its e2e test
	nginx # limit_req side by side with ratelimit, and its benchmark
	wrk # HTTP load for the ratelimit benchmark
	hey # HTTP load with latency percentiles for the ratelimit benchmark
	rsyslog # imfile, beside the collector in its log shipping benchmark
	rsyslog-kafka # omkafka, beside the collector in its log shipping benchmark
	supervisor # supervisord, run beside deploy's supervisor in its compatibility test
)

if (($# > 0)); then
	PACKAGES=("$@")
fi

log() { printf 'install-test-deps: %s\n' "$*" >&2; }

is_installed() {
	# Read dpkg's whole answer first: grep -q would stop reading early and,
	# under pipefail, dpkg's SIGPIPE would count as "not installed".
	local status
	status="$(dpkg -s "$1" 2>/dev/null)" || return 1
	grep -q '^Status: install ok installed$' <<<"$status"
}

missing_packages() {
	local pkg
	for pkg in "${PACKAGES[@]}"; do
		is_installed "$pkg" || printf '%s\n' "$pkg"
	done
}

if ! command -v dpkg >/dev/null || ! command -v apt-get >/dev/null; then
	log "dpkg and apt-get not found: this script installs test dependencies on Debian only"
	log "install by hand: ${PACKAGES[*]}"
	exit 1
fi

mapfile -t missing < <(missing_packages)
if ((${#missing[@]} == 0)); then
	log "all test dependencies are installed (${PACKAGES[*]})"
	exit 0
fi

if ((EUID != 0)); then
	log "missing packages: ${missing[*]}"
	log "run as root to install them: sudo $0${*:+ $*}"
	exit 1
fi

# Package scripts (clickhouse-server's among them) try to start their
# services; without systemd running that fails the install. A policy-rc.d
# that answers 101 ("action forbidden") makes invoke-rc.d and
# deb-systemd-invoke skip the start. A policy-rc.d that was already there
# (container images ship one) is put back afterwards.
POLICY=/usr/sbin/policy-rc.d
POLICY_BACKUP=""
restore_policy() {
	if [[ -n "$POLICY_BACKUP" ]]; then
		mv -f "$POLICY_BACKUP" "$POLICY"
	else
		rm -f "$POLICY"
	fi
}
if [[ -e "$POLICY" ]]; then
	POLICY_BACKUP="$(mktemp "${POLICY}.opskit-backup.XXXXXX")"
	cp -p "$POLICY" "$POLICY_BACKUP"
fi
trap restore_policy EXIT
printf '#!/bin/sh\n# Written by opskit install-test-deps.sh while it installs packages.\nexit 101\n' >"$POLICY"
chmod 755 "$POLICY"

log "installing: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
if ! apt-get update; then
	log "apt-get update failed"
	exit 1
fi
if ! apt-get install -y --no-install-recommends "${missing[@]}"; then
	log "apt-get install failed for: ${missing[*]}"
	exit 1
fi

mapfile -t still_missing < <(missing_packages)
if ((${#still_missing[@]} > 0)); then
	log "still missing after apt-get install: ${still_missing[*]}"
	exit 1
fi
log "installed: ${missing[*]}"
