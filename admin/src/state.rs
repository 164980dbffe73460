//! What admin commands read and what they ask the proxy to do.
//!
//! The proxy implements [`Control`] over its live state (routing table, monitor, pools, client
//! registry). Every read is a snapshot of cached state: no admin answer ever waits on a backend,
//! so `SHOW pool_nodes` stays fast while a node hangs.

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, SystemTime};

/// One backend as the monitor sees it.
#[derive(Debug, Clone, Default)]
pub struct NodeInfo {
    pub id: usize,
    pub host: String,
    pub port: u16,
    pub weight: f64,
    /// The last probe's answer: `Some(true)` reachable, `Some(false)` down, `None` not yet probed.
    pub reachable: Option<bool>,
    /// Role as last probed: "primary", "standby", "stale primary" or "unknown".
    pub probed_role: &'static str,
    /// pgpivot routes writes here now.
    pub routed_primary: bool,
    /// Taken out of service by `DETACH NODE`.
    pub detached: bool,
    /// Why the node gets no writes although it says it is a primary.
    pub fenced: Option<String>,
    pub timeline: Option<u32>,
    /// WAL position: current on a primary, replayed on a standby.
    pub lsn: Option<u64>,
    /// Bytes a standby's replay is behind the routed primary.
    pub lag_bytes: Option<u64>,
    /// How far a standby's replay is behind in seconds (`None` on a primary).
    pub lag_seconds: Option<f64>,
    /// A standby's WAL receiver status as it reports it (`streaming`, ...).
    pub replication_state: Option<String>,
    /// A standby's `sync_state` in the routed primary's `pg_stat_replication` (`sync`,
    /// `async`, `potential`, `quorum`), found by the name its WAL receiver gives.
    pub replication_sync_state: Option<String>,
    pub last_probe: Option<SystemTime>,
    pub last_latency: Option<Duration>,
    pub consecutive_failures: u32,
    pub last_error: Option<String>,
    pub last_status_change: Option<SystemTime>,
    pub checks: CheckStats,
    pub statements: StatementCounts,
}

/// Health-check (probe) history of one node, for `SHOW pool_health_check_stats`.
#[derive(Debug, Clone, Default)]
pub struct CheckStats {
    pub total: u64,
    pub success: u64,
    pub fail: u64,
    /// Failed probes that were retried before the node was declared down.
    pub retry: u64,
    pub max_retry: u64,
    pub min_duration: Option<Duration>,
    pub max_duration: Option<Duration>,
    pub total_duration: Duration,
    pub last_check: Option<SystemTime>,
    pub last_success: Option<SystemTime>,
    pub last_failure: Option<SystemTime>,
}

/// Statements sent to a node, by kind, for `SHOW pool_backend_stats`.
#[derive(Debug, Clone, Copy, Default)]
pub struct StatementCounts {
    pub select: u64,
    pub insert: u64,
    pub update: u64,
    pub delete: u64,
    pub ddl: u64,
    pub other: u64,
    pub panic: u64,
    pub fatal: u64,
    pub error: u64,
}

/// One pool: server connections to one node for one (user, database, options).
#[derive(Debug, Clone, Default)]
pub struct PoolInfo {
    pub node_id: usize,
    pub user: String,
    pub database: String,
    pub mode: &'static str,
    pub size: usize,
    pub idle: usize,
    pub active: usize,
    pub waiting: usize,
    pub connects: u64,
    pub stats: PoolStats,
}

/// Traffic through one pool since start.
#[derive(Debug, Clone, Copy, Default)]
pub struct PoolStats {
    pub transactions: u64,
    pub queries: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub wait: Duration,
    pub query_time: Duration,
    pub query_p99: Option<Duration>,
}

/// One client connection.
#[derive(Debug, Clone, Default)]
pub struct ClientInfo {
    /// The id `KILL CLIENT` takes (also the pid in the client's BackendKeyData).
    pub id: i32,
    pub user: String,
    pub database: String,
    pub application_name: String,
    pub addr: String,
    pub connected_at: Option<SystemTime>,
    /// TLS version and cipher suite (as PgBouncer's `tls` column); empty in plaintext.
    pub tls: String,
    /// "idle", "active" (holds a server connection) or "waiting" (for one).
    pub state: &'static str,
    pub server_pid: Option<i32>,
    pub node_id: Option<usize>,
    pub pinned: Option<&'static str>,
    /// Seconds since the client last sent anything, unless it is waiting for an answer (0).
    pub idle_seconds: u64,
}

