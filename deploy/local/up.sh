#!/usr/bin/env bash
# Quickstart: the reference HA topology on loopback, from this machine's PostgreSQL 15 and repmgr:
# a primary and a standby managed by repmgr (repmgrd with automatic failover on both) and two
# pgpivot instances with the same backend list. Prints the connection strings and SHOW pool_nodes
# of both, stays in the foreground; Ctrl-C (or an error) cleans everything up.
# Options: --port 6432  --standbys 1  --pool-mode session|transaction  --check-interval-ms 200
#          --failover-demo [--freeze] [--exit]   (see --help)
set -euo pipefail
cd "$(dirname "$0")/../.."
bash deploy/local/install-deps.sh
exec cargo run --release -q -p pgpivot-tests --bin pgpivot-lab -- "$@"
