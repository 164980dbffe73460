//! Running the comparison targets as the `postgres` account when we are root (PgBouncer refuses
//! to run as root, and the PostgreSQL fixture does the same for its servers), and making the
//! files they read theirs.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

use anyhow::{anyhow, Context};

/// uid, gid and home of the `postgres` account.
#[derive(Debug, Clone)]
pub struct Account {
    pub uid: u32,
    pub gid: u32,
    pub home: String,
}

pub fn running_as_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// The `postgres` account (looked up once: getpwnam is not thread-safe).
pub fn postgres_account() -> anyhow::Result<Account> {
    static ACCOUNT: OnceLock<Result<Account, String>> = OnceLock::new();
    ACCOUNT
        .get_or_init(|| {
            // SAFETY: valid C string; the record is copied out at once, under the OnceLock.
            unsafe {
                let pw = libc::getpwnam(c"postgres".as_ptr());
                if pw.is_null() {
                    return Err("running as root but there is no `postgres` user \
                                (install postgresql-15, which creates it)"
                        .into());
                }
                Ok(Account {
                    uid: (*pw).pw_uid,
                    gid: (*pw).pw_gid,
                    home: std::ffi::CStr::from_ptr((*pw).pw_dir)
                        .to_string_lossy()
                        .into_owned(),
                })
            }
        })
        .clone()
        .map_err(|e| anyhow!(e))
}

/// Makes `cmd` run as `postgres` when we are root (no-op otherwise).
pub fn as_postgres(cmd: &mut Command) -> anyhow::Result<()> {
    if running_as_root() {
        let a = postgres_account()?;
        cmd.uid(a.uid)
            .gid(a.gid)
            .env("HOME", &a.home)
            .env("USER", "postgres")
            .env("LOGNAME", "postgres");
    }
    Ok(())
}

/// Gives `path` to `postgres` when we are root (no-op otherwise).
pub fn chown_to_postgres(path: &Path) -> anyhow::Result<()> {
    if running_as_root() {
        let a = postgres_account()?;
        std::os::unix::fs::chown(path, Some(a.uid), Some(a.gid))
            .with_context(|| format!("chown {} to postgres", path.display()))?;
    }
    Ok(())
}

/// Writes a file a target reads (mode 0600, owned by the account it runs as).
pub fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    chown_to_postgres(path)
}

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
