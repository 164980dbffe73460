//! The socket type a TLS session runs on. Plaintext sessions keep `TcpStream` and its own halves
//! (the engine is generic over [`ClientSocket`], so their code path is unchanged); TLS sessions
//! get `TlsStream<TcpStream>` split into the two halves below.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

use crate::session::{ClientSocket, Readable};

impl ClientSocket for TlsStream<TcpStream> {
    type Read = TlsRead;
    type Write = TlsWrite<WriteHalf<TlsStream<TcpStream>>>;
    fn into_halves(self) -> (TlsRead, Self::Write) {
        let (r, w) = tokio::io::split(self);
        (
            TlsRead(r),
            TlsWrite {
                inner: w,
                unflushed: None,
            },
        )
    }
    fn tls_description(&self) -> Option<String> {
        let c = self.get_ref().1;
        let version = c
            .protocol_version()
            .and_then(|v| v.as_str())
            .unwrap_or("TLS");
        let suite = c.negotiated_cipher_suite().and_then(|s| s.suite().as_str());
        Some(match suite {
            Some(s) => format!("{version}/{s}"),
            None => version.to_string(),
        })
    }
}

/// The read half of a TLS session.
pub struct TlsRead(ReadHalf<TlsStream<TcpStream>>);

impl AsyncRead for TlsRead {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

/// Readiness of the socket says nothing about plaintext rustls may already hold, so an idle TLS
/// client is read at once (holding a read buffer while idle: the price of TLS here).
impl Readable for TlsRead {
    fn wait_readable(&self) -> impl std::future::Future<Output = io::Result<()>> + Send + '_ {
        std::future::ready(Ok(()))
    }
}

/// The write half of a TLS session. tokio-rustls's `poll_write` may report bytes written that
/// are still queued in rustls when the socket is full, and they would wait for the next write or
/// a flush; the sessions write with `write_all` and never flush, so a reply could stall. This
/// half reports a write only once its bytes have left for the socket: when the flush is pending
/// it returns `Pending` and remembers the accepted count, and `write_all`'s retry with the same
/// buffer gets that count once the flush completes. The retry is recognized by the buffer's
/// address and length: a pending write whose future is dropped, followed by another write of
/// the very same buffer region, would be taken for its retry — the sessions drop a client write
/// only when they end, so that never happens.
pub struct TlsWrite<W> {
    inner: W,
    /// Bytes accepted but not yet flushed: (buffer address, buffer length, count accepted).
    unflushed: Option<(usize, usize, usize)>,
}

impl<W: AsyncWrite + Unpin> AsyncWrite for TlsWrite<W> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if let Some((addr, len, n)) = this.unflushed {
            ready!(Pin::new(&mut this.inner).poll_flush(cx))?;
            this.unflushed = None;
            if addr == buf.as_ptr() as usize && len == buf.len() {
                return Poll::Ready(Ok(n));
            }
            // A write abandoned after its bytes were accepted (they are out now); this is a new
            // one.
        }
        let n = ready!(Pin::new(&mut this.inner).poll_write(cx, buf))?;
        match Pin::new(&mut this.inner).poll_flush(cx) {
            Poll::Ready(Ok(())) => Poll::Ready(Ok(n)),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                this.unflushed = Some((buf.as_ptr() as usize, buf.len(), n));
                Poll::Pending
            }
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use tokio::io::AsyncWriteExt;

    /// Accepts every write (like rustls's queue); its flush is pending `stalls` times first.
    struct Queueing {
        queued: Vec<u8>,
        sent: Vec<u8>,
        stalls: usize,
        flushes: Arc<AtomicUsize>,
    }

    impl AsyncWrite for Queueing {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.queued.extend_from_slice(buf);
            Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.flushes.fetch_add(1, Ordering::Relaxed);
            if self.stalls > 0 {
                self.stalls -= 1;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            let q = std::mem::take(&mut self.queued);
            self.sent.extend_from_slice(&q);
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn write_all_returns_only_once_the_bytes_left() {
        let flushes = Arc::new(AtomicUsize::new(0));
        let mut w = TlsWrite {
            inner: Queueing {
                queued: Vec::new(),
                sent: Vec::new(),
                stalls: 3,
                flushes: flushes.clone(),
            },
            unflushed: None,
        };
        w.write_all(b"reply").await.unwrap();
        // Nothing left queued, written exactly once, after the stalled flushes.
        assert_eq!(w.inner.sent, b"reply");
        assert!(w.inner.queued.is_empty());
        assert_eq!(flushes.load(Ordering::Relaxed), 4);
        w.write_all(b" more").await.unwrap();
        assert_eq!(w.inner.sent, b"reply more");
    }
}
