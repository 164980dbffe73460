//! A rustls client for what psql 15 cannot do: direct TLS (PostgreSQL 17), raw messages inside
//! TLS, and reading the certificate served.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

use super::certs::Certs;

pub const SSL_REQUEST: i32 = 80_877_103;

fn connector(certs: &Certs, alpn: Option<&[u8]>) -> TlsConnector {
    let mut roots = RootCertStore::empty();
    roots
        .add(rustls_pki_types::CertificateDer::from(certs.der("ca.crt")))
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    if let Some(p) = alpn {
        config.alpn_protocols = vec![p.to_vec()];
    }
    TlsConnector::from(Arc::new(config))
}

/// SSLRequest, 'S', handshake.
pub async fn ssl_request(
    addr: SocketAddr,
    certs: &Certs,
    alpn: Option<&[u8]>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(&pgpivot_tests::wire::untagged(SSL_REQUEST, b""))
        .await?;
    let mut answer = [0u8; 1];
    s.read_exact(&mut answer).await?;
    assert_eq!(&answer, b"S");
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    connector(certs, alpn).connect(name, s).await
}

/// Direct TLS: a ClientHello first, no SSLRequest.
pub async fn direct(
    addr: SocketAddr,
    certs: &Certs,
    alpn: Option<&[u8]>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let s = TcpStream::connect(addr).await?;
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    connector(certs, alpn).connect(name, s).await
}

/// The certificate pgpivot serves to a new handshake (DER).
pub async fn served_certificate(addr: SocketAddr, certs: &Certs) -> Vec<u8> {
    let tls = ssl_request(addr, certs, None).await.expect("handshake");
    tls.get_ref().1.peer_certificates().expect("a certificate")[0].to_vec()
}

/// The next message, or `None` at EOF (or a TLS close); fails the test after 10 s.
pub async fn next<S: AsyncRead + Unpin>(s: &mut S) -> Option<(u8, Vec<u8>)> {
    tokio::time::timeout(
        Duration::from_secs(10),
        pgpivot_tests::wire::read_message(s),
    )
    .await
    .expect("an answer in time")
    .ok()
    .flatten()
}
