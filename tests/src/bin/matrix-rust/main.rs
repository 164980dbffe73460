//! The client matrix's scenarios for the Rust clients: `matrix-rust tokio-postgres` and
//! `matrix-rust sqlx` (see `tests/matrix/scenario_psycopg.py` for the conventions: connection
//! from `MATRIX_*`, one transcript line per observation, every step on its own connections,
//! a failed step prints one `<step>.failed` line and the next one starts afresh).

mod sqlx_client;
mod tokio_client;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

const STEP_TIMEOUT: Duration = Duration::from_secs(20);
const STEPS: [&str; 11] = [
    "startup",
    "encoding",
    "tx",
    "pipeline",
    "cancel",
    "large",
    "notify",
    "copy",
    "prepared",
    "cursor",
    "terminate",
];

/// Prints one transcript line.
macro_rules! out {
    ($key:expr, $($arg:tt)*) => {{
        println!("{}: {}", $key, format!($($arg)*));
    }};
}
pub(crate) use out;

/// Where to connect, from the environment the matrix test sets.
pub(crate) struct Target {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: String,
    pub db: String,
}

impl Target {
    fn from_env() -> anyhow::Result<Target> {
        let var = |k: &str| std::env::var(k).map_err(|_| anyhow::anyhow!("{k} not set"));
        Ok(Target {
            host: var("MATRIX_HOST")?,
            port: var("MATRIX_PORT")?.parse()?,
            user: var("MATRIX_USER")?,
            password: var("MATRIX_PASSWORD")?,
            db: var("MATRIX_DB")?,
        })
    }
}

pub(crate) type StepFuture<'a> = Pin<Box<dyn Future<Output = anyhow::Result<()>> + 'a>>;

/// One client's scenario: its name and how it runs a step (`None`: the client's API has no
/// way to do it).
pub(crate) trait Scenario: Sync {
    fn name(&self) -> &'static str;
    fn step<'a>(&'a self, t: &'a Target, step: &str) -> Option<StepFuture<'a>>;
    /// How an error of this client is printed (server errors as SQLSTATE and message).
    fn describe(&self, e: &anyhow::Error) -> String;
}

/// The 400 001-byte parameter of the `large` step and its MD5.
pub(crate) fn large_param() -> (String, String) {
    let mut s: String = (0..400_000u32)
        .map(|i| char::from(b'A' + (i % 26) as u8))
        .collect();
    s.push('é');
    let md5 = format!("{:x}", md5::compute(s.as_bytes()));
    (s, md5)
}

/// The `copy` step's input: 5000 rows in COPY text format.
pub(crate) fn copy_rows() -> String {
    (0..5000)
        .map(|i| format!("{i}\trow {i} é\\t\\\\\n"))
        .collect()
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let which = std::env::args().nth(1).unwrap_or_default();
    let scenario: &dyn Scenario = match which.as_str() {
        "tokio-postgres" => &tokio_client::TokioPostgres,
        "sqlx" => &sqlx_client::Sqlx,
        other => anyhow::bail!("usage: matrix-rust tokio-postgres|sqlx (got {other:?})"),
    };
    let target = Target::from_env()?;
    for name in STEPS {
        let Some(fut) = scenario.step(&target, name) else {
            continue;
        };
        match tokio::time::timeout(STEP_TIMEOUT, fut).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => out!(format!("{name}.failed"), "{}", scenario.describe(&e)),
            Err(_) => out!(
                format!("{name}.failed"),
                "step took more than {} s",
                STEP_TIMEOUT.as_secs()
            ),
        }
    }
    out!("done", "{}", scenario.name());
    // Connections a timed-out step left behind must not keep us alive.
    std::process::exit(0)
}
