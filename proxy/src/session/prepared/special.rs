//! The client messages (and pgpivot's own) whose one terminal reply needs more than forwarding,
//! and how each is undone when the server fails or skips it.

use std::sync::Arc;

use bytes::Bytes;

use super::{ClientStatements, ServerStatements, StatementDef};

/// ParseComplete, for a cached Parse whose probe was answered with CloseComplete.
const PARSE_COMPLETE: &[u8] = &[b'1', 0, 0, 0, 4];

/// A server-side statement pgpivot recorded before the server confirmed it.
#[derive(Debug)]
pub(super) enum ServerKey {
    Global(u64),
    Named(Vec<u8>),
}

#[derive(Debug)]
pub(super) enum Special {
    /// The client's Parse, sent under the global name: undone if it fails.
    ParseSent {
        name: Vec<u8>,
        def: Arc<StatementDef>,
    },
    /// The client's Parse of a statement this server already has: a Close probe went instead and
    /// its CloseComplete becomes the client's ParseComplete.
    ParseCached {
        name: Vec<u8>,
        def: Arc<StatementDef>,
    },
    /// pgpivot's own Parse (a statement the client's next message needs, or a placeholder): its
    /// ParseComplete is not the client's.
    Prepare { key: Option<ServerKey> },
    /// pgpivot's own Close of a global statement it evicted: its CloseComplete is not the
    /// client's.
    Evict { hash: u64 },
    /// The client's Close of a statement (kept on the server): a Close probe went instead.
    Closed {
        name: Vec<u8>,
        removed: Option<Arc<StatementDef>>,
    },
    /// The client's Parse under its own name (session pooling); `previous` is what the name
    /// meant before (the server then refuses the Parse), `server_had` whether the server had it.
    ParseNamed {
        name: Vec<u8>,
        def: Arc<StatementDef>,
        previous: Option<Arc<StatementDef>>,
        server_had: bool,
    },
    /// The client's Close under its own name (session pooling), forwarded.
    CloseNamed {
        name: Vec<u8>,
        removed: Option<Arc<StatementDef>>,
        server_had: bool,
    },
    /// A message PostgreSQL would reject: a Describe probe fails on the server (26000) and the
    /// client gets this ErrorResponse in its place.
    Reject { error: Bytes },
}

/// What happens to a special entry's terminal reply.
pub(super) enum Reply {
    Forward,
    Drop,
    Replace(&'static [u8]),
}

impl Special {
    /// `None`: this terminal cannot be the reply to this message.
    pub(super) fn reply(&self, tag: u8) -> Option<Reply> {
        match (self, tag) {
            (Special::ParseSent { .. } | Special::ParseNamed { .. }, b'1') => Some(Reply::Forward),
            (Special::ParseCached { .. }, b'3') => Some(Reply::Replace(PARSE_COMPLETE)),
            (Special::Prepare { .. }, b'1') | (Special::Evict { .. }, b'3') => Some(Reply::Drop),
            (Special::Closed { .. } | Special::CloseNamed { .. }, b'3') => Some(Reply::Forward),
            // The probe statement exists after all (someone created it): pass the reply on.
            (Special::Reject { .. }, b'T' | b'n') => Some(Reply::Forward),
            _ => None,
        }
    }

    pub(super) fn expected(&self) -> &'static str {
        match self {
            Special::ParseSent { .. } | Special::Prepare { .. } | Special::ParseNamed { .. } => {
                "ParseComplete"
            }
            Special::ParseCached { .. }
            | Special::Closed { .. }
            | Special::Evict { .. }
            | Special::CloseNamed { .. } => "CloseComplete",
            Special::Reject { .. } => "ErrorResponse",
        }
    }

    /// The server failed or skipped this message: put the maps back as if it was never sent.
    pub(super) fn undo(self, client: &mut ClientStatements, server: &mut ServerStatements) {
        match self {
            Special::ParseSent { name, def } => {
                client.remove_if_same(&name, &def);
                server.remove(def.hash);
            }
            Special::ParseCached { name, def } => client.remove_if_same(&name, &def),
            Special::Prepare { key } => match key {
                Some(ServerKey::Global(hash)) => {
                    server.remove(hash);
                }
                Some(ServerKey::Named(name)) => {
                    server.remove_named(&name);
                }
                None => {}
            },
            Special::Evict { hash } => {
                server.insert(hash);
            }
            Special::Closed { name, removed } => {
                if let Some(def) = removed {
                    client.restore(&name, &def);
                }
            }
            Special::ParseNamed {
                name,
                def,
                previous,
                server_had,
            } => {
                client.remove_if_same(&name, &def);
                if let Some(previous) = previous {
                    client.restore(&name, &previous);
                }
                if !server_had {
                    server.remove_named(&name);
                }
            }
            Special::CloseNamed {
                name,
                removed,
                server_had,
            } => {
                if let Some(def) = removed {
                    client.restore(&name, &def);
                }
                if server_had {
                    server.insert_named(&name);
                }
            }
            Special::Reject { .. } => {}
        }
    }
}
