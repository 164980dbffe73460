#!/usr/bin/env bash
# pgbench select-only through pgpivot (session mode) vs. directly against the primary, in the same
# run, interleaved. Prints tps for both and the ratio.
#   benches/pgbench_session.sh [--clients 10] [--seconds 15] [--rounds 3] [--scale 10]
# A/B of builds: --bin PATH (repeatable) rotates several pgpivot binaries through the same rounds
# and prints each one's CPU per transaction; --rate TPS fixes pgbench's rate so every binary does
# the same work. --pgbouncer and --relay add PgBouncer and a bare TCP relay (tcp-relay: the cost of
# moving the bytes alone) to the rotation. PGBENCH_COMPARE_DIAG=1 splits every run's machine CPU
# per transaction into pgbench, the proxy (user time apart) and the rest (PostgreSQL).
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/local/install-deps.sh
cargo build --release -q -p pgpivot -p pgpivot-benches
exec target/release/pgbench-compare "$@"
