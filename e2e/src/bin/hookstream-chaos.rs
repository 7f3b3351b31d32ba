//! `hookstream-chaos`: drives load through real gateway processes while it SIGKILLs them,
//! restarts their PostgreSQL server and makes the receiver flap, then prints how many events
//! were acknowledged, delivered, lost and duplicated. Exits 1 when an acknowledged event was
//! lost, 2 when the harness itself failed.
//!
//! ```sh
//! cargo build --release -p hookstream-gateway
//! cargo run --release -p hookstream-e2e --bin hookstream-chaos -- --backend sqlite --kill-cycles 50 --flap
//! ```

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use hookstream_e2e::chaos::{self, Backend, Config};

#[derive(Clone, Copy, Debug, ValueEnum)]
enum BackendArg {
    Sqlite,
    Postgres,
}

/// Chaos harness for hookstream-gateway: load plus faults, then a count of acknowledged,
/// delivered, lost and duplicate events.
#[derive(Parser, Debug)]
#[command(name = "hookstream-chaos")]
struct Args {
    /// Storage backend: one process on SQLite, or replicas sharing a PostgreSQL database (a
    /// server of the harness's own, started with scripts/pg-up and deleted at the end).
    #[arg(long, value_enum, default_value = "sqlite")]
    backend: BackendArg,
    /// Gateway processes (PostgreSQL only; default 3 on PostgreSQL, 1 on SQLite).
    #[arg(long)]
    replicas: Option<usize>,
    /// SIGKILL-and-restart cycles, each on the process (SQLite) or a random replica.
    #[arg(long, default_value_t = 10)]
    kill_cycles: u32,
    /// Events per second offered during the whole run.
    #[arg(long, default_value_t = 100)]
    rate: u32,
    /// Restarts of the PostgreSQL server under load, spread among the kill cycles.
    #[arg(long, default_value_t = 0)]
    pg_restarts: u32,
    /// The receiver alternates between answering 200 and 503 about every second.
    #[arg(long)]
    flap: bool,
    /// The gateway binary (default target/release/hookstream-gateway, else
    /// target/debug/hookstream-gateway).
    #[arg(long)]
    gateway: Option<PathBuf>,
    /// Seconds to wait after the load for every acknowledged event to be delivered.
    #[arg(long, default_value_t = 120)]
    drain_timeout: u64,
    /// No progress lines on stderr.
    #[arg(long, short)]
    quiet: bool,
}

fn default_gateway() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let release = target.join("release/hookstream-gateway");
    if release.is_file() {
        release
    } else {
        target.join("debug/hookstream-gateway")
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let backend = match args.backend {
        BackendArg::Sqlite => Backend::Sqlite,
        BackendArg::Postgres => Backend::Postgres,
    };
    let mut config = Config::new(backend, args.gateway.unwrap_or_else(default_gateway));
    if let Some(n) = args.replicas {
        config.replicas = n;
    }
    config.kill_cycles = args.kill_cycles;
    config.rate = args.rate;
    config.pg_restarts = args.pg_restarts;
    config.flap = args.flap;
    config.drain_timeout = Duration::from_secs(args.drain_timeout);
    config.verbose = !args.quiet;
    match chaos::run(&config).await {
        Ok(summary) => {
            println!("{summary}");
            for line in summary.details() {
                println!("{line}");
            }
            if summary.lost > 0 {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("chaos: error: {e:#}");
            ExitCode::from(2)
        }
    }
}
