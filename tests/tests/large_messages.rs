//! Client messages far larger than pgpivot's buffers, in both pool modes, through the real
//! binary: simple queries of 1 MB, 16 MB and 256 MB, a 64 MB Bind parameter and a 256 MB
//! `COPY FROM STDIN`. Each is streamed by the test (never held whole) while another client runs
//! `select 1` every 10 ms; that client must keep getting answers promptly, and pgpivot's peak
//! RSS must stay within the bound the README documents (messages stream through; they are
//! not buffered whole). A large script's last statement still pins the client.

use std::path::PathBuf;
use std::process::Child;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pgpivot_tests::{
    connect, free_port, pivot_env, spawn_binary, wait_listening, wire, Cluster, ClusterOptions,
    PivotOptions,
};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::UnixStream;

const MB: usize = 1 << 20;
/// pgpivot's peak RSS may exceed its RSS before the large messages by at most this much (the
/// README's bound: messages pass through fixed-size buffers).
const RSS_GROWTH_BOUND_KB: u64 = 32 * 1024;
/// The other client's `select 1` must be answered within this (99th percentile)...
const PING_BOUND: Duration = Duration::from_millis(100);
/// ... and every one within this: a session that held a worker would show here. (The 99th
/// percentile, not the slowest, meets the 100 ms bound: on two cores shared with the test's
/// own writer and two busy PostgreSQL backends, the scheduler alone costs a ping that much now
/// and then.)
const PING_WORST: Duration = Duration::from_secs(1);

