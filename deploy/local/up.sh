#!/usr/bin/env bash
# Quickstart: a local PostgreSQL 15 primary + streaming standby (from this machine's binaries)
# with pgpivot in front, on loopback. Stays in the foreground; Ctrl-C cleans everything up.
# Options: --port 6432  --standbys 1  --check-interval-ms 500
set -euo pipefail
cd "$(dirname "$0")/../.."
bash deploy/local/install-deps.sh
exec cargo run --release -q -p pgpivot-tests --bin pgpivot-lab -- "$@"
