//! What a lost server connection means for its client (design section 1.5).
//!
//! * The node stopped being primary, or is going away (shut down, crashed, unreachable): the
//!   client stays. Idle outside a transaction, it notices nothing; otherwise it gets one error
//!   per request it was waiting on — the server's own words when its FATAL said why, pgpivot's
//!   explanation in DETAIL and HINT — and its connection, for the next primary.
//! * Only that backend ended while its node stays primary and takes connections
//!   (`pg_terminate_backend`, `idle_session_timeout`): the session ends exactly as PostgreSQL
//!   ends it, the server's FATAL passed through unchanged, then the connection closed.
//! * The connection held session state (pinned): it is gone with the server, so the session
//!   ends too.

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::{Buf, Bytes};
use pgpivot_protocol::sqlstate;
use pgpivot_protocol::views::ErrorView;
use tokio::io::AsyncWrite;

use super::engine::Attached;
use super::forward::{send, still_primary, write_fatal, ClientSide, ServerEnd, Shared};
use super::idle::{answer_errors, Debt, Owed};
use super::Ctx;
use crate::backend::alive;

/// What the session does after losing its server connection.
pub(super) enum AfterLoss {
    /// The client keeps its connection (its next request goes to the primary).
    Stay,
    /// The session ends, for this reason (logged).
    End(&'static str),
}

const LOST: &str =
    "the transaction was lost because its server connection failed (primary change); it was rolled back";

const KEPT: &str = "pgpivot kept the client connection: the server connection was lost because \
its node is going away (primary change or shutdown); the transaction was rolled back";

/// An attachment that ended because its server connection was lost.
pub(super) struct Lost {
    pub attached: Box<Attached>,
    /// `Demoted` or `ServerLost`.
    pub end: ServerEnd,
    /// Server bytes were read but not yet sent to the client.
    pub server_buffered: bool,
}

impl Lost {
    /// Decides, tells the client what it must know, and reports whether the session goes on.
    pub(super) async fn settle<W: AsyncWrite + Unpin>(
        self,
        ctx: &Ctx,
        cw: &mut W,
        shared: &Shared,
        client: &mut ClientSide,
        debt: &mut Debt,
    ) -> AfterLoss {
        after_loss(ctx, cw, shared, client, self, debt).await
    }
}

async fn after_loss<W: AsyncWrite + Unpin>(
    ctx: &Ctx,
    cw: &mut W,
    shared: &Shared,
    client: &mut ClientSide,
    lost: Lost,
    debt: &mut Debt,
) -> AfterLoss {
    let Lost {
        attached: a,
        end,
        server_buffered,
    } = lost;
    let node = a.server.node_id;
    let held = shared
        .server_fatal
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take();
    let quiet = shared.quiescent() && !server_buffered;
    let addr = a.server.conn.addr;
    a.pool.checkin(a.server, false);
    if end == ServerEnd::ServerLost
        && still_primary(ctx, node)
        && !ctx.shutdown.drain.is_cancelled()
        && alive::accepting(addr, &a.pool.user, &a.pool.database, alive::ASK_TIMEOUT).await
    {
        // Only this backend ended: as PostgreSQL, its FATAL and the end of the connection.
        if let Some(frame) = held {
            ctx.metrics
                .error_sent(ErrorView::new(frame.get(5..).unwrap_or_default()).sqlstate());
            let _ = tokio::time::timeout(Duration::from_secs(1), send(cw, &frame)).await;
        }
        return AfterLoss::End("server ended the session");
    }
    if end == ServerEnd::Demoted || !still_primary(ctx, node) {
        ctx.topology.note_client_affected();
    }
    if let Some(why) = shared.pinned() {
        let msg = format!("terminating connection: its server connection held session state ({why}) and the primary changed");
        ctx.metrics.error_sent(Some(sqlstate::ADMIN_SHUTDOWN));
        write_fatal(cw, sqlstate::ADMIN_SHUTDOWN, &msg).await;
        return AfterLoss::End("pinned client lost its server");
    }
    if quiet {
        ctx.moved_total.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(node, end = %end, "idle client detached; its next transaction goes to the primary");
        return AfterLoss::Stay;
    }
    if !shared.client_boundary.load(Ordering::Relaxed)
        || !shared.server_boundary.load(Ordering::Relaxed)
    {
        return AfterLoss::End("connection lost mid-message");
    }
    // Bytes that were being written to the lost server are gone with it: never resend.
    let in_flight = shared.in_flight.swap(0, Ordering::Relaxed);
    client.buf.advance(in_flight.min(client.buf.len()));
    let owed = owed_for(end, held);
    let pending = shared.pending();
    let in_transaction = !shared.idle.load(Ordering::Relaxed);
    // Inside a transaction the client stays in an aborted transaction (ReadyForQuery 'E') until
    // it ends it: an error may land on a request the application does not look at (a statement
    // Close), so its COMMIT must fail too — never "succeed" on a fresh connection with nothing
    // to commit.
    let status = if in_transaction { b'E' } else { b'I' };
    ctx.metrics.errors_sent(Some(owed.code), u64::from(pending));
    if pending > 0 && !answer_errors(cw, &owed, pending, status).await {
        return AfterLoss::End("client gone");
    }
    if pending == 0 || in_transaction || shared.unsynced.load(Ordering::Relaxed) {
        debt.owed = Some(owed);
        debt.lost_tx = in_transaction;
    }
    tracing::info!(node, end = %end, pending, in_transaction, "client transaction lost to a failover; client stays connected");
    AfterLoss::Stay
}

/// The error a lost transaction is reported with: a class-57/08 FATAL of the dying server keeps
/// its words (as an ERROR, with pgpivot's explanation beside them); otherwise pgpivot's own.
fn owed_for(end: ServerEnd, held: Option<Bytes>) -> Owed {
    if let Some(frame) = held {
        let v = ErrorView::new(frame.get(5..).unwrap_or_default());
        if let (Some(code), Some(message)) = (v.sqlstate(), v.message()) {
            if code.starts_with("57") || code.starts_with("08") {
                return Owed {
                    code: static_code(code),
                    message: message.to_string(),
                    detail: Some(KEPT),
                };
            }
        }
    }
    if end == ServerEnd::Demoted {
        Owed::new(sqlstate::ADMIN_SHUTDOWN, LOST.to_string())
    } else {
        Owed::new(sqlstate::CONNECTION_FAILURE, LOST.to_string())
    }
}

/// The SQLSTATEs a lost transaction is reported with (the server's codes mapped onto the
/// constants the error path carries).
fn static_code(code: &str) -> &'static str {
    match code {
        "57P01" => sqlstate::ADMIN_SHUTDOWN,
        "57P02" => sqlstate::CRASH_SHUTDOWN,
        "57P03" => sqlstate::CANNOT_CONNECT_NOW,
        "08000" => sqlstate::CONNECTION_EXCEPTION,
        _ if code.starts_with("57") => sqlstate::ADMIN_SHUTDOWN,
        _ => sqlstate::CONNECTION_FAILURE,
    }
}
