//! `cmdm-hub`: the customer master data hub server.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use cmdm_hub::{HubConfig, Overrides, open_engine, serve};
use tracing_subscriber::EnvFilter;

/// The customer master data hub: consumes spoke events from Kafka, matches them into
/// golden records, publishes changes, and serves reads over gRPC.
///
/// Settings come from embedded defaults, then the --config TOML file, then CMDM_*
/// environment variables and flags.
#[derive(Debug, Parser)]
#[command(name = "cmdm-hub", version)]
struct Cli {
    #[command(flatten)]
    overrides: Overrides,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the hub (the default).
    Serve,
    /// Replay the event log into fresh projections (run with the hub stopped).
    Rebuild {
        /// Only compare the replayed projections with the live ones; exit 1 if they differ.
        #[arg(long)]
        verify: bool,
    },
    /// Print the effective configuration and exit.
    Config,
}

// The write path allocates and frees many small values, much of it freed on another thread
// than the one that allocated it: jemalloc does that with less CPU than mimalloc, which was
// faster than glibc's (BENCHMARKS.md). Its default options are built in from
// `.cargo/config.toml` (huge pages for the heap).
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match HubConfig::load(&cli.overrides) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("cmdm-hub: {e:#}");
            return ExitCode::from(2);
        }
    };
    init_tracing(&config.log_format);
    let result = match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => run_server(config),
        Command::Rebuild { verify } => rebuild(&config, verify),
        Command::Config => {
            println!("{config:#?}");
            Ok(ExitCode::SUCCESS)
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("cmdm-hub: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(format: &str) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,librdkafka=warn,rdkafka=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn run_server(config: HubConfig) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(serve(config, termination()))?;
    Ok(ExitCode::SUCCESS)
}

/// Resolves on SIGINT or SIGTERM.
async fn termination() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(
            tokio::signal::unix::SignalKind::terminate(),
        ) {
            Ok(term) => term,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; only SIGINT stops the hub");
                let _ = interrupt.await;
                return;
            }
        };
        tokio::select! {
            _ = interrupt => tracing::info!("SIGINT received"),
            _ = term.recv() => tracing::info!("SIGTERM received"),
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}

fn rebuild(config: &HubConfig, verify: bool) -> anyhow::Result<ExitCode> {
    let engine = open_engine(config)?;
    if verify {
        let report = cmdm_engine::rebuild::verify(&engine)?;
        if report.is_identical() {
            println!(
                "rebuild verified: {} log entries replayed, {} projection keys identical",
                report.entries, report.keys_compared
            );
            Ok(ExitCode::SUCCESS)
        } else {
            println!(
                "rebuild differs: {} of {} projection keys differ after replaying {} log entries",
                report.total_differences, report.keys_compared, report.entries
            );
            for difference in &report.differences {
                println!("  {difference}");
            }
            Ok(ExitCode::FAILURE)
        }
    } else {
        let entries = cmdm_engine::rebuild::rebuild_in_place(&engine)?;
        println!("rebuilt the projections from {entries} log entries");
        Ok(ExitCode::SUCCESS)
    }
}
