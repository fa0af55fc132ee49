//! `pgmlcat [CONFIG_PATH] [--log-level LEVEL]`, the same shape as pgcat's CLI.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

#[derive(Parser, Debug)]
#[command(
    name = "pgmlcat",
    version,
    about = "Postgres pooler with in-line ML (pgcat-compatible)"
)]
struct Cli {
    /// Path to the config file (pgcat.toml format).
    #[arg(default_value = "pgcat.toml")]
    config: PathBuf,
    /// error, warn, info, debug or trace. RUST_LOG, when set, wins.
    #[arg(short = 'l', long, default_value = "info", env = "PGMLCAT_LOG_LEVEL")]
    log_level: String,
    /// Validate the config and exit (non-zero with the reasons if invalid).
    #[arg(long)]
    check: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter =
        // --log-level is for pgmlcat's own records; other crates (sqlparser
        // logs every token at debug) stay at warn unless RUST_LOG says so.
        EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| EnvFilter::new(format!("warn,pgmlcat={}", cli.log_level)));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .init();

    let loaded = match pgmlcat::config::load_file(&cli.config) {
        Ok(l) => l,
        Err(errors) => {
            for e in &errors {
                eprintln!("{}: {e}", cli.config.display());
            }
            return ExitCode::from(2);
        }
    };
    for w in &loaded.warnings {
        tracing::warn!("{}: {w}", cli.config.display());
    }
    if cli.check {
        println!("{}: configuration is valid", cli.config.display());
        return ExitCode::SUCCESS;
    }
    let general = &loaded.config.general;
    let threads = general
        .worker_threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    let addr = format!("{}:{}", general.host, general.port);
    // One worker: a single-threaded runtime has no cross-thread wakeups,
    // which is what a proxy sharing two cores with Postgres wants.
    let mut builder = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(threads);
        b
    };
    let runtime = match builder.enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        let listener =
            pgmlcat::net::socket::bind_listener(&addr, loaded.config.general.so_reuseport)?;
        let app = pgmlcat::app::App::new(loaded.config, cli.config.clone())
            .map_err(|errors| std::io::Error::other(errors.join("; ")))?;
        // pgcat's words: scripts wait for them.
        tracing::info!(
            "pgmlcat {} listening on {addr}. Waiting for clients",
            env!("CARGO_PKG_VERSION")
        );
        pgmlcat::runtime::run(app, listener).await
    });
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pgmlcat: {e}");
            ExitCode::FAILURE
        }
    }
}
