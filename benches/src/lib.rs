//! Shared pieces of the benchmark programs (see `src/bin/`).
