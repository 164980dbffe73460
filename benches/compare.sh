#!/usr/bin/env bash
# pgpivot side by side with PostgreSQL directly, PgBouncer and Pgpool-II, on this machine, in one
# run. Installs what is missing (PostgreSQL 15, PgBouncer, Pgpool-II from Debian's packages),
# builds the release binaries, starts everything on free loopback ports and removes it all at the
# end (also on Ctrl-C).
#
#   benches/compare.sh [matrix options]     pgbench table (bench-matrix --help for the options)
#   benches/compare.sh idle [options]       memory per idle client (idle-clients --help)
#   benches/compare.sh failover [options]   failover gap under writes (failover-gap --help)
#   benches/compare.sh all                  the three, with their defaults
set -euo pipefail
cd "$(dirname "$0")/.."
bash benches/install-targets.sh
cargo build --release -q -p pgpivot -p pgpivot-benches
bin="${CARGO_TARGET_DIR:-target}/release"
case "${1:-}" in
    idle) shift; exec "$bin/idle-clients" "$@" ;;
    failover) shift; exec "$bin/failover-gap" "$@" ;;
    all)
        shift
        "$bin/bench-matrix" "$@"
        "$bin/idle-clients"
        exec "$bin/failover-gap"
        ;;
    *) exec "$bin/bench-matrix" "$@" ;;
esac
