//! The commands that talk to a running hub over gRPC: reads, search, history,
//! explanations, review tasks and steward decisions. Each prints a table, or the
//! response as JSON with `--json`.

use clap::{Args, Subcommand};
use cmdm_api::{CustomerHubClient, pb};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// What to do on the hub.
#[derive(Debug, Clone, Subcommand)]
pub enum RemoteCommand {
    /// Show a golden record by id (a merged id shows its survivor), now or as of a moment.
    Get {
        /// Golden id such as G0000000042.
        golden_id: String,
        /// The record as it was at this time (RFC 3339, e.g. 2026-11-01T00:00:00Z).
        #[arg(long)]
        as_of: Option<String>,
        /// The record as of this log entry.
        #[arg(long, conflicts_with = "as_of")]
        as_of_seq: Option<u64>,
    },
    /// Show the golden record holding a spoke's record.
    Lookup {
        /// The spoke system, e.g. pos.
        source: String,
        /// The spoke's record id.
        subject: String,
    },
    /// Find a customer by any mix of name, e-mail, phone, postcode and date of birth.
    Search(SearchArgs),
    /// Every event and decision about an entity (G…) or a source record (source/subject).
    History {
        /// A golden id, or a source record as source/subject.
        target: String,
    },
    /// Why a record belongs to its entity; with a second record, how the two compare.
    Explain {
        /// A source record as source/subject.
        record: String,
        /// Another source record as source/subject.
        other: Option<String>,
    },
    /// List review tasks, or show one with its records side by side.
    Tasks(TasksArgs),
    /// Merge two entities (or those of a review task); the older id survives.
    Merge(PairArgs),
    /// Keep two entities (or those of a review task) apart for good.
    KeepApart(PairArgs),
    /// Take a source record out of its entity.
    Split {
        /// The source record as source/subject.
        record: String,
        #[arg(long, default_value = "")]
        comment: String,
        /// The review task this resolves.
        #[arg(long)]
        task: Option<u64>,
    },
    /// Put a source record into an entity.
    Link {
        /// The source record as source/subject.
        record: String,
        /// The golden id it belongs to.
        golden_id: String,
        #[arg(long, default_value = "")]
        comment: String,
        /// The review task this resolves.
        #[arg(long)]
        task: Option<u64>,
    },
    /// Re-decide where every record belongs under the current model (admin); steward
    /// decisions hold.
    Rematch,
    /// May a customer (G…), or whoever holds an e-mail address or phone number, be
    /// contacted? Allowed or not, with every reason.
    CheckContact(ContactArgs),
    /// The same question for a campaign list: golden ids, one per line, from a file or
    /// `-` for standard input. Prints one line per id and a summary.
    CheckContactBatch {
        /// The file of golden ids, or `-`.
        file: String,
        #[command(flatten)]
        question: QuestionArgs,
    },
    /// Erase a person (admin): data keys deleted, projections and files purged,
    /// tombstone published.
    Erase {
        golden_id: String,
        /// Why: the request's reference, logged with your name.
        #[arg(long)]
        comment: String,
    },
    /// Everything held about a person, as JSON (subject access).
    Export { golden_id: String },
    /// Opt-ins and opt-outs per month, purpose and channel; channel migration; atomic
    /// opt-outs avoided.
    ConsentReport,
}

/// A contact question and its target.
#[derive(Debug, Clone, Args)]
pub struct ContactArgs {
    /// A golden id (G…), or an e-mail address or phone number.
    target: String,
    #[command(flatten)]
    question: QuestionArgs,
}

/// What contact is intended.
#[derive(Debug, Clone, Args)]
pub struct QuestionArgs {
    /// email, sms, phone, mail or push.
    #[arg(long)]
    channel: String,
    /// The purpose, e.g. marketing.
    #[arg(long)]
    purpose: String,
    /// A topic of interest the message is about.
    #[arg(long, default_value = "")]
    topic: String,
    /// When (RFC 3339); now if absent.
    #[arg(long, default_value = "")]
    at: String,
}

