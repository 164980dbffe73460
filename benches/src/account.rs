//! Running the comparison targets as the `postgres` account when we are root (PgBouncer refuses
//! to run as root, like the PostgreSQL fixture's servers) — the fixture's helpers, under the
//! names the targets use — and the open-file limit thousands of clients need.

pub use pgpivot_tests::{
    as_postgres, chown_to_pg as chown_to_postgres, running_as_root, write_pg_file as write_private,
};

/// Raises this process's open-file limit to its hard limit, and the hard limit to `want` when
/// we may (root). Children inherit it, which is how PgBouncer and pgpivot get room for
/// thousands of clients.
pub fn raise_nofile(want: u64) -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain getrlimit/setrlimit on a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        if running_as_root() && lim.rlim_max < want as libc::rlim_t {
            let mut raised = lim;
            raised.rlim_max = want as libc::rlim_t;
            raised.rlim_cur = want as libc::rlim_t;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                return want;
            }
        }
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur
    }
}
