#!/usr/bin/env bash
# Installs what the side-by-side benchmarks need on a Debian machine, if missing: everything
# deploy/local/install-deps.sh installs (PostgreSQL 15, pgbench, ...) plus the comparison targets
# PgBouncer and Pgpool-II from Debian's packages. Safe to run repeatedly: does nothing when all is
# present. Debian's packages would start their own services on the default ports; they are kept
# from starting (policy-rc.d answers 101 during the install): the benchmarks start their own, on
# free loopback ports.
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/local/install-deps.sh

need_apt=()
[ -x /usr/sbin/pgbouncer ] || need_apt+=(pgbouncer)
[ -x /usr/sbin/pgpool ] || need_apt+=(pgpool2)
[ ${#need_apt[@]} -eq 0 ] && exit 0

if [ "$(id -u)" != 0 ]; then
    echo "missing packages: ${need_apt[*]} (run as root, or: sudo apt-get install -y ${need_apt[*]})" >&2
    exit 1
fi
echo "installing: ${need_apt[*]}" >&2
policy=/usr/sbin/policy-rc.d
saved=""
if [ -e "$policy" ]; then
    saved=$(mktemp)
    cp -p "$policy" "$saved"
fi
restore() {
    if [ -n "$saved" ]; then mv -f "$saved" "$policy"; else rm -f "$policy"; fi
}
trap restore EXIT
printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod +x "$policy"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq "${need_apt[@]}" >/dev/null