/// The pgpivot binary in front of a one-node cluster; killed on drop.
struct Proxy {
    child: Child,
    listen: String,
    socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proxy {
    fn start(cluster: &Cluster, mode: &str) -> Proxy {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let mut env = pivot_env(cluster, &PivotOptions::default(), &listen, dir.path());
        env.insert("PGPIVOT_POOL_MODE".into(), mode.into());
        env.insert("PGPOOL_PORT_NUMBER".into(), port.to_string());
        let log = dir.path().join("pgpivot.log");
        let child = spawn_binary(&env, &[], &log).expect("spawn pgpivot");
        wait_listening(&listen, Duration::from_secs(10)).expect("pgpivot listening");
        let socket = dir.path().join(format!(".s.PGSQL.{port}"));
        let deadline = Instant::now() + Duration::from_secs(10);
        while !socket.exists() {
            assert!(Instant::now() < deadline, "no unix socket at {socket:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
        Proxy {
            child,
            listen,
            socket,
            _dir: dir,
        }
    }

    fn conn_string(&self, cluster: &Cluster) -> String {
        let o = cluster.options();
        let port = self.listen.rsplit(':').next().unwrap_or_default();
        format!(
            "host=127.0.0.1 port={port} user={} password={} dbname={} connect_timeout=10",
            o.app_user, o.app_password, o.database
        )
    }

    /// Logged in as the app user over the (trusted) unix socket, after ReadyForQuery.
    async fn login(&self, cluster: &Cluster) -> UnixStream {
        let o = cluster.options();
        let mut s = UnixStream::connect(&self.socket)
            .await
            .expect("unix socket");
        let startup = wire::startup(&[("user", &o.app_user), ("database", &o.database)]);
        s.write_all(&startup).await.expect("startup");
        wire::read_until_ready(&mut s, Duration::from_secs(10))
            .await
            .expect("login");
        s
    }

    /// Peak and current resident set size in kB (`VmHWM`, `VmRSS`).
    fn rss_kb(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("pgpivot's /proc status");
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        (field("VmHWM:"), field("VmRSS:"))
    }
}

/// Writes `total` bytes made of `fill` in 1 MB pieces (the test never holds the message whole).
async fn write_fill<W: AsyncWrite + Unpin>(w: &mut W, fill: u8, total: usize) {
    let piece = vec![fill; MB];
    let mut left = total;
    while left > 0 {
        let n = left.min(MB);
        w.write_all(&piece[..n]).await.expect("write a piece");
        left -= n;
    }
}

fn header(tag: u8, body_len: usize) -> Vec<u8> {
    let mut h = vec![tag];
    h.extend_from_slice(&(i32::try_from(body_len + 4).expect("fits")).to_be_bytes());
    h
}

/// The rows of a reply as text, and the command tags; panics on an ErrorResponse.
fn rows_and_tags(reply: &[(u8, Vec<u8>)]) -> (Vec<String>, Vec<String>) {
    let mut rows = Vec::new();
    let mut tags = Vec::new();
    for (tag, body) in reply {
        match tag {
            b'D' => {
                // One column: int16 count, int32 length, value.
                let len = i32::from_be_bytes([body[2], body[3], body[4], body[5]]) as usize;
                rows.push(String::from_utf8_lossy(&body[6..6 + len]).into_owned());
            }
            b'C' => tags.push(String::from_utf8_lossy(&body[..body.len() - 1]).into_owned()),
            b'E' => panic!(
                "server error: {:?} {:?}",
                wire::error_field(body, b'C'),
                wire::error_field(body, b'M')
            ),
            _ => {}
        }
    }
    (rows, tags)
}

/// `/* <size bytes> */ SELECT 42`: a simple query of `size` bytes, mostly a comment.
async fn comment_query(s: &mut UnixStream, size: usize) {
    let tail = b"*/ SELECT 42\0";
    let pad = size - 2 - tail.len();
    s.write_all(&header(b'Q', size)).await.unwrap();
    s.write_all(b"/*").await.unwrap();
    write_fill(s, b'c', pad).await;
    s.write_all(tail).await.unwrap();
    let reply = wire::read_until_ready(s, Duration::from_secs(120))
        .await
        .expect("reply to the large query");
    assert_eq!(rows_and_tags(&reply).0, vec!["42".to_string()]);
}

/// `SELECT length('<size bytes>')`: a string literal across every buffer.
async fn literal_query(s: &mut UnixStream, size: usize) {
    let head = b"SELECT length('";
    let tail = b"')\0";
    let pad = size - head.len() - tail.len();
    s.write_all(&header(b'Q', size)).await.unwrap();
    s.write_all(head).await.unwrap();
    write_fill(s, b'q', pad).await;
    s.write_all(tail).await.unwrap();
    let reply = wire::read_until_ready(s, Duration::from_secs(120))
        .await
        .expect("reply to the large literal");
    assert_eq!(rows_and_tags(&reply).0, vec![pad.to_string()]);
}

/// A named statement bound with one text parameter of `size` bytes.
async fn large_bind(s: &mut UnixStream, size: usize) {
    let mut parse = b"big_len\0SELECT octet_length($1)\0".to_vec();
    parse.extend_from_slice(&1i16.to_be_bytes());
    parse.extend_from_slice(&25i32.to_be_bytes());
    let mut batch = wire::message(b'P', &parse);
    batch.extend(wire::message(b'S', &[]));
    s.write_all(&batch).await.unwrap();
    wire::read_until_ready(s, Duration::from_secs(10))
        .await
        .expect("parse");

    let names = b"\0big_len\0";
    let body_len = names.len() + 2 + 2 + 4 + size + 2;
    s.write_all(&header(b'B', body_len)).await.unwrap();
    s.write_all(names).await.unwrap();
    s.write_all(&0i16.to_be_bytes()).await.unwrap();
    s.write_all(&1i16.to_be_bytes()).await.unwrap();
    s.write_all(&(size as i32).to_be_bytes()).await.unwrap();
    write_fill(s, b'b', size).await;
    s.write_all(&0i16.to_be_bytes()).await.unwrap();
    let mut rest = wire::message(b'E', b"\0\0\0\0\0");
    rest.extend(wire::message(b'S', &[]));
    s.write_all(&rest).await.unwrap();
    let reply = wire::read_until_ready(s, Duration::from_secs(120))
        .await
        .expect("reply to the large Bind");
    assert_eq!(rows_and_tags(&reply).0, vec![size.to_string()]);
}

/// `COPY … FROM STDIN` of `size` bytes in 1 MB CopyData messages of 1 kB lines.
async fn large_copy(s: &mut UnixStream, size: usize) {
    let setup = "DROP TABLE IF EXISTS big_copy; CREATE UNLOGGED TABLE big_copy(t text)";
    s.write_all(&wire::query(setup)).await.unwrap();
    wire::read_until_ready(s, Duration::from_secs(10))
        .await
        .expect("create table");
    s.write_all(&wire::query("COPY big_copy FROM STDIN"))
        .await
        .unwrap();
    let (tag, _) = wire::read_message(s)
        .await
        .unwrap()
        .expect("CopyInResponse");
    assert_eq!(tag, b'G', "expected CopyInResponse");
    let mut line = vec![b'y'; 1023];
    line.push(b'\n');
    let chunk: Vec<u8> = line.iter().copied().cycle().take(MB).collect();
    for _ in 0..size / MB {
        s.write_all(&header(b'd', MB)).await.unwrap();
        s.write_all(&chunk).await.unwrap();
    }
    s.write_all(&wire::message(b'c', &[])).await.unwrap();
    let reply = wire::read_until_ready(s, Duration::from_secs(120))
        .await
        .expect("reply to the COPY");
    let lines = size / 1024;
    assert_eq!(rows_and_tags(&reply).1, vec![format!("COPY {lines}")]);
    s.write_all(&wire::query("DROP TABLE big_copy"))
        .await
        .unwrap();
    wire::read_until_ready(s, Duration::from_secs(30))
        .await
        .expect("drop table");
}

/// Runs `select 1` every 10 ms until `stop`; returns when each answer came and how long it took.
async fn ping(conn: String, stop: Arc<AtomicBool>) -> Vec<(Instant, Duration)> {
    let client = connect(&conn).await.expect("pinging client");
    let mut answers = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let t = Instant::now();
        tokio::time::timeout(Duration::from_secs(10), client.simple_query("select 1"))
            .await
            .expect("select 1 answered within 10 s (pgpivot frozen?)")
            .expect("select 1");
        answers.push((t, t.elapsed()));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    answers
}

/// The slowest answer of each step, with the step's name and duration.
fn by_step(steps: &[(&str, Instant)], end: Instant, answers: &[(Instant, Duration)]) -> String {
    let mut out = Vec::new();
    for (i, (name, start)) in steps.iter().enumerate() {
        let stop = steps.get(i + 1).map_or(end, |s| s.1);
        let worst = answers
            .iter()
            .filter(|(t, _)| *t >= *start && *t < stop)
            .map(|(_, d)| *d)
            .max()
            .unwrap_or_default();
        out.push(format!(
            "{name} {:?} (slowest ping {worst:?})",
            stop - *start
        ));
    }
    out.join(", ")
}

async fn all_sizes(proxy: &Proxy, cluster: &Cluster, mode: &str) {
    let conn = proxy.conn_string(cluster);
    // Warm up: both clients' pools exist before the baseline is read.
    let mut s = proxy.login(cluster).await;
    comment_query(&mut s, 64 * 1024).await;
    connect(&conn)
        .await
        .expect("client")
        .simple_query("select 1")
        .await
        .expect("select 1");
    let (_, rss_before) = proxy.rss_kb();

    let stop = Arc::new(AtomicBool::new(false));
    let pinger = tokio::spawn(ping(conn, stop.clone()));
    let mut steps = vec![("1 MB query", Instant::now())];
    comment_query(&mut s, MB).await;
    steps.push(("16 MB literal", Instant::now()));
    literal_query(&mut s, 16 * MB).await;
    steps.push(("256 MB query", Instant::now()));
    comment_query(&mut s, 256 * MB).await;
    steps.push(("64 MB Bind", Instant::now()));
    large_bind(&mut s, 64 * MB).await;
    steps.push(("256 MB COPY", Instant::now()));
    large_copy(&mut s, 256 * MB).await;
    // The session is still in step: an ordinary query after all that.
    s.write_all(&wire::query("SELECT 7")).await.unwrap();
    let reply = wire::read_until_ready(&mut s, Duration::from_secs(10))
        .await
        .expect("reply");
    assert_eq!(rows_and_tags(&reply).0, vec!["7".to_string()]);
    let end = Instant::now();
    stop.store(true, Ordering::Relaxed);
    let answers = pinger.await.expect("pinger");
    let mut times: Vec<Duration> = answers.iter().map(|a| a.1).collect();
    times.sort();
    let p99 = times[times.len() * 99 / 100];
    let worst = times[times.len() - 1];
    let (peak, _) = proxy.rss_kb();
    let report = by_step(&steps, end, &answers);
    eprintln!(
        "{mode}: {report}; {} pings, p99 {p99:?}; RSS {rss_before} kB before, peak {peak} kB",
        answers.len()
    );
    assert!(
        p99 < PING_BOUND && worst < PING_WORST,
        "{mode}: another client's select 1 took {p99:?} (p99), {worst:?} (slowest) while large messages passed: {report}"
    );
    assert!(
        peak <= rss_before + RSS_GROWTH_BOUND_KB,
        "{mode}: pgpivot's peak RSS {peak} kB grew past {rss_before} + {RSS_GROWTH_BOUND_KB} kB"
    );
}

/// A 1 MB script whose last statement binds session state (`SET search_path`) pins the client
/// in transaction mode, though the statement passed long after the buffer was full: another
/// client never gets the changed server connection.
async fn state_at_the_end_of_a_large_script_pins(proxy: &Proxy, cluster: &Cluster) {
    let mut s = proxy.login(cluster).await;
    let head = b"SELECT 1; /*";
    let tail = b"*/ SET search_path = big_pin, public\0";
    let size = MB;
    s.write_all(&header(b'Q', size)).await.unwrap();
    s.write_all(head).await.unwrap();
    write_fill(&mut s, b';', size - head.len() - tail.len()).await;
    s.write_all(tail).await.unwrap();
    wire::read_until_ready(&mut s, Duration::from_secs(30))
        .await
        .expect("reply to the script");
    let other = connect(&proxy.conn_string(cluster)).await.expect("client");
    for _ in 0..3 {
        let rows = other.simple_query("SHOW search_path").await.expect("show");
        let value = rows
            .iter()
            .find_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
                _ => None,
            })
            .expect("a row");
        assert_eq!(
            value, "\"$user\", public",
            "another client got the pinned connection"
        );
    }
    s.write_all(&wire::query("SHOW search_path")).await.unwrap();
    let reply = wire::read_until_ready(&mut s, Duration::from_secs(10))
        .await
        .expect("reply");
    assert_eq!(rows_and_tags(&reply).0, vec!["big_pin, public".to_string()]);
}

/// Both pool modes, one after the other (at once they would share the machine's two cores and
/// measure each other).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_messages_stream_through_in_both_pool_modes() {
    let cluster = Cluster::start(ClusterOptions {
        standbys: 0,
        ..Default::default()
    })
    .expect("cluster");
    for mode in ["transaction", "session"] {
        let proxy = Proxy::start(&cluster, mode);
        all_sizes(&proxy, &cluster, mode).await;
        if mode == "transaction" {
            state_at_the_end_of_a_large_script_pins(&proxy, &cluster).await;
        }
    }
}
