#!/usr/bin/env bash
# Installs what pgpivot's quickstart, tests and benchmarks need on a Debian machine, if missing:
# PostgreSQL 15 server binaries (initdb, pg_ctl, pg_basebackup, pgbench), repmgr, and the real
# clients of the client tests and matrix (tests/tests/client_matrix.rs): psycopg 3 and asyncpg
# (PyPI), PgJDBC and a JDK (Debian), node-postgres with its COPY and cursor helpers (npm, into
# tests/matrix/node/node_modules from the committed lock file). Safe to run repeatedly; does
# nothing when all is present.
set -euo pipefail

PGBIN="${PGPIVOT_PG_BIN:-/usr/lib/postgresql/15/bin}"
need_apt=()
for bin in initdb pg_ctl pg_basebackup postgres pgbench psql; do
    [ -x "$PGBIN/$bin" ] || { need_apt+=(postgresql-15 postgresql-client-15); break; }
done
[ -x "$PGBIN/repmgr" ] || need_apt+=(postgresql-15-repmgr)
command -v python3 >/dev/null || need_apt+=(python3 python3-pip)
[ -f /usr/share/java/postgresql.jar ] || need_apt+=(libpostgresql-jdbc-java)
{ command -v javac >/dev/null && command -v java >/dev/null; } || need_apt+=(default-jdk-headless)
command -v node >/dev/null || need_apt+=(nodejs)
command -v npm >/dev/null || need_apt+=(npm)

if [ ${#need_apt[@]} -gt 0 ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "missing packages: ${need_apt[*]} (run as root, or: sudo apt-get install -y ${need_apt[*]})" >&2
        exit 1
    fi
    echo "installing: ${need_apt[*]}" >&2
    # Debian's postinst would start a default cluster on 5432; we run our own on free ports.
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    apt-get update -qq
    apt-get install -y -qq "${need_apt[@]}" >/dev/null
    rm -f /usr/sbin/policy-rc.d
fi

if ! python3 -c 'import psycopg' 2>/dev/null; then
    echo "installing psycopg (PyPI)" >&2
    python3 -m pip install -q 'psycopg[binary]>=3.1' 2>/dev/null \
        || python3 -m pip install -q --break-system-packages 'psycopg[binary]>=3.1'
fi
if ! python3 -c 'import asyncpg' 2>/dev/null; then
    echo "installing asyncpg (PyPI)" >&2
    python3 -m pip install -q 'asyncpg>=0.29' 2>/dev/null \
        || python3 -m pip install -q --break-system-packages 'asyncpg>=0.29'
fi

# node-postgres for the matrix: exactly the lock file's versions; reinstalled when the lock changes.
node_dir="$(cd "$(dirname "$0")/../.." && pwd)/tests/matrix/node"
if ! cmp -s "$node_dir/package-lock.json" "$node_dir/node_modules/.pgpivot-lock" 2>/dev/null; then
    echo "installing node-postgres (npm) into $node_dir/node_modules" >&2
    (cd "$node_dir" && npm ci --silent --no-audit --no-fund >/dev/null)
    cp "$node_dir/package-lock.json" "$node_dir/node_modules/.pgpivot-lock"
fi
