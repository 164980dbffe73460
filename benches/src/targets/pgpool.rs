//! Pgpool-II from Debian's package, configured the way Bitnami's `pgpool` image configures it
//! (`libpgpool.sh`): streaming-replication mode, load balancing on with
//! `disable_load_balance_on_write = 'transaction'`, `max_pool = 15`, connection cache on,
//! `failover_on_backend_shutdown = on`, `failover_on_backend_error = off`,
//! `search_primary_node_timeout = 0`, pool_hba with SCRAM, pool_passwd (here in `TEXT` form), and a
//! `failover_command` that only logs. Health and streaming-replication checks run every
//! `pgpool_check_period` seconds without retries (Bitnami's defaults are 30 s with 5 retries 5 s
//! apart, which would take a minute to notice a dead primary).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use pgpivot_tests::{free_port, Cluster};

use super::{Kind, PoolSettings, Target};
use crate::account::{as_postgres, chown_to_postgres, write_private};
use crate::daemon::{Daemon, WorkDir};

pub const BINARY: &str = "/usr/sbin/pgpool";

/// The failover command's log inside the target's directory.
pub const FAILOVER_LOG: &str = "failover_command.log";

fn config(cluster: &Cluster, s: &PoolSettings, dir: &Path, port: u16, children: u32) -> String {
    let o = cluster.options();
    let d = dir.display();
    let mut c = format!(
        "backend_clustering_mode = 'streaming_replication'\n\
         listen_addresses = '127.0.0.1'\n\
         port = {port}\n\
         socket_dir = '{d}'\n\
         pcp_listen_addresses = ''\n\
         pcp_port = {pcp}\n\
         pcp_socket_dir = '{d}'\n\
         wd_ipc_socket_dir = '{d}'\n\
         listen_backlog_multiplier = 2\n\
         num_init_children = {children}\n\
         reserved_connections = 0\n\
         max_pool = 15\n\
         connection_cache = on\n\
         child_life_time = 300\n\
         connection_life_time = 0\n\
         client_idle_limit = 0\n\
         enable_pool_hba = on\n\
         allow_clear_text_frontend_auth = off\n\
         pool_passwd = '{d}/pool_passwd'\n\
         authentication_timeout = 30\n\
         load_balance_mode = {lb}\n\
         disable_load_balance_on_write = 'transaction'\n\
         statement_level_load_balance = off\n\
         sr_check_user = '{cu}'\n\
         sr_check_password = '{cp}'\n\
         sr_check_database = 'postgres'\n\
         sr_check_period = {period}\n\
         health_check_period = {period}\n\
         health_check_timeout = 10\n\
         health_check_user = '{cu}'\n\
         health_check_password = '{cp}'\n\
         health_check_database = 'postgres'\n\
         health_check_max_retries = 0\n\
         health_check_retry_delay = 1\n\
         connect_timeout = 10000\n\
         failover_command = '{d}/failover.sh %d %h %p %D %m %H %M %P %r %R %N %S'\n\
         follow_primary_command = ''\n\
         failover_on_backend_error = off\n\
         failover_on_backend_shutdown = on\n\
         search_primary_node_timeout = 0\n\
         auto_failback = off\n\
         use_watchdog = off\n\
         memory_cache_enabled = off\n\
         log_destination = 'stderr'\n\
         logging_collector = off\n\
         log_min_messages = warning\n\
         log_connections = off\n\
         pid_file_name = '{d}/pgpool.pid'\n\
         logdir = '{d}'\n\
         memqcache_oiddir = '{d}/oiddir'\n",
        pcp = free_port(),
        lb = if s.pgpool_load_balance { "on" } else { "off" },
        cu = o.check_user,
        cp = o.check_password,
        period = s.pgpool_check_period,
    );
    for n in &cluster.nodes {
        c.push_str(&format!(
            "backend_hostname{i} = '127.0.0.1'\n\
             backend_port{i} = {p}\n\
             backend_weight{i} = 1\n\
             backend_data_directory{i} = '{dd}'\n\
             backend_flag{i} = 'ALLOW_TO_FAILOVER'\n",
            i = n.id,
            p = n.port,
            dd = n.data_dir.display(),
        ));
    }
    c
}

/// Starts Pgpool-II in front of every node of `cluster`. `children` overrides the number of
/// child processes (default: the pool size), which is also the most clients it holds at once.
pub fn start(cluster: &Cluster, s: &PoolSettings, children: Option<u32>) -> anyhow::Result<Target> {
    let dir = WorkDir::new("pgpivot-bench-pgpool-")?;
    let o = cluster.options();
    let port = free_port();
    let children = children.or(s.pgpool_children).unwrap_or(s.pool_size);
    let d = dir.path();
    std::fs::create_dir_all(d.join("oiddir"))?;
    chown_to_postgres(&d.join("oiddir"))?;
    write_private(
        &d.join("pgpool.conf"),
        &config(cluster, s, d, port, children),
    )?;
    write_private(
        &d.join("pool_hba.conf"),
        &format!(
            "local all all trust\n\
             host all {cu} 127.0.0.1/32 trust\n\
             host all all 127.0.0.1/32 {auth}\n",
            cu = o.check_user,
            auth = s.auth
        ),
    )?;
    write_private(
        &d.join("pool_passwd"),
        &format!("{}:TEXT{}\n", o.app_user, o.app_password),
    )?;
    write_private(&d.join("pcp.conf"), "")?;
    let script = d.join("failover.sh");
    write_private(
        &script,
        &format!(
            "#!/bin/sh\n# Only logs, as Bitnami's image does (it echoes a line).\n\
             echo \"$(date +%H:%M:%S.%N) failover_command $*\" >> '{}/{FAILOVER_LOG}'\nexit 0\n",
            d.display()
        ),
    )?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o700))?;
    }
    let mut cmd = Command::new(BINARY);
    cmd.args(["-n", "-D"])
        .arg("-f")
        .arg(d.join("pgpool.conf"))
        .arg("-F")
        .arg(d.join("pcp.conf"))
        .arg("-a")
        .arg(d.join("pool_hba.conf"))
        .current_dir(d);
    as_postgres(&mut cmd)?;
    // SIGINT: fast shutdown (SIGTERM would wait for clients).
    let mut daemon = Daemon::spawn("pgpool", cmd, &d.join("pgpool.log"), libc::SIGINT)?;
    daemon.wait_listening(&format!("127.0.0.1:{port}"), Duration::from_secs(30))?;
    Ok(Target {
        kind: Kind::Pgpool,
        port,
        client_limit: Some(children),
        daemon: Some(daemon),
        dir: Some(dir),
    })
}