/// One server connection.
#[derive(Debug, Clone, Default)]
pub struct ServerInfo {
    pub pid: i32,
    pub node_id: usize,
    pub user: String,
    pub database: String,
    /// "idle" (in the pool) or "active" (attached to a client).
    pub state: &'static str,
    pub connected_at: Option<SystemTime>,
    pub client_id: Option<i32>,
}

/// One effective setting (secrets already masked by the proxy).
#[derive(Debug, Clone)]
pub struct SettingInfo {
    pub key: String,
    pub value: String,
    pub source: String,
    pub help: String,
}

/// One change of primary.
#[derive(Debug, Clone)]
pub struct FailoverInfo {
    pub at: SystemTime,
    pub from: Option<usize>,
    pub to: usize,
    pub generation: u64,
    /// From losing the old primary to routing to the new one.
    pub gap: Option<Duration>,
    /// Client sessions that had a server connection on the old primary.
    pub clients_affected: u64,
}

/// What pgpivot's process looks like, for `SHOW pool_processes` and `SHOW VERSION`.
#[derive(Debug, Clone, Default)]
pub struct ProcessInfo {
    pub pid: u32,
    pub started_at: Option<SystemTime>,
    pub version: String,
    pub clients: usize,
    pub paused: bool,
}

/// What an operator asks pgpivot to do (the console's commands that change something; the
/// proxy carries them out in `Control::act`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// `PAUSE`: let running transactions finish and hold new ones (a planned switchover with
    /// no client errors).
    Pause,
    /// `RESUME`: release the transactions PAUSE held.
    Resume,
    /// `RELOAD`: re-read the configuration file and `NAME_FILE` secrets without dropping
    /// clients (also SIGHUP).
    Reload,
    /// `DETACH NODE n`: no traffic, never chosen as primary, until `ATTACH NODE n`.
    DetachNode(usize),
    /// `ATTACH NODE n`: back in service; the monitor decides its role.
    AttachNode(usize),
    /// `SET PRIMARY n` / `SET PRIMARY AUTO`: the operator's decision when fencing refuses to
    /// guess (a tie); `None` hands it back to the monitor.
    SetPrimary(Option<usize>),
    /// `KILL CLIENT id`: end one client's session (57P01).
    KillClient(i32),
    /// `SHUTDOWN`: drain and stop, as SIGTERM does.
    Shutdown,
}

impl Action {
    /// The completion tag, as PostgreSQL names a command by its first word.
    pub fn tag(&self) -> &'static str {
        match self {
            Action::Pause => "PAUSE",
            Action::Resume => "RESUME",
            Action::Reload => "RELOAD",
            Action::DetachNode(_) => "DETACH",
            Action::AttachNode(_) => "ATTACH",
            Action::SetPrimary(_) => "SET",
            Action::KillClient(_) => "KILL",
            Action::Shutdown => "SHUTDOWN",
        }
    }
}

pub type ActionFuture<'a> = Pin<Box<dyn Future<Output = Result<String, String>> + Send + 'a>>;

/// The proxy's side of the admin commands.
pub trait Control: Send + Sync {
    fn nodes(&self) -> Vec<NodeInfo>;
    fn pools(&self) -> Vec<PoolInfo>;
    fn clients(&self) -> Vec<ClientInfo>;
    fn servers(&self) -> Vec<ServerInfo>;
    fn settings(&self) -> Vec<SettingInfo>;
    fn failovers(&self) -> Vec<FailoverInfo>;
    fn process(&self) -> ProcessInfo;
    /// Carries out an action; `Ok` holds the message the operator sees (as a NOTICE-free
    /// CommandComplete tag or a one-row result), `Err` a reason.
    fn act(&self, action: Action) -> ActionFuture<'_>;
}
