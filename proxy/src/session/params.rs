//! A client's session parameters without a private copy of everything: the pool's greeting,
//! shared by every client of that pool, plus only what differs for this client (its startup
//! parameters and the SETs the server reported). Ten thousand idle clients of one pool then
//! share one map.
//!
//! Both maps are shared and copied on write, so a snapshot of a client's parameters is two
//! pointer copies: a server connection keeps the snapshot it was last synced to, and the next
//! client with the same parameters (pointer-equal, or equal content: every pgbench client has
//! its own `application_name` map) is recognized without walking the greeting.

use std::collections::HashMap;
use std::sync::Arc;

pub type Params = HashMap<String, String>;

#[derive(Debug, Clone, Default)]
pub struct ClientParams {
    base: Arc<Params>,
    /// Entries that differ from `base` (behind a pointer: most clients have none or few).
    own: Option<Arc<Params>>,
    /// The reported parameters the client gave at startup, with the values the server reported
    /// for them: what RESET brings back (see [`ClientParams::restore_startup`]). Shared by
    /// clients logging in alike; not part of what is compared.
    startup: Option<Arc<Params>>,
}

impl ClientParams {
    pub fn new(base: Arc<Params>) -> Self {
        ClientParams {
            base,
            own: None,
            startup: None,
        }
    }

