//! Commands pgpivot answers itself on the data port (Pgpool's `SHOW pool_*`), from cached state,
//! with or without a server connection: a liveness probe never waits on a backend.

use std::time::Duration;

use bytes::{Buf, BytesMut};
use pgpivot_admin::{Responder, Surface};
use tokio::io::AsyncWrite;

use super::forward::send;
use super::shared::Shared;
use super::Ctx;

pub enum Local {
    /// Answered and consumed.
    Answered,
    /// For PostgreSQL (left in the buffer).
    Forward,
    ClientGone,
}

/// Whether the complete message (`len` bytes) at the front of `buf` is pgpivot's to answer
/// (then [`answer`] answers it). A message for PostgreSQL ends an open local batch. Checked
/// without a future: it runs for every request.
pub fn claims(buf: &[u8], len: usize, shared: &Shared) -> bool {
    let mut prep = shared.prep();
    if Responder::is_local(prep.local.as_deref(), buf[0], &buf[5..len]) {
        return true;
    }
    if let Some(r) = prep.local.as_mut() {
        if r.batch_open() {
            r.end_batch();
        }
    }
    false
}

/// Answers the complete message (`len` bytes) at the front of `buf`, which [`claims`] said is
/// pgpivot's.
pub async fn answer<W: AsyncWrite + Unpin>(
    ctx: &Ctx,
    cw: &mut W,
    buf: &mut BytesMut,
    len: usize,
    shared: &Shared,
    status: u8,
) -> Local {
    let tag = buf[0];
    let mut responder = shared
        .prep()
        .local
        .take()
        .unwrap_or_else(|| Box::new(Responder::new(Surface::DataPort)));
    let mut out = BytesMut::new();
    let flow = responder
        .handle(tag, &buf[5..len], ctx, status, &mut out)
        .await;
    if responder.has_names() {
        shared.prep().local = Some(responder);
    }
    if flow.is_none() {
        return Local::Forward;
    }
    buf.advance(len);
    if out.is_empty() {
        return Local::Answered;
    }
    match tokio::time::timeout(Duration::from_secs(10), send(cw, &out)).await {
        Ok(Ok(())) => Local::Answered,
        _ => Local::ClientGone,
    }
}

/// A locally answered extended-protocol batch is waiting for its Sync.
pub fn batch_open(shared: &Shared) -> bool {
    shared.prep().local.as_ref().is_some_and(|r| r.batch_open())
}
