//! A client's session parameters without a private copy of everything: the pool's greeting,
//! shared by every client of that pool, plus only what differs for this client (its startup
//! parameters and the SETs the server reported). Ten thousand idle clients of one pool then
//! share one map.

use std::collections::HashMap;
use std::sync::Arc;

pub type Params = HashMap<String, String>;

#[derive(Debug, Clone, Default)]
pub struct ClientParams {
    base: Arc<Params>,
    /// Entries that differ from `base` (boxed: most clients have none or few).
    own: Option<Box<Params>>,
}

impl ClientParams {
    pub fn new(base: Arc<Params>) -> Self {
        ClientParams { base, own: None }
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.own
            .as_ref()
            .and_then(|o| o.get(key))
            .or_else(|| self.base.get(key))
            .map(String::as_str)
    }

    /// The shared map this client's parameters are exactly equal to, if it has no differences
    /// of its own: a server connection last synced to the same map needs no SET at all.
    pub fn pristine(&self) -> Option<&Arc<Params>> {
        self.own.is_none().then_some(&self.base)
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    pub fn insert(&mut self, key: String, value: String) {
        if self.base.get(&key) == Some(&value) {
            if let Some(o) = self.own.as_mut() {
                o.remove(&key);
                if o.is_empty() {
                    self.own = None;
                }
            }
            return;
        }
        self.own
            .get_or_insert_with(Default::default)
            .insert(key, value);
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
        p.insert("TimeZone".into(), "UTC".into());
        p.insert("application_name".into(), "x".into());
        assert_eq!(p.get("TimeZone"), Some("UTC"));
        assert_eq!(p.own.as_ref().map(|o| o.len()), Some(1));
        assert!(!p.contains_key("nope"));
    }
}
