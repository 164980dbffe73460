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

fn parse_entry(entry: &str) -> Result<BackendNode, String> {
    // An IPv6 host may be bracketed: 0:[::1]:5432
    let (id_part, rest) = entry
        .split_once(':')
        .ok_or("expected num:host[:port[:weight[:datadir[:flag]]]]")?;
    let id: usize = id_part
        .parse()
        .map_err(|_| format!("node number `{id_part}` is not a number"))?;
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
}
