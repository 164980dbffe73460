//! What one server connection has prepared, as pgpivot knows it: global statements (transaction
//! pooling, shared by every client the connection serves, so capped) and clients' own names
//! (session pooling, where the connection holds exactly one client's statements).

use std::collections::{HashMap, HashSet};

/// Global statements one server connection keeps before pgpivot closes the least recently used:
/// in transaction pooling every client's statements accumulate on every connection it visits,
/// and PostgreSQL holds each one's plans in the backend's memory.
pub const MAX_STATEMENTS_PER_SERVER: usize = 1_000;

#[derive(Debug, Default)]
pub struct ServerStatements {
    /// Global statements by hash, with the tick of their last use.
    prepared: HashMap<u64, u64>,
    tick: u64,
    /// Statements prepared under the client's own names (session pooling).
    named: HashSet<Vec<u8>>,
}

impl ServerStatements {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn contains(&self, hash: u64) -> bool {
        self.prepared.contains_key(&hash)
    }

    /// Whether the global statement is here, marking it used if so.
    pub fn touch(&mut self, hash: u64) -> bool {
        match self.prepared.get_mut(&hash) {
            Some(t) => {
                self.tick += 1;
                *t = self.tick;
                true
            }
            None => false,
        }
    }

    /// Returns false if it was already there.
    pub fn insert(&mut self, hash: u64) -> bool {
        self.tick += 1;
        self.prepared.insert(hash, self.tick).is_none()
    }

    pub fn remove(&mut self, hash: u64) -> bool {
        self.prepared.remove(&hash).is_some()
    }

    pub fn has_named(&self, name: &[u8]) -> bool {
        self.named.contains(name)
    }

    /// Returns false if it was already there.
    pub fn insert_named(&mut self, name: &[u8]) -> bool {
        !self.named.contains(name) && self.named.insert(name.to_vec())
    }

    pub fn remove_named(&mut self, name: &[u8]) -> bool {
        self.named.remove(name)
    }

    /// The server's statements are gone (DISCARD ALL, DEALLOCATE ALL, reset).
    pub fn clear(&mut self) {
        self.prepared.clear();
        self.named.clear();
    }

    /// Statements of both kinds.
    pub fn len(&self) -> usize {
        self.prepared.len() + self.named.len()
    }

    pub fn is_empty(&self) -> bool {
        self.prepared.is_empty() && self.named.is_empty()
    }

    /// The global statements.
    pub fn hashes(&self) -> impl Iterator<Item = u64> + '_ {
        self.prepared.keys().copied()
    }

    /// Past `cap` global statements, forgets the least recently used down to 7/8 of it (so the
    /// sort is paid once per `cap / 8` new statements) and returns them: the caller closes them
    /// on the server.
    pub(super) fn evict_over(&mut self, cap: usize) -> Vec<u64> {
        if self.prepared.len() <= cap {
            return Vec::new();
        }
        let keep = cap - cap / 8;
        let mut by_age: Vec<(u64, u64)> = self.prepared.iter().map(|(&h, &t)| (t, h)).collect();
        let evict = by_age.len() - keep;
        by_age.select_nth_unstable(evict.saturating_sub(1));
        by_age.truncate(evict);
        by_age.sort_unstable(); // oldest first, for a stable order on the wire

        for (_, h) in &by_age {
            self.prepared.remove(h);
        }
        by_age.into_iter().map(|(_, h)| h).collect()
    }

    /// Undo of a drop of everything (`std::mem::take`): statements prepared again meanwhile
    /// keep their newer use.
    pub(super) fn merge(&mut self, other: ServerStatements) {
        for (hash, tick) in other.prepared {
            self.prepared.entry(hash).or_insert(tick);
        }
        self.named.extend(other.named);
        self.tick = self.tick.max(other.tick);
    }

    #[cfg(test)]
    pub(super) fn names(&self) -> impl Iterator<Item = &[u8]> {
        self.named.iter().map(|n| &n[..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eviction_takes_the_least_recently_used() {
        let mut s = ServerStatements::new();
        for h in 0..16 {
            s.insert(h);
        }
        assert!(s.evict_over(16).is_empty());
        // 0..4 used again: 4..8 are now the oldest.
        for h in 0..4 {
            assert!(s.touch(h));
        }
        s.insert(99);
        assert_eq!(s.evict_over(16), [4, 5, 6]);
        assert_eq!(s.len(), 14);
        assert!(!s.touch(4) && s.contains(0) && s.contains(99));
    }

    #[test]
    fn names_and_hashes_are_apart() {
        let mut s = ServerStatements::new();
        assert!(s.insert_named(b"s1") && !s.insert_named(b"s1"));
        assert!(s.insert(7));
        assert_eq!((s.len(), s.hashes().collect::<Vec<_>>()), (2, vec![7]));
        assert!(s.has_named(b"s1") && s.remove_named(b"s1") && !s.has_named(b"s1"));
        s.insert_named(b"s2");
        s.clear();
        assert!(s.is_empty());
    }
}