impl QuestionArgs {
    fn to_proto(&self) -> Option<pb::ContactQuestion> {
        Some(pb::ContactQuestion {
            channel: self.channel.clone(),
            purpose: self.purpose.clone(),
            topic: self.topic.clone(),
            at: self.at.clone(),
        })
    }
}

/// What is known of the person searched for.
#[derive(Debug, Clone, Args)]
pub struct SearchArgs {
    /// Full name, e.g. "Jon Smyth".
    #[arg(long)]
    name: Option<String>,
    #[arg(long)]
    given_name: Option<String>,
    #[arg(long)]
    family_name: Option<String>,
    #[arg(long)]
    email: Option<String>,
    #[arg(long)]
    phone: Option<String>,
    #[arg(long)]
    postcode: Option<String>,
    /// Date of birth, e.g. 1980-02-01.
    #[arg(long)]
    dob: Option<String>,
    /// Hits per page.
    #[arg(long, default_value_t = 10)]
    limit: u32,
    /// The page token a previous search printed.
    #[arg(long, default_value = "")]
    page: String,
}

/// Which review tasks.
#[derive(Debug, Clone, Args)]
pub struct TasksArgs {
    /// Show this task with its records side by side and the explanation.
    task: Option<u64>,
    /// open, resolved or all.
    #[arg(long, default_value = "open")]
    status: String,
    /// age (oldest first), newest, or score (highest first).
    #[arg(long, default_value = "age")]
    sort: String,
    #[arg(long, default_value_t = 20)]
    limit: u32,
    /// The page token a previous listing printed.
    #[arg(long, default_value = "")]
    page: String,
}

/// Two entities, or a review task naming them.
#[derive(Debug, Clone, Args)]
pub struct PairArgs {
    /// A golden id (omit both ids with --task).
    golden_id: Option<String>,
    /// The other golden id.
    other_golden_id: Option<String>,
    /// The review task to resolve: its record's entity and the entity it proposed.
    #[arg(long)]
    task: Option<u64>,
    /// Why; kept in the log and the history.
    #[arg(long, default_value = "")]
    comment: String,
}

/// Adds the bearer token to every request.
#[derive(Clone)]
pub struct Token(Option<MetadataValue<Ascii>>);

impl Interceptor for Token {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

type Client = CustomerHubClient<InterceptedService<Channel, Token>>;

/// Runs one command against the hub at `hub`.
pub fn run(
    hub: &str,
    ca_cert: Option<&std::path::Path>,
    token: Option<&str>,
    json: bool,
    command: &RemoteCommand,
) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut endpoint = Channel::from_shared(hub.to_owned())
            .map_err(|e| anyhow::anyhow!("`{hub}` is not a hub address: {e}"))?;
        if hub.starts_with("https://") {
            let mut tls = tonic::transport::ClientTlsConfig::new().with_native_roots();
            if let Some(path) = ca_cert {
                let pem = std::fs::read(path)
                    .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
                tls = tls.ca_certificate(tonic::transport::Certificate::from_pem(pem));
            }
            endpoint = endpoint.tls_config(tls)?;
        }
        let channel = endpoint.connect().await.map_err(|e| {
            let cause = std::error::Error::source(&e)
                .map(|s| format!(": {s}"))
                .unwrap_or_default();
            anyhow::anyhow!("cannot reach the hub at {hub}: {e}{cause}")
        })?;
        let token = token
            .map(|t| format!("Bearer {t}").parse())
            .transpose()
            .map_err(|_| anyhow::anyhow!("the token holds characters a header cannot carry"))?;
        let mut client = CustomerHubClient::with_interceptor(channel, Token(token));
        execute(&mut client, json, command).await
    })
}

fn key(text: &str) -> anyhow::Result<pb::SourceKey> {
    let (source, subject) = text
        .split_once('/')
        .ok_or_else(|| anyhow::anyhow!("`{text}` is not a source record: write source/subject"))?;
    Ok(pb::SourceKey {
        source: source.to_owned(),
        subject: subject.to_owned(),
    })
}

