//! PgBouncer from Debian's package, transaction pooling in front of one node.

use std::process::Command;
use std::time::Duration;

use pgpivot_tests::{free_port, Cluster};

use super::{Kind, PoolSettings, Target};
use crate::account::{as_postgres, write_private};
use crate::daemon::{Daemon, WorkDir};

pub const BINARY: &str = "/usr/sbin/pgbouncer";

/// Starts PgBouncer pointing at node `node` of `cluster` (it has no notion of a primary).
pub fn start(cluster: &Cluster, node: usize, s: &PoolSettings) -> anyhow::Result<Target> {
    let dir = WorkDir::new("pgpivot-bench-pgbouncer-")?;
    let o = cluster.options();
    let port = free_port();
    let userlist = dir.path().join("userlist.txt");
    write_private(
        &userlist,
        &format!("\"{}\" \"{}\"\n", o.app_user, o.app_password),
    )?;
    let ini = dir.path().join("pgbouncer.ini");
    write_private(
        &ini,
        &format!(
            "[databases]\n\
             {db} = host=127.0.0.1 port={backend} dbname={db}\n\
             \n\
             [pgbouncer]\n\
             listen_addr = 127.0.0.1\n\
             listen_port = {port}\n\
             unix_socket_dir =\n\
             listen_backlog = 4096\n\
             auth_type = {auth}\n\
             auth_file = {userlist}\n\
             pool_mode = transaction\n\
             default_pool_size = {pool}\n\
             max_client_conn = {max_clients}\n\
             logfile =\n\
             pidfile =\n\
             log_connections = 0\n\
             log_disconnections = 0\n\
             ignore_startup_parameters = extra_float_digits\n",
            db = o.database,
            backend = cluster.port(node),
            auth = s.auth,
            userlist = userlist.display(),
            pool = s.pool_size,
            max_clients = s.max_clients,
        ),
    )?;
    let mut cmd = Command::new(BINARY);
    cmd.arg(&ini).current_dir(dir.path());
    as_postgres(&mut cmd)?;
    // SIGTERM: immediate shutdown.
    let mut daemon = Daemon::spawn(
        "pgbouncer",
        cmd,
        &dir.path().join("pgbouncer.log"),
        libc::SIGTERM,
    )?;
    daemon.wait_listening(&format!("127.0.0.1:{port}"), Duration::from_secs(15))?;
    Ok(Target {
        kind: Kind::PgBouncer,
        port,
        client_limit: Some(s.max_clients),
        daemon: Some(daemon),
        dir: Some(dir),
    })
}
