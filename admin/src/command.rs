//! Admin commands as typed values, parsed from the SQL text a client sends.
//!
//! Matching is case-insensitive and tolerant of whitespace and a trailing `;`, the way psql users
//! and scripts type them. The data port only ever intercepts the Pgpool `SHOW pool_*` commands
//! (everything else there belongs to PostgreSQL); the console accepts them all.

use crate::error::AdminError;
use crate::state::Action;

/// The Pgpool-II `SHOW pool_*` commands, answered on the data port too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolShow {
    Nodes,
    Version,
    Processes,
    Pools,
    HealthCheckStats,
    BackendStats,
}

impl PoolShow {
    const ALL: [(&'static str, PoolShow); 6] = [
        ("pool_nodes", PoolShow::Nodes),
        ("pool_version", PoolShow::Version),
        ("pool_processes", PoolShow::Processes),
        ("pool_pools", PoolShow::Pools),
        ("pool_health_check_stats", PoolShow::HealthCheckStats),
        ("pool_backend_stats", PoolShow::BackendStats),
    ];
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Pool(PoolShow),
    ShowNodes,
    ShowPools,
    ShowClients,
    ShowServers,
    ShowStats,
    ShowConfig,
    ShowVersion,
    ShowFailovers,
    ShowHelp,
    /// A command that changes something.
    Act(Action),
    /// An empty query string (psql sends these for a lone `;`).
    Empty,
}

/// Every console command with a one-line description, for `SHOW HELP` and error hints.
pub const HELP: &[(&str, &str)] = &[
    ("SHOW NODES", "every backend: role, status, timeline, WAL position, lag, probes, fencing"),
    ("SHOW POOLS", "server connections per pool: idle, active, waiting clients"),
    ("SHOW CLIENTS", "client connections"),
    ("SHOW SERVERS", "server connections"),
    ("SHOW STATS", "per pool: transactions, queries, bytes, wait time, query time"),
    ("SHOW CONFIG", "effective settings (secrets masked)"),
    ("SHOW VERSION", "pgpivot's version"),
    ("SHOW FAILOVERS", "history of primary changes"),
    ("SHOW pool_nodes | pool_version | pool_processes | pool_pools | pool_health_check_stats | pool_backend_stats", "Pgpool-II 4.5 compatible"),
    ("PAUSE", "let running transactions finish, hold new ones"),
    ("RESUME", "release held transactions"),
    ("RELOAD", "re-read the configuration (also on SIGHUP)"),
    ("DETACH NODE n", "take backend n out of service"),
    ("ATTACH NODE n", "put backend n back into service"),
    ("SET PRIMARY n | SET PRIMARY AUTO", "route writes to node n (the operator's decision) / let the monitor decide"),
    ("KILL CLIENT id", "disconnect one client"),
    ("SHUTDOWN", "drain and stop pgpivot"),
    ("SHOW HELP", "this list"),
];

/// Fast check for the data port: is this query text one of the Pgpool `SHOW pool_*` commands?
/// Cheap enough for every simple Query (a prefix test before any allocation).
pub fn pool_show(text: &[u8]) -> Option<PoolShow> {
    let t = trim(text);
    if t.len() < 9 || !t[..4].eq_ignore_ascii_case(b"show") || !t[4].is_ascii_whitespace() {
        return None;
    }
    let rest = trim(&t[4..]);
    PoolShow::ALL
        .iter()
        .find(|(name, _)| rest.eq_ignore_ascii_case(name.as_bytes()))
        .map(|(_, c)| *c)
}

/// Parses one console statement.
pub fn parse(text: &str) -> Result<Command, AdminError> {
    let t = std::str::from_utf8(trim(text.as_bytes())).unwrap_or("");
    if t.is_empty() {
        return Ok(Command::Empty);
    }
    if let Some(p) = pool_show(t.as_bytes()) {
        return Ok(Command::Pool(p));
    }
    let words: Vec<String> = t
        .split_whitespace()
        .map(|w| w.to_ascii_lowercase())
        .collect();
    let w: Vec<&str> = words.iter().map(String::as_str).collect();
    let cmd = match w.as_slice() {
        ["show", "nodes"] => Command::ShowNodes,
        ["show", "pools"] => Command::ShowPools,
        ["show", "clients"] => Command::ShowClients,
        ["show", "servers"] => Command::ShowServers,
        ["show", "stats"] => Command::ShowStats,
        ["show", "config"] => Command::ShowConfig,
        ["show", "version"] => Command::ShowVersion,
        ["show", "failovers"] => Command::ShowFailovers,
        ["show", "help"] => Command::ShowHelp,
        ["pause"] => Command::Act(Action::Pause),
        ["resume"] => Command::Act(Action::Resume),
        ["reload"] => Command::Act(Action::Reload),
        ["shutdown"] => Command::Act(Action::Shutdown),
        ["detach", "node", n] => Command::Act(Action::DetachNode(number(n, "node id")?)),
        ["attach", "node", n] => Command::Act(Action::AttachNode(number(n, "node id")?)),
        ["set", "primary", "auto"] => Command::Act(Action::SetPrimary(None)),
        ["set", "primary", n] => Command::Act(Action::SetPrimary(Some(number(n, "node id")?))),
        ["kill", "client", n] => Command::Act(Action::KillClient(number(n, "client id")?)),
        _ => return Err(AdminError::Unknown(t.to_string())),
    };
    Ok(cmd)
}

/// Splits a simple-query string into statements (admin commands never contain quoted `;`).
pub fn statements(text: &str) -> Vec<&str> {
    let parts: Vec<&str> = text
        .split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    if parts.is_empty() {
        vec![""]
    } else {
        parts
    }
}

fn number<T: std::str::FromStr>(s: &str, what: &'static str) -> Result<T, AdminError> {
    s.parse()
        .map_err(|_| AdminError::BadArgument(format!("{what} must be a number, got {s:?}")))
}

fn trim(mut t: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = t {
        if first.is_ascii_whitespace() {
            t = rest;
        } else {
            break;
        }
    }
    while let [rest @ .., last] = t {
        if last.is_ascii_whitespace() || *last == b';' || *last == 0 {
            t = rest;
        } else {
            break;
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_commands_are_recognised_the_way_people_type_them() {
        assert_eq!(pool_show(b"SHOW pool_nodes;"), Some(PoolShow::Nodes));
        assert_eq!(
            pool_show(b"  show   POOL_NODES ; \n"),
            Some(PoolShow::Nodes)
        );
        assert_eq!(pool_show(b"show\tpool_version"), Some(PoolShow::Version));
        assert_eq!(
            pool_show(b"SHOW pool_health_check_stats"),
            Some(PoolShow::HealthCheckStats)
        );
        assert_eq!(pool_show(b"SHOW pool_nodesx"), None);
        assert_eq!(pool_show(b"SHOW server_version"), None);
        assert_eq!(pool_show(b"SELECT 'SHOW pool_nodes'"), None);
        assert_eq!(pool_show(b"showpool_nodes"), None);
        assert_eq!(pool_show(b""), None);
        assert_eq!(pool_show(b"show"), None);
    }

    #[test]
    fn console_commands_parse_with_arguments() {
        assert_eq!(parse("show NODES;").unwrap(), Command::ShowNodes);
        assert_eq!(
            parse("Detach Node 1").unwrap(),
            Command::Act(Action::DetachNode(1))
        );
        assert_eq!(
            parse("SET PRIMARY 0").unwrap(),
            Command::Act(Action::SetPrimary(Some(0)))
        );
        assert_eq!(
            parse("set primary auto").unwrap(),
            Command::Act(Action::SetPrimary(None))
        );
        assert_eq!(
            parse("KILL CLIENT 1234").unwrap(),
            Command::Act(Action::KillClient(1234))
        );
        assert_eq!(parse(" ; ").unwrap(), Command::Empty);
        assert!(matches!(
            parse("DETACH NODE x"),
            Err(AdminError::BadArgument(_))
        ));
        assert!(matches!(parse("SELECT 1"), Err(AdminError::Unknown(_))));
        assert!(matches!(
            parse("show nodes please"),
            Err(AdminError::Unknown(_))
        ));
    }

    #[test]
    fn statements_split_on_semicolons() {
        assert_eq!(
            statements("SHOW NODES; SHOW POOLS;"),
            vec!["SHOW NODES", "SHOW POOLS"]
        );
        assert_eq!(statements(";"), vec![""]);
    }
}