fn show_key(k: Option<&pb::SourceKey>) -> String {
    k.map(|k| format!("{}/{}", k.source, k.subject))
        .unwrap_or_default()
}

fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

fn fields(fields: &[pb::FieldWeight]) -> String {
    fields
        .iter()
        .map(|f| format!("{} {} ({:+.1})", f.field, f.level, f.weight))
        .collect::<Vec<_>>()
        .join(", ")
}

fn name_of(record: Option<&pb::GoldenRecord>) -> String {
    let Some(r) = record else {
        return String::new();
    };
    let value = |k: &str| r.attributes.get(k).map(|v| v.value.as_str()).unwrap_or("");
    let full = [value("given_name"), value("family_name")]
        .into_iter()
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    if full.is_empty() {
        value("full_name").to_owned()
    } else {
        full
    }
}

async fn execute(c: &mut Client, json: bool, command: &RemoteCommand) -> anyhow::Result<()> {
    match command {
        RemoteCommand::Get {
            golden_id,
            as_of,
            as_of_seq,
        } => {
            let response = c
                .get_golden_record(pb::GetGoldenRecordRequest {
                    golden_id: golden_id.clone(),
                    as_of_time: as_of.clone().unwrap_or_default(),
                    as_of_seq: as_of_seq.unwrap_or(0),
                })
                .await?
                .into_inner();
            let note = (!response.redirected_from.is_empty())
                .then(|| format!("{} was merged into this record", response.redirected_from));
            let record = response
                .record
                .ok_or_else(|| anyhow::anyhow!("the hub answered without a record"))?;
            crate::show_record(&record, note.as_deref(), json)
        }
        RemoteCommand::Lookup { source, subject } => {
            let record = c
                .lookup_by_source_key(pb::LookupBySourceKeyRequest {
                    source: source.clone(),
                    subject: subject.clone(),
                })
                .await?
                .into_inner()
                .record
                .ok_or_else(|| anyhow::anyhow!("the hub answered without a record"))?;
            crate::show_record(&record, None, json)
        }
        RemoteCommand::Search(a) => {
            let response = c
                .search(pb::SearchRequest {
                    full_name: a.name.clone().unwrap_or_default(),
                    given_name: a.given_name.clone().unwrap_or_default(),
                    family_name: a.family_name.clone().unwrap_or_default(),
                    email: a.email.clone().unwrap_or_default(),
                    phone: a.phone.clone().unwrap_or_default(),
                    postcode: a.postcode.clone().unwrap_or_default(),
                    date_of_birth: a.dob.clone().unwrap_or_default(),
                    attributes: Default::default(),
                    page_size: a.limit,
                    page_token: a.page.clone(),
                })
                .await?
                .into_inner();
            if json {
                return print_json(&response);
            }
            println!(
                "{:<12}  {:>6}  {:<28}  {:<20}  matched",
                "golden id", "score", "name", "best record"
            );
            for hit in &response.hits {
                let record = hit.record.as_ref();
                println!(
                    "{:<12}  {:>6.3}  {:<28}  {:<20}  {}",
                    record.map(|r| r.golden_id.as_str()).unwrap_or(""),
                    hit.probability,
                    name_of(record),
                    show_key(hit.member.as_ref()),
                    hit.matched
                        .iter()
                        .map(|f| format!("{} {}", f.field, f.level))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
            println!("\n{} entities found", response.total);
            if !response.next_page_token.is_empty() {
                println!("next page: --page {}", response.next_page_token);
            }
            Ok(())
        }
        RemoteCommand::History { target } => {
            let request = if target.contains('/') {
                pb::GetHistoryRequest {
                    golden_id: String::new(),
                    record: Some(key(target)?),
                }
            } else {
                pb::GetHistoryRequest {
                    golden_id: target.clone(),
                    record: None,
                }
            };
            let response = c.get_history(request).await?.into_inner();
            if json {
                return print_json(&response);
            }
            if !response.golden_id.is_empty() {
                println!("history of {}\n", response.golden_id);
            }
            println!(
                "{:>6}  {:<20}  {:<8}  {:<18}  {:<12}  why",
                "seq", "time", "kind", "what", "by"
            );
            for e in &response.entries {
                println!(
                    "{:>6}  {:<20}  {:<8}  {:<18}  {:<12}  {}",
                    e.seq,
                    e.time.get(..19).unwrap_or(&e.time),
                    e.kind,
                    e.name,
                    e.by,
                    e.why
                );
            }
            Ok(())
        }
        RemoteCommand::Explain { record, other } => {
            let response = c
                .explain(pb::ExplainRequest {
                    record: Some(key(record)?),
                    other: other.as_deref().map(key).transpose()?,
                })
                .await?
                .into_inner();
            if json {
                return print_json(&response);
            }
            println!("{}", response.summary);
            println!(
                "thresholds: link ≥ {:.4}, review ≥ {:.4}",
                response.link_threshold, response.review_threshold
            );
            for cmp in &response.comparisons {
                println!(
                    "\n{} vs {}: weight {:+.2}, probability {:.4}{}",
                    show_key(cmp.record.as_ref()),
                    show_key(cmp.other.as_ref()),
                    cmp.weight,
                    cmp.probability,
                    if cmp.contradict {
                        " (contradict on identity fields)"
                    } else {
                        ""
                    }
                );
                for f in &cmp.fields {
                    println!("  {:<16} {:<20} {:+.2}", f.field, f.level, f.weight);
                }
                // The total is the prior log-odds plus the fields' weights.
                let fields: f64 = cmp.fields.iter().map(|f| f.weight).sum();
                println!("  {:<16} {:<20} {:+.2}", "(prior)", "", cmp.weight - fields);
            }
            Ok(())
        }
        RemoteCommand::Tasks(a) => match a.task {
            Some(task_id) => {
                let response = c
                    .get_task(pb::GetTaskRequest { task_id })
                    .await?
                    .into_inner();
                if json {
                    return print_json(&response);
                }
                let task = response.task.clone().unwrap_or_default();
                println!(
                    "task {}  {}  does {} belong to {}?  probability {:.4}",
                    task.task_id,
                    task.status,
                    show_key(task.record.as_ref()),
                    task.golden_id,
                    task.probability
                );
                if let Some(r) = &task.resolution {
                    println!(
                        "resolved: {} by {} at {}: {}",
                        r.action, r.by, r.at, r.comment
                    );
                }
                let mut views = Vec::new();
                views.extend(response.record.iter());
                views.extend(response.entity_records.iter());
                let mut names: Vec<&String> =
                    views.iter().flat_map(|v| v.attributes.keys()).collect();
                names.sort();
                names.dedup();
                print!("\n{:<16}", "");
                for v in &views {
                    print!("  {:<24}", show_key(v.key.as_ref()));
                }
                println!();
                for name in names {
                    print!("{name:<16}");
                    for v in &views {
                        print!(
                            "  {:<24}",
                            v.attributes.get(name).map(String::as_str).unwrap_or("")
                        );
                    }
                    println!();
                }
                for cmp in &response.comparisons {
                    println!(
                        "\nvs {}: probability {:.4}: {}",
                        show_key(cmp.other.as_ref()),
                        cmp.probability,
                        fields(&cmp.fields)
                    );
                }
                Ok(())
            }
            None => {
                let response = c
                    .list_tasks(pb::ListTasksRequest {
                        status: a.status.clone(),
                        order_by: a.sort.clone(),
                        page_size: a.limit,
                        page_token: a.page.clone(),
                    })
                    .await?
                    .into_inner();
                if json {
                    return print_json(&response);
                }
                println!(
                    "{:>8}  {:<9}  {:>6}  {:<24}  {:<12}  resolution",
                    "task", "status", "score", "record", "entity"
                );
                for t in &response.tasks {
                    println!(
                        "{:>8}  {:<9}  {:>6.3}  {:<24}  {:<12}  {}",
                        t.task_id,
                        t.status,
                        t.probability,
                        show_key(t.record.as_ref()),
                        t.golden_id,
                        t.resolution
                            .as_ref()
                            .map(|r| format!("{} by {}", r.action, r.by))
                            .unwrap_or_default()
                    );
                }
                println!("\n{} tasks", response.total);
                if !response.next_page_token.is_empty() {
                    println!("next page: --page {}", response.next_page_token);
                }
                Ok(())
            }
        },
        RemoteCommand::Merge(a) => {
            let response = c
                .merge(pb::MergeRequest {
                    golden_id: a.golden_id.clone().unwrap_or_default(),
                    other_golden_id: a.other_golden_id.clone().unwrap_or_default(),
                    task_id: a.task.unwrap_or(0),
                    comment: a.comment.clone(),
                })
                .await?
                .into_inner();
            show_decision(&response, json)
        }
        RemoteCommand::KeepApart(a) => {
            let response = c
                .keep_apart(pb::KeepApartRequest {
                    golden_id: a.golden_id.clone().unwrap_or_default(),
                    other_golden_id: a.other_golden_id.clone().unwrap_or_default(),
                    task_id: a.task.unwrap_or(0),
                    comment: a.comment.clone(),
                })
                .await?
                .into_inner();
            show_decision(&response, json)
        }
        RemoteCommand::Split {
            record,
            comment,
            task,
        } => {
            let response = c
                .split(pb::SplitRequest {
                    record: Some(key(record)?),
                    comment: comment.clone(),
                    task_id: task.unwrap_or(0),
                })
                .await?
                .into_inner();
            show_decision(&response, json)
        }
        RemoteCommand::Link {
            record,
            golden_id,
            comment,
            task,
        } => {
            let response = c
                .link(pb::LinkRequest {
                    record: Some(key(record)?),
                    golden_id: golden_id.clone(),
                    comment: comment.clone(),
                    task_id: task.unwrap_or(0),
                })
                .await?
                .into_inner();
            show_decision(&response, json)
        }
        RemoteCommand::Rematch => {
            let response = c.rematch(pb::RematchRequest {}).await?.into_inner();
            if json {
                return print_json(&response);
            }
            println!(
                "re-matched: {} linked, {} merged, {} review tasks opened, {} entities created",
                response.linked, response.merged, response.review_tasks, response.created
            );
            Ok(())
        }
        RemoteCommand::CheckContact(a) => {
            use pb::check_contact_request::Target;
            let looks_like_id = a.target.starts_with('G')
                && a.target.len() > 1
                && a.target[1..].bytes().all(|b| b.is_ascii_digit());
            let target = if looks_like_id {
                Target::GoldenId(a.target.clone())
            } else {
                Target::ContactPoint(a.target.clone())
            };
            let response = c
                .check_contact(pb::CheckContactRequest {
                    target: Some(target),
                    question: a.question.to_proto(),
                })
                .await?
                .into_inner();
            if json {
                return print_json(&response);
            }
            println!(
                "{}: {} on {} for {}",
                a.target,
                if response.allowed {
                    "ALLOWED"
                } else {
                    "NOT ALLOWED"
                },
                a.question.channel,
                a.question.purpose
            );
            for r in &response.reasons {
                println!(
                    "  {} {:<24} {}",
                    if r.blocks { "✗" } else { "✓" },
                    r.code,
                    r.detail
                );
            }
            Ok(())
        }
        RemoteCommand::CheckContactBatch { file, question } => {
            let text = if file == "-" {
                std::io::read_to_string(std::io::stdin())?
            } else {
                std::fs::read_to_string(file)
                    .map_err(|e| anyhow::anyhow!("cannot read {file}: {e}"))?
            };
            let golden_ids: Vec<String> = text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_owned)
                .collect();
            let started = std::time::Instant::now();
            let mut stream = c
                .check_contact_batch(pb::CheckContactBatchRequest {
                    golden_ids,
                    question: question.to_proto(),
                })
                .await?
                .into_inner();
            let mut verdicts = Vec::new();
            while let Some(chunk) = stream.message().await? {
                verdicts.extend(chunk.verdicts);
            }
            let seconds = started.elapsed().as_secs_f64();
            if json {
                return print_json(&verdicts);
            }
            let mut blocked: std::collections::BTreeMap<&str, usize> = Default::default();
            for v in &verdicts {
                let why = if v.error.is_empty() {
                    v.blocked_by.join(",")
                } else {
                    v.error.clone()
                };
                println!(
                    "{}\t{}\t{}",
                    v.golden_id,
                    if v.allowed { "allowed" } else { "refused" },
                    why
                );
                for code in &v.blocked_by {
                    *blocked.entry(code.as_str()).or_default() += 1;
                }
            }
            let allowed = verdicts.iter().filter(|v| v.allowed).count();
            let errors = verdicts.iter().filter(|v| !v.error.is_empty()).count();
            eprintln!(
                "{} checked in {seconds:.2} s: {allowed} allowed, {} refused, {errors} not checked",
                verdicts.len(),
                verdicts.len() - allowed - errors
            );
            for (code, n) in blocked {
                eprintln!("  {code:<24} {n}");
            }
            Ok(())
        }
        RemoteCommand::Erase { golden_id, comment } => {
            let response = c
                .erase(pb::EraseRequest {
                    golden_id: golden_id.clone(),
                    comment: comment.clone(),
                })
                .await?
                .into_inner();
            if json {
                return print_json(&response);
            }
            println!(
                "erased {} (log entry {}): {} source record(s), {} contact point(s){}",
                response.golden_id,
                response.seq,
                response.records.len(),
                response.contact_points,
                if response.merged_ids.is_empty() {
                    String::new()
                } else {
                    format!(", merged ids {}", response.merged_ids.join(", "))
                }
            );
            for record in &response.records {
                println!("  {}", show_key(Some(record)));
            }
            if response.purge_due.is_empty() {
                println!(
                    "store files rewritten: {} → {} bytes",
                    response.bytes_before, response.bytes_after
                );
            } else {
                println!(
                    "store files will be rewritten by {} (privacy.purge_delay_secs)",
                    response.purge_due
                );
            }
            Ok(())
        }
        RemoteCommand::Export { golden_id } => {
            let response = c
                .export(pb::ExportRequest {
                    golden_id: golden_id.clone(),
                })
                .await?
                .into_inner();
            println!("{}", response.json);
            Ok(())
        }
        RemoteCommand::ConsentReport => {
            let response = c
                .consent_report(pb::ConsentReportRequest {})
                .await?
                .into_inner();
            if json {
                return print_json(&response);
            }
            println!(
                "{:<8}  {:<16}  {:<6}  {:>8}  {:>8}  {:>9}",
                "month", "purpose", "channel", "opt-in", "denied", "withdrawn"
            );
            for p in &response.periods {
                println!(
                    "{:<8}  {:<16}  {:<7} {:>8}  {:>8}  {:>9}",
                    p.period, p.purpose, p.channel, p.granted, p.denied, p.withdrawn
                );
            }
            println!("\nchannel migration (opted out of one channel, later in on another)");
            if response.migrations.is_empty() {
                println!("  none");
            }
            for m in &response.migrations {
                println!(
                    "  {:<16}  {} → {}: {} customer(s)",
                    m.purpose, m.from_channel, m.to_channel, m.customers
                );
            }
            println!(
                "\n{} customers, {} with an opt-out; {} of those still reachable for something else (atomic opt-outs avoided)",
                response.customers,
                response.customers_with_opt_out,
                response.atomic_opt_outs_avoided
            );
            Ok(())
        }
    }
}

fn show_decision(response: &pb::StewardResponse, json: bool) -> anyhow::Result<()> {
    if json {
        return print_json(response);
    }
    println!("{} (log entry {})", response.decision, response.seq);
    for r in &response.redirected {
        println!("note: {r} (a merged id was given)");
    }
    for record in &response.records {
        println!(
            "  {}  {:<28}  {}",
            record.golden_id,
            name_of(Some(record)),
            record
                .members
                .iter()
                .map(|m| show_key(Some(m)))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(())
}
