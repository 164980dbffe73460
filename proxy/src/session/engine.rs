//! The session engine: attach a server connection when the client has something to send, run the
//! two pumps, and decide what an attachment's end means (design section 1.5).
//!
//! * transaction mode: the connection goes back to the pool at each transaction boundary;
//! * session mode: the client keeps it until it leaves;
//! * both: when the primary moves while the client is idle outside a transaction (and holds no
//!   pinned state), the old connection is dropped and the next transaction runs on the new
//!   primary with its session parameters re-applied and its prepared statements re-prepared —
//!   no error. A client caught inside a transaction gets exactly one ErrorResponse and a
//!   ReadyForQuery per request it was waiting on (or on its next request), and keeps its
//!   connection. Nothing is ever re-sent.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;

use pgpivot_protocol::frame::Scanner;
use pgpivot_protocol::sqlstate;
use pgpivot_protocol::startup::StartupMessage;
use tokio::time::Instant;

use super::buffers;
use super::conn::ClientConn;
use super::forward::{
    client_to_server, server_to_client, ClientEnd, ClientSide, ServerEnd, ServerSide, Shared,
};
use super::idle::{idle_turn, Debt, Idle, Owed};
use super::prepared::{Naming, MAX_KNOWN_STATEMENTS};
use super::server_loss::{AfterLoss, Lost};
use super::{ClientSocket, Ctx, Login};
use crate::cancel::send_cancel;
use crate::config::PoolMode;
use crate::error::SessionError;
use crate::pool::{CheckoutError, Pool, Server};

/// Waits for a primary and takes a connection from its pool, until `deadline`.
pub async fn checkout(
    ctx: &Ctx,
    startup: &StartupMessage,
    password: &str,
    deadline: Instant,
    last_pool: &mut Option<Arc<Pool>>,
) -> Result<(Server, Arc<Pool>), SessionError> {
    let mut last_error = None;
    let mut deadline = deadline;
    if ctx.pause.is_paused() {
        // PAUSE: the transaction starts after RESUME (or fails if pgpivot stops meanwhile).
        tokio::select! {
            _ = ctx.pause.wait_resumed() => {}
            _ = ctx.shutdown.drain.cancelled() => {
                return Err(SessionError::NoPrimary("pgpivot is shutting down".into()));
            }
        }
        // The wait for a primary starts now: a switchover happens during the pause.
        deadline = deadline.max(Instant::now() + ctx.config.load().primary_wait_timeout);
    }
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let table = match ctx.topology.wait_for_primary(left).await {
            Ok(t) => t,
            Err(t) => {
                let reason = last_error
                    .or_else(|| t.no_primary_reason.clone())
                    .unwrap_or_else(|| "no primary known".into());
                return Err(SessionError::NoPrimary(format!(
                    "{reason} (waited {} ms)",
                    ctx.config.load().primary_wait_timeout.as_millis()
                )));
            }
        };
        let Some(route) = table.primary.as_ref() else {
            continue;
        };
        let pool = match last_pool.take() {
            // The session's pool from its previous transaction: no key to build and hash.
            Some(p) if p.node_id == route.node_id && p.addr_matches(route) && !p.is_closed() => p,
            _ => {
                let options = startup.get("options").unwrap_or("");
                ctx.pools
                    .get(route, startup.user(), startup.database(), options)
            }
        };
        *last_pool = Some(pool.clone());
        let waited = Instant::now();
        let checked_out = pool
            .checkout(startup, password, ctx.config.load().pool.query_wait_timeout)
            .await;
        ctx.metrics.pool_wait.record(waited.elapsed().as_secs_f64());
        match checked_out {
            Ok(server) => {
                if super::forward::still_primary(ctx, server.node_id) {
                    return Ok((server, pool));
                }
                pool.checkin(server, false);
            }
            Err(CheckoutError::Timeout(ms, size)) => {
                return Err(SessionError::PoolTimeout(ms, size));
            }
            // Past the deadline a retryable refusal ends the wait too: a primary that stays
            // published but keeps refusing (53300) would otherwise be retried without pause,
            // since `wait_for_primary` returns at once while a primary is known.
            Err(CheckoutError::Connect(e)) if !e.is_retryable() || Instant::now() >= deadline => {
                return Err(match e {
                    crate::backend::connect::ConnectError::Refused(f) => {
                        SessionError::ServerRefused(f)
                    }
                    other => SessionError::Backend(other.to_string()),
                });
            }
            Err(e) => {
                tracing::debug!(node = route.node_id, error = %e, "primary not usable yet");
                last_error = Some(e.to_string());
                if Instant::now() >= deadline {
                    return Err(SessionError::NoPrimary(e.to_string()));
                }
                let gen = table.generation;
                let _ = tokio::time::timeout(Duration::from_millis(100), async {
                    while ctx.topology.generation() == gen {
                        ctx.topology.changed().await;
                    }
                })
                .await;
            }
        }
    }
}

/// A server connection a client holds, and its pool.
pub(super) struct Attached {
    pub server: Server,
    pub pool: Arc<Pool>,
}

