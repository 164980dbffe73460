//! The socket type a TLS session runs on. Plaintext sessions keep `TcpStream` and its own halves
//! (the engine is generic over [`ClientSocket`], so their code path is unchanged); TLS sessions
//! get `TlsStream<TcpStream>` split into the two halves below.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, ReadBuf, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

use crate::session::{ClientSocket, Readable};

impl ClientSocket for TlsStream<TcpStream> {
    type Read = TlsRead;
    /// tokio-rustls may accept bytes it has not sent yet (the socket was full); every write to
    /// a client is followed by a flush (`session::forward::send`), which sends them.
    type Write = WriteHalf<TlsStream<TcpStream>>;
    fn into_halves(self) -> (TlsRead, Self::Write) {
        let (r, w) = tokio::io::split(self);
        (TlsRead(r), w)
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
