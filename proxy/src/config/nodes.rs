//! `PGPOOL_BACKEND_NODES`: `num:host[:port[:weight[:datadir[:flag]]]]`, entries separated by
//! `,`, `;` or white space, a trailing separator allowed (the Bitnami chart emits one).

/// Pgpool's per-node flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeFlag {
    AllowToFailover,
    DisallowToFailover,
    /// The operator says this node is the primary; role probes still run, but other nodes never
    /// get writes.
    AlwaysPrimary,
}

impl NodeFlag {
    pub fn as_str(&self) -> &'static str {
        match self {
            NodeFlag::AllowToFailover => "ALLOW_TO_FAILOVER",
            NodeFlag::DisallowToFailover => "DISALLOW_TO_FAILOVER",
            NodeFlag::AlwaysPrimary => "ALWAYS_PRIMARY",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct BackendNode {
    pub id: usize,
    pub host: String,
    pub port: u16,
    pub weight: f64,
    pub data_dir: Option<String>,
    pub flag: NodeFlag,
}

impl BackendNode {
    pub fn addr(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// Splits a Bitnami list (`,`, `;` or white space; empty items dropped).
pub fn split_list(v: &str) -> Vec<&str> {
    v.split([',', ';', ' ', '\t', '\n'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect()
}

/// Parses the whole node list. Errors say which entry is wrong and why.
pub fn parse_backend_nodes(v: &str) -> Result<Vec<BackendNode>, String> {
    let mut nodes: Vec<BackendNode> = Vec::new();
    for entry in split_list(v) {
        let node = parse_entry(entry).map_err(|e| format!("entry `{entry}`: {e}"))?;
        if nodes.iter().any(|n| n.id == node.id) {
            return Err(format!(
                "entry `{entry}`: node number {} appears twice",
                node.id
            ));
        }
        nodes.push(node);
    }
    if nodes.is_empty() {
        return Err("no backend nodes".into());
    }
    if nodes
        .iter()
        .filter(|n| n.flag == NodeFlag::AlwaysPrimary)
        .count()
        > 1
    {
        return Err("more than one node is flagged ALWAYS_PRIMARY".into());
    }
    nodes.sort_by_key(|n| n.id);
    Ok(nodes)
}

/// Pgpool's limit on backend numbers (`backend_hostname0` … `backend_hostname127`).
pub const MAX_NODE_ID: usize = 127;

fn parse_entry(entry: &str) -> Result<BackendNode, String> {
    // An IPv6 host must be bracketed: 0:[::1]:5432
    let (id_part, rest) = entry
        .split_once(':')
        .ok_or("expected num:host[:port[:weight[:datadir[:flag]]]]")?;
    let id: usize = id_part
        .parse()
        .map_err(|_| format!("node number `{id_part}` is not a number"))?;
    if id > MAX_NODE_ID {
        return Err(format!(
            "node number {id} is out of range (0 to {MAX_NODE_ID}, as in Pgpool)"
        ));
    }
    parse_fields(id, rest).map_err(|e| {
        if looks_like_bare_ipv6(rest) {
            format!("an IPv6 address must be in brackets, e.g. {id_part}:[::1]:5432")
        } else {
            e
        }
    })
}

fn parse_fields(id: usize, rest: &str) -> Result<BackendNode, String> {
    let (host, rest) = if let Some(r) = rest.strip_prefix('[') {
        let (h, after) = r.split_once(']').ok_or("unclosed `[` in host")?;
        (h.to_string(), after.strip_prefix(':').unwrap_or(after))
    } else {
        match rest.split_once(':') {
            Some((h, r)) => (h.to_string(), r),
            None => (rest.to_string(), ""),
        }
    };
    if host.is_empty() {
        return Err("empty host".into());
    }
    let mut fields = rest.split(':');
    let port = match fields.next().filter(|s| !s.is_empty()) {
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or(format!("port `{p}` is not a valid port"))?,
        None => 5432,
    };
    let weight = match fields.next().filter(|s| !s.is_empty()) {
        Some(w) => w
            .parse::<f64>()
            .ok()
            .filter(|w| w.is_finite() && *w >= 0.0)
            .ok_or(format!("weight `{w}` is not a non-negative number"))?,
        None => 1.0,
    };
    let data_dir = fields.next().filter(|s| !s.is_empty()).map(str::to_string);
    let flag = match fields.next().filter(|s| !s.is_empty()) {
        None => NodeFlag::AllowToFailover,
        Some(f) => match f.to_ascii_uppercase().as_str() {
            "ALLOW_TO_FAILOVER" => NodeFlag::AllowToFailover,
            "DISALLOW_TO_FAILOVER" => NodeFlag::DisallowToFailover,
            "ALWAYS_PRIMARY" => NodeFlag::AlwaysPrimary,
            _ => return Err(format!("unknown flag `{f}`")),
        },
    };
    if fields.next().is_some() {
        return Err("too many fields".into());
    }
    Ok(BackendNode {
        id,
        host,
        port,
        weight,
        data_dir,
        flag,
    })
}

/// Whether `host[:port…]`, which did not parse, is an unbracketed IPv6 address: it starts with
/// at least three hex groups (`::1`, `fe80::1%eth0`, `2001:db8:…`), with an empty group (`::`)
/// or more groups than the format has fields. Only asked after a failure, so an all-hex host
/// name such as `cafe:5432` keeps its meaning.
fn looks_like_bare_ipv6(rest: &str) -> bool {
    if rest.starts_with('[') {
        return false;
    }
    let mut groups = Vec::new();
    for field in rest.split(':') {
        let (hex, zone) = match field.split_once('%') {
            Some((h, _)) => (h, true),
            None => (field, false),
        };
        if hex.len() > 4 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            break;
        }
        groups.push(hex);
        if zone {
            break;
        }
    }
    groups.len() >= 3 && (groups.iter().any(|g| g.is_empty()) || groups.len() > 5)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bitnami_chart_form_with_trailing_comma() {
        let n = parse_backend_nodes(
            "0:pg-0.pg-headless.ns.svc.cluster.local:5432,1:pg-1.pg-headless.ns.svc.cluster.local:5432,",
        )
        .unwrap();
        assert_eq!(n.len(), 2);
        assert_eq!(n[1].id, 1);
        assert_eq!(n[1].port, 5432);
        assert_eq!(n[0].flag, NodeFlag::AllowToFailover);
    }

    #[test]
    fn all_fields_separators_and_defaults() {
        let n = parse_backend_nodes(
            "1:db1;0:db0:6000:2:/data:ALWAYS_PRIMARY 2:[::1]:7000::/d2:disallow_to_failover",
        )
        .unwrap();
        assert_eq!(n[0].id, 0);
        assert_eq!(n[0].port, 6000);
        assert_eq!(n[0].weight, 2.0);
        assert_eq!(n[0].data_dir.as_deref(), Some("/data"));
        assert_eq!(n[0].flag, NodeFlag::AlwaysPrimary);
        assert_eq!(n[1].port, 5432);
        assert_eq!(n[2].host, "::1");
        assert_eq!(n[2].addr(), "[::1]:7000");
        assert_eq!(n[2].flag, NodeFlag::DisallowToFailover);
    }

    #[test]
    fn bad_entries_are_named() {
        for bad in [
            "",
            ",,",
            "x:host",
            "0:",
            "0:h:99999",
            "0:h:0",
            "0:h:1:-1",
            "0:h:1:1:/d:WHATEVER",
            "0:h,0:i",
            "0:h:1:1:/d:ALWAYS_PRIMARY,1:i:1:1:/d:ALWAYS_PRIMARY",
            "0:h:1:1:/d:ALLOW_TO_FAILOVER:extra",
        ] {
            assert!(parse_backend_nodes(bad).is_err(), "{bad:?} accepted");
        }
        let e = parse_backend_nodes("0:h:notaport").unwrap_err();
        assert!(e.contains("0:h:notaport"), "{e}");
    }

    #[test]
    fn node_numbers_stop_at_127() {
        assert_eq!(parse_backend_nodes("127:h").unwrap()[0].id, 127);
        let e = parse_backend_nodes("128:h").unwrap_err();
        assert!(e.contains("0 to 127"), "{e}");
        assert!(parse_backend_nodes("99999999999999999999:h").is_err());
    }

    #[test]
    fn unbracketed_ipv6_says_to_bracket_it() {
        for bad in [
            "0:::1",
            "0:::1:5432",
            "0:fe80::1%eth0",
            "0:fe80::1%eth0:5432",
            "0:2001:db8:0:0:0:0:0:1",
            "0:2001:db8::1:5432:1",
        ] {
            let e = parse_backend_nodes(bad).unwrap_err();
            assert!(e.contains("brackets") && e.contains("[::1]"), "{bad}: {e}");
        }
        // Ordinary hosts, including all-hex names, keep their meaning.
        for good in [
            "0:cafe:5432",
            "0:db:5432:1:/d:ALWAYS_PRIMARY",
            "0:10.0.0.1:5432:1",
            "0:[fe80::1%eth0]:5432",
            "0:add:5432::/data",
        ] {
            assert!(parse_backend_nodes(good).is_ok(), "{good}");
        }
    }
}