pub async fn run<S: ClientSocket>(ctx: &Ctx, conn: ClientConn<S>, login: Login) {
    let ClientConn { stream, buf, .. } = conn;
    let (mut cr, mut cw) = stream.into_halves();
    let Login {
        startup,
        password,
        server,
        mut params,
        cancel,
    } = login;
    let mode = ctx.config.load().pool.mode;
    let shared = Arc::new(Shared::new());
    if mode == PoolMode::Session {
        // The server connection is the client's: its statement names pass through.
        shared.prep().client.set_naming(Naming::PassThrough);
    }
    shared.last_active.store(ctx.clock.now(), Ordering::Relaxed);
    cancel.set_session(shared.clone());
    let mut client = ClientSide::new(buf, ctx.config.load().max_message_bytes);
    let mut sside = ServerSide::new();
    // Boxed: a few hundred bytes an idle client does not need to carry.
    let mut attached = server.map(|b| {
        let (server, pool) = *b;
        Box::new(Attached { server, pool })
    });
    // The client's connection, set aside (in a transaction or not) while pgpivot answers a
    // command itself; taken up again at the client's next request.
    let mut parked: Option<Box<Attached>> = None;
    // The pool of the last transaction, reused while the primary stays put.
    let mut last_pool: Option<Arc<Pool>> = None;
    let mut resumed = false;
    // What the client is owed after a transaction died with its server.
    let mut debt = Debt::default();

    let outcome = loop {
        // Every turn of a session costs budget: however its turns end (a checkout that is
        // ready at once, a pump that returns at once), the session yields to the runtime
        // before it can starve the other sessions, the listener or the monitor.
        tokio::task::consume_budget().await;
        let Some(mut a) = attached.take() else {
            match idle_turn(
                ctx,
                &mut cr,
                &mut cw,
                &mut client,
                &shared,
                &mut debt,
                parked.is_some(),
            )
            .await
            {
                Idle::Request => {}
                Idle::End(why) => {
                    if let Some(p) = parked.take() {
                        p.pool.checkin(p.server, false);
                    }
                    shared.busy.store(false, Ordering::Relaxed);
                    break why;
                }
            }
            if let Some(p) = parked.take() {
                attached = Some(p);
                resumed = true;
                continue;
            }
            // The client wants a server.
            let deadline = Instant::now() + ctx.config.load().primary_wait_timeout;
            match Box::pin(checkout(ctx, &startup, &password, deadline, &mut last_pool)).await {
                Ok((mut server, pool)) => {
                    // The usual case (same parameters as the connection's last client) needs
                    // no future at all.
                    let synced = if server.adopt_if_in_sync(&mut params) {
                        Ok(())
                    } else {
                        let timeout = ctx.config.load().connect_timeout;
                        Box::pin(server.sync_params(&mut params, timeout)).await
                    };
                    if let Err(e) = synced {
                        pool.checkin(server, false);
                        debt.owed = Some(Owed::new(
                            sqlstate::CONNECTION_FAILURE,
                            format!("could not prepare a server connection: {e}"),
                        ));
                        continue;
                    }
                    attached = Some(Box::new(Attached { server, pool }));
                }
                Err(e) => {
                    debt.owed = Some(Owed::new(e.sqlstate(), e.to_string()));
                }
            }
            continue;
        };
        if !std::mem::take(&mut resumed) {
            shared.reset_for_attach();
        }
        std::mem::swap(&mut shared.prep().server, &mut a.server.prepared);
        let statements_before = shared.prep().server.len();
        shared.set_backend(Some(a.server.cancel_key.clone()));
        sside.buf.clear();
        sside.buf.extend_from_slice(&a.server.conn.leftover);
        a.server.conn.leftover.clear();
        sside.scan = Scanner::new(i32::MAX as usize);
        sside.pool = Some(a.pool.clone());
        sside.own_pid =
            (a.server.conn.pid != cancel.pid).then_some((a.server.conn.pid, cancel.pid));
        let node = a.server.node_id;
        tracing::trace!(server_pid = a.server.conn.pid, "attached");
        // The pumps live on the heap for the attachment only: an idle client's task stays small.
        let end = Box::pin(async {
            let Server {
                conn,
                params: server_params,
                ..
            } = &mut a.server;
            let (mut sr, mut sw) = conn.stream.split();
            let c2s = client_to_server(
                &mut cr,
                &mut sw,
                &mut client,
                &shared,
                ctx,
                node,
                ctx.config.load().max_message_bytes,
            );
            let s2c = server_to_client(
                &mut sr,
                &mut cw,
                &mut sside,
                server_params,
                &mut params,
                &shared,
                ctx,
                node,
                mode,
            );
            tokio::pin!(c2s, s2c);
            // Client first: a request that made us attach must be staged before the server
            // pump can judge the connection idle and release it.
            tokio::select! {
                biased;
                c = &mut c2s => match c {
                    ClientEnd::Closed => Err(true),
                    ClientEnd::Terminated => Err(false),
                    ClientEnd::Handover | ClientEnd::Yield => Ok(s2c.await),
                },
                s = &mut s2c => Ok(s),
            }
        })
        .await;
        shared.set_backend(None);
        if !a
            .server
            .synced_to
            .as_ref()
            .is_some_and(|s| s.identical(&params))
        {
            // The client changed its parameters on this connection (its snapshot there is
            // stale): the next client compares them in full.
            a.server.synced_to = None;
        }
        sside.pool = None;
        shared.tally.flush(Some(a.pool.stats()), &ctx.metrics);
        shared.yield_wanted.store(false, Ordering::Relaxed);
        if !matches!(end, Ok(ServerEnd::Yield)) {
            shared.busy.store(false, Ordering::Relaxed);
        }
        std::mem::swap(&mut shared.prep().server, &mut a.server.prepared);
        if matches!(end, Ok(ServerEnd::Release)) && a.server.prepared.len() != statements_before {
            // Settled: every statement this connection holds was accepted by PostgreSQL.
            if ctx.known_statements.len() < MAX_KNOWN_STATEMENTS {
                for h in a.server.prepared.hashes() {
                    ctx.known_statements.insert(h);
                }
            }
        }
        tracing::trace!(server_pid = a.server.conn.pid, end = ?end, "detached");
        let end = match end {
            Err(mid_query) => {
                // The client left.
                let pending = shared.pending() > 0;
                if mid_query && pending {
                    // Do not let a query run on for nobody.
                    tokio::spawn(send_cancel(a.server.cancel_key.clone()));
                }
                let clean = shared.quiescent() && sside.buf.is_empty() && shared.pinned().is_none();
                Box::pin(give_back(a, clean, mode)).await;
                break "client left";
            }
            Ok(e) => e,
        };
        match end {
            ServerEnd::Yield => {
                parked = Some(a);
            }
            ServerEnd::Resync => {
                // A pinned client keeps its connection: its startup values go back on it now.
                shared.take_params_reset();
                let mut told = BytesMut::new();
                a.server.after_client_reset(&mut params, &mut told);
                let timeout = ctx.config.load().connect_timeout;
                if let Err(e) = Box::pin(a.server.sync_params(&mut params, timeout)).await {
                    tracing::warn!(error = %e, "could not apply a pinned client's startup parameters again");
                    a.pool.checkin(a.server, false);
                    break "pinned connection failed";
                }
                if !told.is_empty() && super::forward::send(&mut cw, &told).await.is_err() {
                    a.pool.checkin(a.server, false);
                    break "client gone";
                }
                attached = Some(a);
            }
            ServerEnd::Release => {
                if mode == PoolMode::Transaction && shared.take_params_reset() {
                    // The client's RESET / DISCARD ALL took this shared connection to the
                    // server's defaults, not to the client's startup values.
                    let mut told = BytesMut::new();
                    a.server.after_client_reset(&mut params, &mut told);
                    if !told.is_empty() {
                        let _ = super::forward::send(&mut cw, &told).await;
                    }
                }
                settle_cancels(&a).await;
                a.pool.checkin(a.server, true);
                // Idle clients keep no buffers (memory per idle client is what transaction
                // pooling is for); the next attachment takes them from the thread's cache.
                buffers::give(&mut sside.buf);
                buffers::give(&mut sside.out);
                buffers::give(&mut client.out);
            }
            ServerEnd::Demoted | ServerEnd::ServerLost => {
                let lost = Lost {
                    attached: a,
                    end,
                    server_buffered: !sside.buf.is_empty(),
                };
                let after = lost.settle(ctx, &mut cw, &shared, &mut client, &mut debt);
                // Boxed: rare, and its state would otherwise sit in every session's future.
                match Box::pin(after).await {
                    AfterLoss::Stay => {}
                    AfterLoss::End(why) => break why,
                }
            }
            ServerEnd::ServerFatal | ServerEnd::Stopped(_) | ServerEnd::ClientGone => {
                a.pool.checkin(a.server, false);
                break "ended";
            }
        }
    };
    super::conn::close(&mut cw).await;
    tracing::debug!(outcome, "session ended");
}

/// Returns a connection when the client leaves: reset first in session mode (DISCARD ALL takes
/// its parameters back to those it was opened with, which the next client of the same
/// startup parameters then finds; `Server::discard_all` records that).
async fn give_back(mut a: Box<Attached>, clean: bool, mode: PoolMode) {
    settle_cancels(&a).await;
    if clean && mode == PoolMode::Session {
        let ok = tokio::time::timeout(Duration::from_secs(5), a.server.discard_all())
            .await
            .is_ok_and(|r| r.is_ok());
        a.server.prepared.clear();
        a.pool.checkin(a.server, ok);
    } else {
        a.pool.checkin(a.server, clean);
    }
}

/// A connection goes to no one else while a cancel request sent for this client's query is
/// on its way: arriving late, it would cancel the next client's query instead.
async fn settle_cancels(a: &Attached) {
    let cancels = &a.server.cancel_key.in_flight;
    if cancels.any() {
        Box::pin(cancels.settled(Duration::from_secs(5))).await;
    }
}
