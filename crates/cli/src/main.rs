//! `cmdm`: the customer master data hub's command line for stewards and operators.
//! Reads go to a running hub over gRPC; `import`, `eval` and `model train` work on a
//! data directory directly.

mod local;
mod remote;
mod table;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use cmdm_api::pb;
use cmdm_hub::{HubConfig, Overrides};

/// Command line for the customer master data hub.
#[derive(Debug, Parser)]
#[command(name = "cmdm", version)]
struct Cli {
    /// The hub's gRPC address (for the commands that talk to a running hub).
    #[arg(
        long,
        env = "CMDM_HUB",
        default_value = "http://127.0.0.1:50051",
        global = true
    )]
    hub: String,
    /// CA certificate (PEM) to trust for an https:// hub, besides the system's roots.
    #[arg(long, env = "CMDM_CA_CERT", global = true)]
    ca_cert: Option<std::path::PathBuf>,
    /// Bearer token for a hub that has tokens configured.
    #[arg(long, env = "CMDM_TOKEN", global = true, hide_env_values = true)]
    token: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
    /// Hub settings for the commands that open a data directory (import, eval, model).
    #[command(flatten)]
    settings: Overrides,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    #[command(flatten)]
    Remote(remote::RemoteCommand),
    /// Load a legacy CSV extract into the data directory through the matching engine
    /// (stop the hub on that directory first).
    Import(local::ImportArgs),
    /// Import a CSV with known truth into a fresh data directory and measure matching:
    /// pairwise and cluster precision, recall and F1, blocking recall, review band, time.
    Eval(local::EvalArgs),
    /// Matching models.
    #[command(subcommand)]
    Model(ModelCommand),
    /// Write synthetic people with duplicates, e-mails, phones and the truth (person_id)
    /// as CSV, for load tests and `cmdm eval`.
    Generate(local::GenerateArgs),
}

#[derive(Debug, Subcommand)]
enum ModelCommand {
    /// Estimate a model from a CSV without labels (u by sampling, m by EM) and write it.
    Train(local::TrainArgs),
}

// Imports allocate and free many small values, much of it freed on another thread than
// the one that allocated it: jemalloc does that with less CPU than mimalloc, which was
// faster than glibc's (BENCHMARKS.md). Its default options are built in from
// `.cargo/config.toml` (huge pages for the heap).
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    quiet_on_closed_pipe();
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Remote(command) => remote::run(
            &cli.hub,
            cli.ca_cert.as_deref(),
            cli.token.as_deref(),
            cli.json,
            command,
        ),
        Command::Import(args) => {
            HubConfig::load(&cli.settings).and_then(|c| local::import(&c, args))
        }
        Command::Eval(args) => {
            HubConfig::load(&cli.settings).and_then(|c| local::eval(&c, args, cli.json))
        }
        Command::Generate(args) => local::generate(args),
        Command::Model(ModelCommand::Train(args)) => {
            HubConfig::load(&cli.settings).and_then(|c| local::train(&c, args))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            match e.downcast_ref::<tonic::Status>() {
                Some(status) => eprintln!("cmdm: {:?}: {}", status.code(), status.message()),
                None => eprintln!("cmdm: {e:#}"),
            }
            ExitCode::FAILURE
        }
    }
}

/// `cmdm … | head` closes the pipe early: stop quietly then, as Unix tools do, instead of
/// panicking in `println!` (Rust ignores SIGPIPE, so the write fails instead).
fn quiet_on_closed_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if message.contains("Broken pipe") {
            std::process::exit(0);
        }
        default(info);
    }));
}

/// Prints a golden record as a table, or as JSON.
pub(crate) fn show_record(
    record: &pb::GoldenRecord,
    note: Option<&str>,
    json: bool,
) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(&to_json(record, note))?);
    } else {
        print_table(record, note);
    }
    Ok(())
}

fn key(k: Option<&pb::SourceKey>) -> String {
    k.map(|k| format!("{}/{}", k.source, k.subject))
        .unwrap_or_default()
}

/// Map entries in key order (protobuf maps arrive unordered).
fn sorted<V>(map: &std::collections::HashMap<String, V>) -> Vec<(&String, &V)> {
    let mut entries: Vec<_> = map.iter().collect();
    entries.sort_by(|a, b| a.0.cmp(b.0));
    entries
}

fn to_json(record: &pb::GoldenRecord, note: Option<&str>) -> serde_json::Value {
    let values = |map: &std::collections::HashMap<String, pb::GoldenValue>| {
        serde_json::Value::Object(
            sorted(map)
                .into_iter()
                .map(|(name, v)| {
                    let value = serde_json::json!({
                        "value": v.value, "source": key(v.source.as_ref()), "time": v.time,
                    });
                    (name.clone(), value)
                })
                .collect(),
        )
    };
    let consents = sorted(&record.consents);
    serde_json::json!({
        "golden_id": record.golden_id,
        "redirect": note,
        "attributes": values(&record.attributes),
        "preferences": values(&record.preferences),
        "consents": consents.into_iter().map(|(k, c)| serde_json::json!({
            "key": k, "status": c.status, "legal_basis": c.legal_basis,
            "source": key(c.source.as_ref()), "time": c.time,
        })).collect::<Vec<_>>(),
        "members": record.members.iter().map(|m| key(Some(m))).collect::<Vec<_>>(),
        "merged_ids": record.merged_ids,
        "version": record.version,
    })
}

fn print_table(record: &pb::GoldenRecord, note: Option<&str>) {
    println!(
        "golden record {}  (version {})",
        record.golden_id, record.version
    );
    if let Some(note) = note {
        println!("note: {note}");
    }
    let rows = |title: &str, map: &std::collections::HashMap<String, pb::GoldenValue>| {
        if map.is_empty() {
            return;
        }
        let entries = sorted(map);
        let width = entries
            .iter()
            .map(|(k, _)| k.len())
            .max()
            .unwrap_or(0)
            .max(title.len());
        println!("\n{title:<width$}  {:<32}  {:<24}  time", "value", "from");
        for (name, v) in entries {
            println!(
                "{name:<width$}  {:<32}  {:<24}  {}",
                v.value,
                key(v.source.as_ref()),
                v.time
            );
        }
    };
    rows("attribute", &record.attributes);
    rows("preference", &record.preferences);
    if !record.consents.is_empty() {
        let consents = sorted(&record.consents);
        println!(
            "\n{:<24}  {:<10}  {:<24}  time",
            "consent", "status", "from"
        );
        for (k, c) in consents {
            println!(
                "{k:<24}  {:<10}  {:<24}  {}",
                c.status,
                key(c.source.as_ref()),
                c.time
            );
        }
    }
    println!(
        "\nsource records: {}",
        record
            .members
            .iter()
            .map(|m| key(Some(m)))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if !record.merged_ids.is_empty() {
        println!("merged ids:     {}", record.merged_ids.join(", "));
    }
}
