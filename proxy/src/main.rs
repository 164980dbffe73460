//! The `pgpivot` binary: configuration, logging, signals.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use pgpivot::config::Config;
use pgpivot::server::Running;
use tokio::signal::unix::{signal, Signal, SignalKind};

/// PostgreSQL proxy that always points at the live primary (a Pgpool-II replacement).
///
/// Configured by the Bitnami pgpool environment variables (PGPOOL_*), pgpivot's own (PGPIVOT_*),
/// and optionally a TOML file whose keys are the settings' names; the environment wins.
#[derive(Parser, Debug)]
#[command(version)]
struct Cli {
    /// TOML configuration file.
    #[arg(long, short = 'c', env = "PGPIVOT_CONFIG")]
    config: Option<PathBuf>,
    /// Validate the configuration, print the effective settings (secrets masked) and exit.
    #[arg(long)]
    check: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Ask the running pgpivot's health endpoint (PGPIVOT_METRICS_ADDR); exit 0 on 200, 1
    /// otherwise. For Kubernetes exec probes; starts nothing.
    Probe {
        #[arg(value_enum)]
        what: ProbeKind,
    },
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum ProbeKind {
    /// GET /livez: the process serves (backends do not matter).
    Live,
    /// GET /readyz: a primary is known and pgpivot is not draining.
    Ready,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("pgpivot: invalid configuration: {e}");
            // A probe answers 0 or 1 only.
            if cli.command.is_some() {
                return ExitCode::FAILURE;
            }
            return ExitCode::from(2);
        }
    };
    init_logging(&config.log);
    config.log_notices();
    if cli.check {
        print_check(&config);
        return ExitCode::SUCCESS;
    }
    if let Some(Command::Probe { what }) = cli.command {
        return probe(&config, what);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("pgpivot: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pgpivot: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `pgpivot probe live|ready`: the whole exchange is bounded to 1 s.
fn probe(config: &Config, what: ProbeKind) -> ExitCode {
    use pgpivot::metrics::probe;
    let Some(listen) = config.metrics_addr else {
        eprintln!("pgpivot probe: the health endpoint is turned off (PGPIVOT_METRICS_ADDR=off)");
        return ExitCode::FAILURE;
    };
    let path = match what {
        ProbeKind::Live => "/livez",
        ProbeKind::Ready => "/readyz",
    };
    match probe::get(probe::target(listen), path, Duration::from_secs(1)) {
        Ok((status, body)) => {
            print!("{body}");
            if status == 200 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            println!("pgpivot probe: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `filter` is the resolved log setting (PGPIVOT_LOG, its _FILE, the file's `log`, RUST_LOG),
/// already validated by the configuration.
fn init_logging(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

fn print_check(config: &Config) {
    println!("configuration OK");
    println!("listen_addr = {}", config.listen_addr);
    match config.metrics_addr {
        Some(a) => println!("metrics_addr = {a} (/metrics, /livez, /readyz)"),
        None => println!("metrics_addr = off"),
    }
    if let Some(p) = config.socket_path() {
        println!("unix_socket = {}", p.display());
    }
    for b in &config.backends {
        println!(
            "backend {} = {} weight {} {}",
            b.id,
            b.addr(),
            b.weight,
            b.flag.as_str()
        );
    }
    let users: Vec<&str> = config.users.iter().map(|u| u.name.as_str()).collect();
    println!("users = {}", users.join(", "));
    println!("authentication = {}", config.auth_method.as_str());
    println!("admin_console = {}", config.admin.describe(&config.raw));
    match &config.tls {
        Some(tls) => println!("tls = {}", tls.describe(config.tls_required)),
        None => println!("tls = off"),
    }
    println!("--");
    for (name, value, origin) in config.describe() {
        println!("{name} = {value}    ({origin})");
    }
}

/// Thousands of clients need as many descriptors: raise the soft limit to the hard one.
fn raise_nofile_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain libc calls on a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// During a drain the operator may still hurry it: SIGINT ends the remaining sessions now,
/// SIGQUIT exits at once (the default handlers are gone once tokio listens for them).
async fn escalation(int: &mut Signal, quit: &mut Signal) {
    tokio::select! {
        _ = int.recv() => tracing::info!("SIGINT during the drain: fast shutdown"),
        _ = quit.recv() => {
            tracing::warn!("SIGQUIT: immediate exit");
            std::process::exit(3);
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    raise_nofile_limit();
    let drain_timeout = config.shutdown_timeout;
    let running = Running::start(config).await?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut quit = signal(SignalKind::quit())?;
    let mut hup = signal(SignalKind::hangup())?;
    loop {
        tokio::select! {
            _ = term.recv() => {
                tracing::info!("SIGTERM: graceful drain");
                running.drain(drain_timeout, escalation(&mut int, &mut quit)).await;
                return Ok(());
            }
            _ = running.shutdown_requested() => {
                running.drain(drain_timeout, escalation(&mut int, &mut quit)).await;
                return Ok(());
            }
            _ = int.recv() => {
                tracing::info!("SIGINT: fast shutdown");
                running.stop_fast().await;
                return Ok(());
            }
            _ = quit.recv() => {
                tracing::warn!("SIGQUIT: immediate exit");
                std::process::exit(3);
            }
            _ = hup.recv() => {
                if let Err(e) = running.reload().await {
                    tracing::error!(error = %e, "SIGHUP");
                }
            }
        }
    }
}
