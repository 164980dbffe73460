//! The floor under any user-space PostgreSQL proxy on this machine: a plain TCP relay that
//! opens one server connection per client and copies bytes both ways, parsing nothing.
//!
//! `pgbench-compare --relay` puts it in the rotation next to pgpivot (and PgBouncer), so the
//! CPU a proxy costs per transaction can be split into what moving the bytes through a second
//! pair of loopback sockets costs (this relay) and what the proxy's own work adds.
//!
//!     tcp-relay LISTEN_PORT SERVER_PORT [THREADS]
//!
//! THREADS is the number of tokio workers (default: one per core, as pgpivot).

use tokio::io::copy_bidirectional_with_sizes;
use tokio::net::{TcpListener, TcpStream};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let usage = "tcp-relay LISTEN_PORT SERVER_PORT [THREADS]";
    let listen: u16 = args.next().ok_or_else(|| anyhow::anyhow!(usage))?.parse()?;
    let server: u16 = args.next().ok_or_else(|| anyhow::anyhow!(usage))?.parse()?;
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = args.next() {
        rt.worker_threads(threads.parse()?);
    }
    rt.enable_all().build()?.block_on(async move {
        let listener = TcpListener::bind(("127.0.0.1", listen)).await?;
        loop {
            let (mut client, _) = listener.accept().await?;
            tokio::spawn(async move {
                let Ok(mut upstream) = TcpStream::connect(("127.0.0.1", server)).await else {
                    return;
                };
                let _ = client.set_nodelay(true);
                let _ = upstream.set_nodelay(true);
                // Buffers as pgpivot's pumps use them (16 KiB from the server, 8 KiB to it).
                let _ =
                    copy_bidirectional_with_sizes(&mut client, &mut upstream, 8192, 16384).await;
            });
        }
    })
}
