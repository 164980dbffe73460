//! One PostgreSQL server of a test cluster and its on-disk layout.
//!
//! Each node lives in `<cluster tmp>/nodeN/` with `data/` (the data
//! directory), `sock/` (its private unix socket directory, so nodes never
//! fight over socket lock files) and `postgres.log` (server log, appended to
//! across restarts so a failing test can show the whole history).
//!
//! Settings shared by all nodes go into the primary's `postgresql.conf`
//! and reach standbys through `pg_basebackup`. Settings that differ per
//! node (port, `cluster_name`, socket directory) live in
//! `data/pgpivot_node.conf`, included last and rewritten after every base
//! backup, because the backup copies the primary's version of the file.

use crate::exec::chown_to_pg;
use crate::procs;
use anyhow::Context;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Name of the per-node include file inside the data directory.
pub(crate) const NODE_CONF: &str = "pgpivot_node.conf";

/// How clients other than the local superuser authenticate over TCP
/// (the `host` lines for 127.0.0.1/32 in `pg_hba.conf`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AuthMethod {
    /// SCRAM-SHA-256 (the PostgreSQL 15 default).
    #[default]
    ScramSha256,
    /// MD5; passwords are then stored as MD5 hashes so MD5 is really used.
    Md5,
    /// Cleartext password.
    Password,
    /// No password at all.
    Trust,
}

impl AuthMethod {
    /// The keyword used in `pg_hba.conf`.
    pub fn hba_keyword(self) -> &'static str {
        match self {
            AuthMethod::ScramSha256 => "scram-sha-256",
            AuthMethod::Md5 => "md5",
            AuthMethod::Password => "password",
            AuthMethod::Trust => "trust",
        }
    }

    /// The matching `password_encryption` setting: MD5 hashes for the MD5
    /// method, SCRAM verifiers otherwise (they work for `password` too).
    pub fn password_encryption(self) -> &'static str {
        match self {
            AuthMethod::Md5 => "md5",
            _ => "scram-sha-256",
        }
    }
}

/// A PostgreSQL server of the cluster. Node 0 is the initial primary.
#[derive(Debug, Clone)]
pub struct Node {
    /// Index in `Cluster::nodes`, also used in `cluster_name` (`nodeN`) and
    /// in the replication slot name (`slotN`).
    pub id: usize,
    /// TCP port on 127.0.0.1 (stable across restarts of this node).
    pub port: u16,
    /// `<tmp>/nodeN`.
    pub dir: PathBuf,
    /// The data directory (`<tmp>/nodeN/data`).
    pub data_dir: PathBuf,
    /// The unix socket directory (`<tmp>/nodeN/sock`).
    pub socket_dir: PathBuf,
    /// The server log (`<tmp>/nodeN/postgres.log`).
    pub log_file: PathBuf,
}

impl Node {
    /// Describes node `id` under `root` and creates its directories
    /// (owned by postgres when we are root). The data dir is not created:
    /// initdb / pg_basebackup do that with the permissions they insist on.
    pub(crate) fn create(root: &Path, id: usize, port: u16) -> anyhow::Result<Node> {
        let dir = root.join(format!("node{id}"));
        let node = Node {
            id,
            port,
            data_dir: dir.join("data"),
            socket_dir: dir.join("sock"),
            log_file: dir.join("postgres.log"),
            dir,
        };
        for d in [&node.dir, &node.socket_dir] {
            fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
            fs::set_permissions(d, fs::Permissions::from_mode(0o700))?;
            chown_to_pg(d)?;
        }
        Ok(node)
    }

    /// `nodeN`, used as `cluster_name` and thus as the standby's
    /// `application_name` in `pg_stat_replication`.
    pub fn name(&self) -> String {
        format!("node{}", self.id)
    }

    /// Replication slot this node streams from when it is a standby.
    pub fn slot_name(&self) -> String {
        format!("slot{}", self.id)
    }

    /// Writes the per-node include file (port, name, socket directory).
    pub(crate) fn write_node_conf(&self) -> anyhow::Result<()> {
        let path = self.data_dir.join(NODE_CONF);
        let text = format!(
            "# Written by the pgpivot test fixture; per-node settings.\n\
             port = {}\n\
             cluster_name = '{}'\n\
             unix_socket_directories = '{}'\n",
            self.port,
            self.name(),
            self.socket_dir.display()
        );
        write_pg_file(&path, &text)
    }

    /// PID of the running postmaster, if any.
    pub fn postmaster_pid(&self) -> Option<i32> {
        procs::live_postmaster(&self.data_dir)
    }

    /// True when the postmaster of this node is alive.
    pub fn is_running(&self) -> bool {
        self.postmaster_pid().is_some()
    }

    /// The last `max_bytes` of the server log, for error messages.
    pub fn log_tail(&self, max_bytes: usize) -> String {
        let text = fs::read(&self.log_file).unwrap_or_default();
        let start = text.len().saturating_sub(max_bytes);
        String::from_utf8_lossy(&text[start..]).into_owned()
    }
}

/// Writes a file the server will read (mode 0600), owned by postgres when we are root.
pub fn write_pg_file(path: &Path, text: &str) -> anyhow::Result<()> {
    fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))?;
    chown_to_pg(path)
}

/// Contents of `pg_hba.conf`: trust for the local superuser over the unix
/// socket and for replication over loopback (the fixture itself connects
/// that way), `method` for everyone else over 127.0.0.1.
pub(crate) fn hba_conf(method: AuthMethod, repmgr: bool) -> String {
    let m = method.hba_keyword();
    let repmgr_lines = if repmgr { crate::repmgr::HBA_LINES } else { "" };
    format!(
        "# Written by the pgpivot test fixture.\n{repmgr_lines}\
         local   all          all                    trust\n\
         local   replication  all                    trust\n\
         host    replication  postgres  127.0.0.1/32 trust\n\
         host    all          all       127.0.0.1/32 {m}\n\
         host    replication  all       127.0.0.1/32 {m}\n"
    )
}

/// Quotes a SQL string literal.
pub(crate) fn sql_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Quotes a SQL identifier.
pub(crate) fn sql_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}