    /// Records the reported parameters among `names` (the client's startup GUCs) with their
    /// values now.
    pub fn set_startup<'a>(&mut self, names: impl Iterator<Item = &'a str>) {
        let startup: Params = names
            .filter(|k| super::startup_params::is_reported(k))
            .filter_map(|k| Some((k.to_string(), self.get(k)?.to_string())))
            .collect();
        self.startup = (!startup.is_empty()).then(|| Arc::new(startup));
    }

    /// After the client reset parameters on a connection opened without its startup parameters
    /// (transaction mode): a reported one it gave at startup that now shows the connection's
    /// default (`defaults`) takes its startup value again, as RESET does in PostgreSQL; a
    /// ParameterStatus for each is appended to `out` (the client was told the default). One it
    /// set to something else since keeps that.
    pub fn restore_startup(&mut self, defaults: &Params, out: &mut bytes::BytesMut) {
        let Some(startup) = self.startup.clone() else {
            return;
        };
        for (k, v) in startup.iter() {
            let now = self.get(k);
            if now != Some(v.as_str()) && now == defaults.get(k).map(String::as_str) {
                pgpivot_protocol::build::parameter_status(out, k, v);
                self.insert(k.clone(), v.clone());
            }
        }
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.own
            .as_ref()
            .and_then(|o| o.get(key))
            .or_else(|| self.base.get(key))
            .map(String::as_str)
    }

    /// Whether `other` holds the same parameters: the same greeting map and the same own
    /// differences (compared by content when they are not the same map). Cheap: the greeting
    /// is compared by address only.
    pub fn same_as(&self, other: &ClientParams) -> bool {
        Arc::ptr_eq(&self.base, &other.base)
            && match (&self.own, &other.own) {
                (None, None) => true,
                (Some(a), Some(b)) => Arc::ptr_eq(a, b) || **a == **b,
                _ => false,
            }
    }

    /// Whether `other` is an unchanged snapshot of these parameters (the same maps).
    pub fn identical(&self, other: &ClientParams) -> bool {
        Arc::ptr_eq(&self.base, &other.base)
            && match (&self.own, &other.own) {
                (None, None) => true,
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                _ => false,
            }
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    pub fn insert(&mut self, key: String, value: String) {
        if self.base.get(&key) == Some(&value) {
            if let Some(o) = self.own.as_mut() {
                if o.contains_key(&key) {
                    Arc::make_mut(o).remove(&key);
                    if o.is_empty() {
                        self.own = None;
                    }
                }
            }
            return;
        }
        let own = self.own.get_or_insert_with(Default::default);
        if own.get(&key) != Some(&value) {
            // Copied if a snapshot shares it: the snapshot keeps the old values.
            Arc::make_mut(own).insert(key, value);
        }
    }

    /// Every parameter with its value for this client.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        let own = self.own.as_deref();
        let base = self
            .base
            .iter()
            .filter(move |(k, _)| !own.is_some_and(|o| o.contains_key(*k)));
        base.chain(own.into_iter().flat_map(|o| o.iter()))
            .map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

/// If `snapshot` holds the same parameters as `wanted`, makes the two share their maps (so
/// that `identical` tells later whether `wanted` changed, and the next comparison of clients
/// alike is by address: pgbench's clients converge on one map) and returns true.
pub fn adopt_if_same(snapshot: &mut Option<ClientParams>, wanted: &mut ClientParams) -> bool {
    match snapshot {
        Some(s) if s.same_as(wanted) => {
            if !s.identical(wanted) {
                // Equal content: the client takes the snapshot's copy-on-write map; a SET it
                // makes later copies it, and the snapshot keeps what the server has.
                wanted.own = s.own.clone();
            }
            true
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_values_shadow_the_shared_base_and_equal_ones_are_not_kept() {
        let base: Params = [("TimeZone", "UTC"), ("DateStyle", "ISO, MDY")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut p = ClientParams::new(Arc::new(base));
        assert_eq!(p.get("TimeZone"), Some("UTC"));
        p.insert("TimeZone".into(), "Europe/Paris".into());
        p.insert("application_name".into(), "orders".into());
        assert_eq!(p.get("TimeZone"), Some("Europe/Paris"));
        let mut all: Vec<_> = p.iter().collect();
        all.sort();
        assert_eq!(
            all,
            [
                ("DateStyle", "ISO, MDY"),
                ("TimeZone", "Europe/Paris"),
                ("application_name", "orders")
            ]
        );
        let before = p.clone();
        assert!(p.identical(&before) && p.same_as(&before));
        p.insert("TimeZone".into(), "UTC".into());
        p.insert("application_name".into(), "x".into());
        // The snapshot kept the old values; the change is seen by address and by content.
        assert_eq!(before.get("TimeZone"), Some("Europe/Paris"));
        assert!(!p.identical(&before) && !p.same_as(&before));
        assert_eq!(p.get("TimeZone"), Some("UTC"));
        assert_eq!(p.own.as_ref().map(|o| o.len()), Some(1));
        assert!(!p.contains_key("nope"));
    }

    #[test]
    fn startup_values_come_back_after_a_reset_unless_set_since() {
        let defaults: Params = [("application_name", ""), ("DateStyle", "ISO, MDY")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let base = Arc::new(defaults.clone());
        let mut p = ClientParams::new(base.clone());
        p.insert("application_name".into(), "five".into());
        p.insert("statement_timeout".into(), "5s".into());
        p.set_startup(["application_name", "statement_timeout"].into_iter());
        let mut out = bytes::BytesMut::new();
        p.restore_startup(&defaults, &mut out);
        assert!(out.is_empty(), "nothing was reset");
        // RESET ALL: the server reported the default.
        p.insert("application_name".into(), String::new());
        p.restore_startup(&defaults, &mut out);
        assert_eq!(p.get("application_name"), Some("five"));
        assert_eq!(&out[5..], b"application_name\0five\0");
        // Set to something else after the reset: kept.
        p.insert("application_name".into(), "other".into());
        out.clear();
        p.restore_startup(&defaults, &mut out);
        assert_eq!(p.get("application_name"), Some("other"));
        assert!(out.is_empty());
        // Not part of what is compared.
        let mut q = ClientParams::new(base);
        q.insert("application_name".into(), "other".into());
        q.insert("statement_timeout".into(), "5s".into());
        assert!(p.same_as(&q));
    }

    #[test]
    fn equal_differences_in_separate_maps_are_the_same_parameters() {
        let base = Arc::new(Params::from([("TimeZone".to_string(), "UTC".to_string())]));
        let mut a = ClientParams::new(base.clone());
        let mut b = ClientParams::new(base.clone());
        assert!(a.same_as(&b));
        a.insert("application_name".into(), "pgbench".into());
        assert!(!a.same_as(&b) && !b.same_as(&a));
        b.insert("application_name".into(), "pgbench".into());
        assert!(a.same_as(&b) && !a.identical(&b));
        // A value equal to the greeting's is no difference at all.
        b.insert("TimeZone".into(), "UTC".into());
        assert!(a.same_as(&b));
        b.insert("TimeZone".into(), "Asia/Tokyo".into());
        assert!(!a.same_as(&b));
        // A connection synced for A serves B without a SET and then tracks B's own maps: a
        // change B makes during its transaction is seen when it ends.
        b.insert("TimeZone".into(), "UTC".into());
        let mut snapshot = Some(a.clone());
        assert!(adopt_if_same(&mut snapshot, &mut b));
        assert!(snapshot.as_ref().is_some_and(|s| s.identical(&b)));
        // B now shares A's map: the next comparison is by address.
        assert!(a.identical(&b));
        b.insert("DateStyle".into(), "German".into());
        assert!(!snapshot.as_ref().is_some_and(|s| s.identical(&b)));
        assert!(!adopt_if_same(&mut snapshot, &mut b));
        assert!(!adopt_if_same(&mut None, &mut b));
        // B's SET copied the shared map: A and the snapshot keep their values.
        assert_eq!(a.get("DateStyle"), None);
        assert_eq!(snapshot.as_ref().and_then(|s| s.get("DateStyle")), None);
        assert_eq!(b.get("DateStyle"), Some("German"));
        // Another greeting map is other parameters, even with equal content.
        let c = ClientParams::new(Arc::new((*base).clone()));
        assert!(!c.same_as(&ClientParams::new(base)));
    }
}
