//! Commands that work on a data directory directly (the hub must not be running on it):
//! import a CSV extract, train a matching model, evaluate matching against the truth.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use cmdm_domain::{GoldenId, InboundEvent, SourceKey, SourceRecord, Stamp, Timestamp};
use cmdm_engine::{BatchReport, Engine, EngineConfig};
use cmdm_hub::HubConfig;
use cmdm_matching::{FuzzyMatcher, Matcher, Model, Prepared};
use cmdm_store::{Store, TreeName};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::table::{self, Mapping, Rejected, Row, Truth};

/// Where a CSV comes from and how to read it.
#[derive(Debug, Clone, Args)]
pub struct CsvArgs {
    /// The CSV file (first row: column names).
    #[arg(long)]
    pub csv: PathBuf,
    /// Attribute=column pairs, e.g. given_name=first_name,family_name=surname,
    /// date_of_birth=dob; join columns with +: address_line1=number+street.
    #[arg(long)]
    pub map: String,
    /// The column holding the legacy system's record id [default: the line number].
    #[arg(long)]
    pub id: Option<String>,
    /// The spoke system name the records are filed under.
    #[arg(long, default_value = "import")]
    pub source: String,
}

/// `cmdm import`.
#[derive(Debug, Clone, Args)]
pub struct ImportArgs {
    #[command(flatten)]
    pub csv: CsvArgs,
    /// Rows applied per storage transaction.
    #[arg(long, default_value_t = 1000)]
    pub batch: usize,
}

/// `cmdm model train`.
#[derive(Debug, Clone, Args)]
pub struct TrainArgs {
    #[command(flatten)]
    pub csv: CsvArgs,
    /// Where to write the model file.
    #[arg(long, default_value = "model.json")]
    pub out: PathBuf,
    /// Random record pairs sampled to estimate u [default: 100 per row, 100,000 to 2,000,000].
    #[arg(long)]
    pub random_pairs: Option<usize>,
    /// Most expectation-maximisation rounds.
    #[arg(long, default_value_t = 50)]
    pub iterations: usize,
}

/// `cmdm generate`.
#[derive(Debug, Clone, Args)]
pub struct GenerateArgs {
    /// How many distinct people.
    #[arg(long, default_value_t = 100_000)]
    pub people: usize,
    /// Mean number of extra (duplicate) records per person.
    #[arg(long, default_value_t = 0.3)]
    pub duplicates: f64,
    /// Seed: the same seed writes the same file.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Output CSV file.
    #[arg(long)]
    pub out: PathBuf,
}

/// `cmdm generate`.
pub fn generate(args: &GenerateArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.duplicates >= 0.0, "--duplicates must not be negative");
    let records = cmdm_matching::synth::generate(args.people, args.duplicates, args.seed);
    let mut out = csv::Writer::from_path(&args.out)
        .with_context(|| format!("cannot write {}", args.out.display()))?;
    let mut header = vec!["record_id", "person_id"];
    header.extend(cmdm_matching::synth::COLUMNS);
    out.write_record(&header)?;
    for (i, record) in records.iter().enumerate() {
        let mut row = vec![format!("r{i}"), format!("p{}", record.person)];
        for column in cmdm_matching::synth::COLUMNS {
            row.push(record.attributes.get(column).cloned().unwrap_or_default());
        }
        out.write_record(&row)?;
    }
    out.flush()?;
    println!(
        "wrote {} records of {} people to {}",
        records.len(),
        args.people,
        args.out.display()
    );
    Ok(())
}

/// `cmdm eval`.
#[derive(Debug, Clone, Args)]
pub struct EvalArgs {
    #[command(flatten)]
    pub csv: CsvArgs,
    /// The column naming each row's true person, optionally with a regex whose first
    /// group is the person: `rec_id:rec-(\d+)`.
    #[arg(long)]
    pub truth: String,
    /// Keep the evaluation's data directory here instead of a temporary one.
    #[arg(long)]
    pub keep_data: Option<PathBuf>,
    /// Print up to N examples of each kind of error (true pairs never compared, true
    /// pairs left apart, false pairs joined), with their normalised values.
    #[arg(long, default_value_t = 0)]
    pub show_errors: usize,
}

fn progress_bar(path: &Path) -> ProgressBar {
    let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    let bar = ProgressBar::new(size);
    bar.set_style(
        ProgressStyle::with_template("{spinner} {bytes}/{total_bytes} [{bar:30}] {per_sec} {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar
}

/// Progress for logs: without a terminal (no progress bar), a line every ten seconds
/// with the rows so far and the rate over the last interval.
struct RateLog {
    started: Instant,
    last: Instant,
    last_rows: usize,
    enabled: bool,
}

impl RateLog {
    fn new() -> Self {
        use std::io::IsTerminal;
        let now = Instant::now();
        RateLog {
            started: now,
            last: now,
            last_rows: 0,
            enabled: !std::io::stderr().is_terminal(),
        }
    }

    fn tick(&mut self, rows: usize) {
        let interval = self.last.elapsed().as_secs_f64();
        if !self.enabled || interval < 10.0 {
            return;
        }
        eprintln!(
            "{:>6.0} s  {rows:>10} rows  {:>8.0} rows/s over the last {interval:.0} s",
            self.started.elapsed().as_secs_f64(),
            (rows - self.last_rows) as f64 / interval,
        );
        self.last = Instant::now();
        self.last_rows = rows;
    }
}

fn print_rejected(rejected: &[Rejected]) {
    for r in rejected.iter().take(20) {
        eprintln!("  line {}: {}", r.line, r.reason);
    }
    if rejected.len() > 20 {
        eprintln!("  … and {} more", rejected.len() - 20);
    }
}

/// What an import did.
#[derive(Debug, Default, Serialize)]
pub struct ImportSummary {
    pub rows: usize,
    pub applied: usize,
    pub duplicates: usize,
    pub entities: usize,
    pub created: usize,
    pub linked: usize,
    pub merged: usize,
    pub review_tasks: usize,
    pub findings: usize,
    pub generic_keys: BTreeSet<String>,
    pub rejected: usize,
    pub seconds: f64,
}

impl ImportSummary {
    fn add(&mut self, report: &BatchReport) {
        self.applied += report.applied;
        self.duplicates += report.duplicates;
        self.created += report.created;
        self.linked += report.linked;
        self.merged += report.merged;
        self.review_tasks += report.review_tasks;
        self.findings += report.findings;
        self.generic_keys
            .extend(report.generic_keys.iter().cloned());
    }

    fn print(&self) {
        let rate = self.rows as f64 / self.seconds.max(1e-9);
        println!("rows read          {:>10}", self.rows);
        println!(
            "records applied    {:>10}  ({} already imported)",
            self.applied, self.duplicates
        );
        println!("entities in store  {:>10}", self.entities);
        println!("new entities       {:>10}", self.created);
        println!("linked             {:>10}", self.linked);
        println!("merged             {:>10}", self.merged);
        println!("review tasks       {:>10}", self.review_tasks);
        println!(
            "quality findings   {:>10}  (values kept raw: unparseable)",
            self.findings
        );
        println!("generic keys       {:>10}", self.generic_keys.len());
        for key in self.generic_keys.iter().take(10) {
            println!("  {key}");
        }
        println!("rejected rows      {:>10}", self.rejected);
        println!(
            "time               {:>10.2} s  ({rate:.0} rows/s)",
            self.seconds
        );
    }
}

/// Applies rows through the engine's batch path, as Kafka events would be; each batch is
/// written to the store while the next is matched ([`Engine::apply_behind`]), made
/// durable once at the end.
fn apply_rows(
    engine: &Engine,
    rows: impl IntoIterator<Item = Row>,
    source: &str,
    batch: usize,
    summary: &mut ImportSummary,
) -> anyhow::Result<()> {
    let time = Timestamp::now();
    let mut pending = Vec::with_capacity(batch);
    let mut rows = rows.into_iter().peekable();
    while let Some(row) = rows.next() {
        summary.rows += 1;
        pending.push(row.event(source, time)?);
        if pending.len() >= batch.max(1) && rows.peek().is_some() {
            apply_events(engine, &pending, summary)?;
            pending.clear();
        }
    }
    apply_last(engine, &pending, summary)
}

/// The smallest part [`apply_last`] splits off; still enough for a batch's records to
/// be prepared ahead.
const LAST_PART: usize = 64;

/// Applies the last batch of a load in shrinking parts (a half, a quarter, …): nothing
/// overlaps the writing of the last part, which is then short.
fn apply_last(
    engine: &Engine,
    events: &[InboundEvent],
    summary: &mut ImportSummary,
) -> anyhow::Result<()> {
    let mut rest = events;
    while rest.len() >= 2 * LAST_PART {
        let (now, later) = rest.split_at(rest.len() / 2);
        apply_events(engine, now, summary)?;
        rest = later;
    }
    apply_events(engine, rest, summary)
}

/// Applies one batch of events and counts what it did.
fn apply_events(
    engine: &Engine,
    events: &[InboundEvent],
    summary: &mut ImportSummary,
) -> anyhow::Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    let report = engine.apply_behind(events, &[], false)?;
    summary.add(&report);
    Ok(())
}

/// `cmdm import`: loads a legacy extract through the engine into the data directory.
pub fn import(config: &HubConfig, args: &ImportArgs) -> anyhow::Result<()> {
    let bar = progress_bar(&args.csv.csv);
    let (summary, rejected) = run_import(config, args, |pos| bar.set_position(pos))?;
    bar.finish_and_clear();
    summary.print();
    if !rejected.is_empty() {
        eprintln!("rejected rows:");
        print_rejected(&rejected);
    }
    Ok(())
}

/// The import itself: one thread reads the file and makes each batch of rows into
/// events while this one applies the batch before.
fn run_import(
    config: &HubConfig,
    args: &ImportArgs,
    progress: impl FnMut(u64) + Send,
) -> anyhow::Result<(ImportSummary, Vec<Rejected>)> {
    let mapping = Mapping::parse(&args.csv.map)?;
    let engine = cmdm_hub::open_engine(config)?;
    let started = Instant::now();
    let mut summary = ImportSummary::default();
    let batch = args.batch.max(1);
    let (sender, batches) = std::sync::mpsc::sync_channel::<Vec<InboundEvent>>(2);
    let (applied, read) = std::thread::scope(|scope| {
        let reader = scope.spawn(|| {
            // Owned here, so that the applying side sees the end when the reader is done.
            let sender = sender;
            let source = args.csv.source.as_str();
            let time = Timestamp::now();
            let mut chunk = Vec::with_capacity(batch);
            let rejected = table::read_each(
                &args.csv.csv,
                &mapping,
                args.csv.id.as_deref(),
                None,
                progress,
                |row| {
                    chunk.push(row.event(source, time)?);
                    if chunk.len() >= batch {
                        sender
                            .send(std::mem::replace(&mut chunk, Vec::with_capacity(batch)))
                            .map_err(|_| anyhow::anyhow!("the import stopped"))?;
                    }
                    Ok(())
                },
            )?;
            // The applying side only goes away after an error, which it reports.
            let _ = sender.send(chunk);
            Ok::<_, anyhow::Error>(rejected)
        });
        let expected = table::estimate_rows(&args.csv.csv);
        let applied = apply_batches(&engine, batches, expected, &mut summary);
        let read = reader
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        (applied, read)
    });
    // An error applying stops the reader: it is the one to report.
    applied?;
    let rejected = read?;
    engine.written()?;
    engine.store().flush_blocking()?;
    summary.rejected = rejected.len();
    summary.entities = engine.store().tree(TreeName::Entities).len();
    summary.seconds = started.elapsed().as_secs_f64();
    Ok((summary, rejected))
}

/// Applies the batches the reader sends until it stops; dropping `batches` on an error
/// tells the reader to stop too.
///
/// After the first batch (which loads the match index), the index makes room for the
/// rest of the `expected` rows.
fn apply_batches(
    engine: &Engine,
    batches: std::sync::mpsc::Receiver<Vec<InboundEvent>>,
    mut expected: Option<usize>,
    summary: &mut ImportSummary,
) -> anyhow::Result<()> {
    let mut rate = RateLog::new();
    // Each batch is held until the next one comes, so that the last is known as such.
    let mut held: Option<Vec<InboundEvent>> = None;
    for events in batches {
        summary.rows += events.len();
        if let Some(before) = held.replace(events) {
            apply_events(engine, &before, summary)?;
            if let Some(rows) = expected.take() {
                engine.reserve(rows.saturating_sub(before.len()));
            }
            rate.tick(summary.rows - held.as_ref().map_or(0, Vec::len));
        }
    }
    match held {
        Some(last) => apply_last(engine, &last, summary),
        None => Ok(()),
    }
}

/// Prepares rows in memory the way the engine would, on every core.
fn prepare_rows(
    matcher: &FuzzyMatcher,
    rows: &[Row],
    source: &str,
) -> anyhow::Result<Vec<Prepared>> {
    let workers = std::thread::available_parallelism().map_or(1, usize::from);
    let chunk = rows.len().div_ceil(workers).max(1);
    std::thread::scope(|scope| {
        let parts: Vec<_> = rows
            .chunks(chunk)
            .map(|part| scope.spawn(move || prepare_part(matcher, part, source)))
            .collect();
        let mut prepared = Vec::with_capacity(rows.len());
        for part in parts {
            let part = part
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))?;
            prepared.extend(part);
        }
        Ok(prepared)
    })
}

fn prepare_part(
    matcher: &FuzzyMatcher,
    rows: &[Row],
    source: &str,
) -> anyhow::Result<Vec<Prepared>> {
    rows.iter()
        .map(|row| {
            let event = row.event(source, Timestamp(0))?;
            let mut record = SourceRecord::new(event.key());
            record.apply(
                &event.payload,
                Stamp {
                    time: event.time,
                    seq: 1,
                },
            );
            Ok(matcher.prepare(&record))
        })
        .collect()
}

/// Trains a model on rows: the default model plus a text comparison for every mapped
/// attribute it lacks, then u by sampling and m by EM.
fn train_model(
    config: &HubConfig,
    rows: &[Row],
    mapping: &Mapping,
    source: &str,
    random_pairs: usize,
    iterations: usize,
) -> anyhow::Result<(Model, cmdm_matching::train::TrainingReport, Vec<Prepared>)> {
    let base = config.matching.matcher()?;
    let mut model = base.model().clone();
    for (attribute, _) in &mapping.0 {
        let known = matches!(attribute.as_str(), "full_name");
        if !known {
            model.ensure_field(attribute);
        }
    }
    let prepared = prepare_rows(&base, rows, source)?;
    let report = cmdm_matching::train::train(
        &mut model,
        &prepared,
        random_pairs,
        iterations,
        config.matching.generic_limit,
    );
    model.name = format!(
        "trained on {} ({} rows, {} candidate pairs, {} EM rounds)",
        mapping_label(rows, source),
        report.records,
        report.candidate_pairs,
        report.iterations
    );
    model
        .validate()
        .map_err(|e| anyhow::anyhow!("trained model: {e}"))?;
    Ok((model, report, prepared))
}

/// Enough random pairs to see rare agreements, in proportion to the file.
fn default_random_pairs(rows: usize) -> usize {
    rows.saturating_mul(20).clamp(100_000, 2_000_000)
}

fn mapping_label(rows: &[Row], source: &str) -> String {
    format!("{source} extract of {} rows", rows.len())
}

/// `cmdm model train`.
pub fn train(config: &HubConfig, args: &TrainArgs) -> anyhow::Result<()> {
    let mapping = Mapping::parse(&args.csv.map)?;
    let (rows, rejected) = table::read(
        &args.csv.csv,
        &mapping,
        args.csv.id.as_deref(),
        None,
        |_| {},
    )?;
    let started = Instant::now();
    let (model, report, _) = train_model(
        config,
        &rows,
        &mapping,
        &args.csv.source,
        args.random_pairs
            .unwrap_or_else(|| default_random_pairs(rows.len())),
        args.iterations,
    )?;
    std::fs::write(&args.out, serde_json::to_string_pretty(&model)?)
        .with_context(|| format!("cannot write {}", args.out.display()))?;
    println!(
        "trained on {} rows ({} rejected): {} random pairs for u, {} candidate pairs, {} EM rounds, prior {:.4}, {:.2} s",
        report.records,
        rejected.len(),
        report.random_pairs,
        report.candidate_pairs,
        report.iterations,
        report.prior,
        started.elapsed().as_secs_f64()
    );
    println!(
        "{:<16} {:<20} {:>8} {:>10} {:>8}",
        "field", "level", "m", "u", "weight"
    );
    for field in &model.fields {
        for level in &field.levels {
            println!(
                "{:<16} {:<20} {:>8.4} {:>10.6} {:>8.2}",
                field.field,
                level.label,
                level.m,
                level.u,
                level.weight()
            );
        }
    }
    println!(
        "model written to {} (use it with --model or CMDM_MODEL)",
        args.out.display()
    );
    if !rejected.is_empty() {
        print_rejected(&rejected);
    }
    Ok(())
}

/// Precision, recall and F1.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Prf {
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
}

impl Prf {
    fn new(true_positive: f64, predicted: f64, actual: f64) -> Self {
        let precision = if predicted > 0.0 {
            true_positive / predicted
        } else {
            1.0
        };
        let recall = if actual > 0.0 {
            true_positive / actual
        } else {
            1.0
        };
        let f1 = if precision + recall > 0.0 {
            2.0 * precision * recall / (precision + recall)
        } else {
            0.0
        };
        Prf {
            precision,
            recall,
            f1,
        }
    }
}

/// The evaluation report.
#[derive(Debug, Serialize)]
pub struct EvalReport {
    pub file: String,
    pub rows: usize,
    pub rejected: usize,
    pub true_clusters: usize,
    pub true_pairs: u64,
    pub predicted_clusters: usize,
    pub predicted_pairs: u64,
    /// Over within-cluster record pairs, clusters as the hub formed them.
    pub pairwise: Prf,
    /// Over whole clusters: a predicted cluster counts only if it equals a true one.
    pub cluster: Prf,
    /// Share of true pairs that share at least one non-generic blocking key.
    pub blocking_recall: f64,
    pub review_tasks: usize,
    pub generic_keys: usize,
    pub model: String,
    pub train_seconds: f64,
    pub import_seconds: f64,
    pub rows_per_second: f64,
}

fn pairs(n: usize) -> u64 {
    (n as u64) * (n as u64).saturating_sub(1) / 2
}

/// `cmdm eval`.
/// With a model configured (`--model`), it is used as is; otherwise one is trained on the
/// file first, without its truth column (unsupervised).
pub fn eval(config: &HubConfig, args: &EvalArgs, json: bool) -> anyhow::Result<()> {
    let mapping = Mapping::parse(&args.csv.map)?;
    let truth = Truth::parse(&args.truth)?;
    let (rows, rejected) = table::read(
        &args.csv.csv,
        &mapping,
        args.csv.id.as_deref(),
        Some(&truth),
        |_| {},
    )?;
    let source = args.csv.source.as_str();

    let train_started = Instant::now();
    // Training prepares every row; the blocking-recall check below reuses that work.
    let (model, trained_rows) = match config.matching.configured_model()? {
        Some(model) => (model, None),
        None => {
            let pairs = default_random_pairs(rows.len());
            let (model, _, prepared) = train_model(config, &rows, &mapping, source, pairs, 50)?;
            (model, Some(prepared))
        }
    };
    let train_seconds = train_started.elapsed().as_secs_f64();

    let temporary;
    let data_dir = match &args.keep_data {
        Some(dir) => {
            anyhow::ensure!(
                !dir.exists() || std::fs::read_dir(dir)?.next().is_none(),
                "{} is not empty: eval needs a fresh data directory",
                dir.display()
            );
            dir.clone()
        }
        None => {
            temporary = tempfile::tempdir()?;
            temporary.path().to_owned()
        }
    };
    let matcher = FuzzyMatcher::new(model.clone(), config.matching.matcher_config())
        .map_err(|e| anyhow::anyhow!("model: {e}"))?;
    let engine = Engine::new(
        Store::open(&data_dir)?,
        Arc::new(matcher.clone()),
        EngineConfig {
            survivorship: config.survivorship.clone(),
            ..EngineConfig::default()
        },
    );
    let import_started = Instant::now();
    let mut summary = ImportSummary::default();
    apply_rows(&engine, rows.iter().cloned(), source, 1000, &mut summary)?;
    engine.written()?;
    let import_seconds = import_started.elapsed().as_secs_f64();

    // Clusters as the hub formed them, and the truth.
    // A row with no usable value (every mapped column empty) joins no entity: it is a
    // cluster of its own.
    let mut predicted: HashMap<Result<GoldenId, usize>, Vec<usize>> = HashMap::new();
    let mut actual: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, row) in rows.iter().enumerate() {
        let key = SourceKey::new(source, &row.subject)?;
        let entity = engine.lookup(&key)?.map(|g| g.id).ok_or(i);
        predicted.entry(entity).or_default().push(i);
        actual
            .entry(row.truth.as_deref().unwrap_or(""))
            .or_default()
            .push(i);
    }
    let truth_of: Vec<&str> = rows
        .iter()
        .map(|r| r.truth.as_deref().unwrap_or(""))
        .collect();
    let mut true_positive = 0u64;
    for members in predicted.values() {
        let mut by_truth: HashMap<&str, usize> = HashMap::new();
        for &i in members {
            *by_truth.entry(truth_of[i]).or_default() += 1;
        }
        true_positive += by_truth.values().map(|&n| pairs(n)).sum::<u64>();
    }
    let predicted_pairs: u64 = predicted.values().map(|m| pairs(m.len())).sum();
    let true_pairs: u64 = actual.values().map(|m| pairs(m.len())).sum();
    let as_sets = |clusters: Vec<Vec<usize>>| -> BTreeSet<Vec<usize>> {
        clusters
            .into_iter()
            .map(|mut c| {
                c.sort_unstable();
                c
            })
            .collect()
    };
    let predicted_sets = as_sets(predicted.values().cloned().collect());
    let actual_sets = as_sets(actual.values().cloned().collect());
    let exact = predicted_sets.intersection(&actual_sets).count();

    // Blocking recall: do the true pairs share a key that is not generic, and either a
    // second one or one held by few enough records (as the engine finds candidates; by
    // the counts at the end, which the engine saw at most)?
    let prepared = match trained_rows {
        Some(prepared) => prepared,
        None => prepare_rows(&matcher, &rows, source)?,
    };
    let keys: Vec<Vec<String>> = prepared
        .iter()
        .map(|p| matcher.block_keys(p).into_iter().map(|k| k.0).collect())
        .collect();
    let mut key_count: HashMap<&str, usize> = HashMap::new();
    for k in keys.iter().flatten() {
        *key_count.entry(k.as_str()).or_default() += 1;
    }
    let limit = matcher.generic_limit();
    let weak = matcher.weak_key_limit();
    let mut blocked = 0u64;
    let entity_of: HashMap<usize, Result<GoldenId, usize>> = predicted
        .iter()
        .flat_map(|(e, m)| m.iter().map(|&i| (i, *e)))
        .collect();
    let (mut unblocked_shown, mut apart_shown) = (0, 0);
    for members in actual.values() {
        for (x, &i) in members.iter().enumerate() {
            for &j in &members[x + 1..] {
                let mut common = keys[i]
                    .iter()
                    .filter(|k| key_count[k.as_str()] <= limit && keys[j].contains(k));
                let shares = match (common.next(), common.next()) {
                    (Some(_), Some(_)) => true,
                    (Some(only), None) => key_count[only.as_str()] <= weak,
                    _ => false,
                };
                if shares {
                    blocked += 1;
                }
                if !shares && unblocked_shown < args.show_errors {
                    unblocked_shown += 1;
                    show_pair("never compared", &prepared[i], &prepared[j], &matcher);
                } else if shares && entity_of[&i] != entity_of[&j] && apart_shown < args.show_errors
                {
                    apart_shown += 1;
                    show_pair("left apart", &prepared[i], &prepared[j], &matcher);
                }
            }
        }
    }
    let mut joined_shown = 0;
    for members in predicted.values() {
        for (x, &i) in members.iter().enumerate() {
            for &j in &members[x + 1..] {
                if truth_of[i] != truth_of[j] && joined_shown < args.show_errors {
                    joined_shown += 1;
                    show_pair("joined in error", &prepared[i], &prepared[j], &matcher);
                }
            }
        }
    }

    let report = EvalReport {
        file: args.csv.csv.display().to_string(),
        rows: rows.len(),
        rejected: rejected.len(),
        true_clusters: actual.len(),
        true_pairs,
        predicted_clusters: predicted.len(),
        predicted_pairs,
        pairwise: Prf::new(
            true_positive as f64,
            predicted_pairs as f64,
            true_pairs as f64,
        ),
        cluster: Prf::new(
            exact as f64,
            predicted_sets.len() as f64,
            actual_sets.len() as f64,
        ),
        blocking_recall: if true_pairs > 0 {
            blocked as f64 / true_pairs as f64
        } else {
            1.0
        },
        review_tasks: summary.review_tasks,
        generic_keys: summary.generic_keys.len(),
        model: model.name.clone(),
        train_seconds,
        import_seconds,
        rows_per_second: rows.len() as f64 / import_seconds.max(1e-9),
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_eval(&report);
        println!("{}", serde_json::to_string(&report)?);
    }
    Ok(())
}

fn show_pair(what: &str, a: &Prepared, b: &Prepared, matcher: &FuzzyMatcher) {
    let model = matcher.model();
    let score = model.score(&model.compact(a), &model.compact(b));
    eprintln!(
        "{what}: {} ~ {}  p={:.4}",
        a.key,
        b.key,
        score.probability()
    );
    let fields: BTreeSet<&String> = a.values.keys().chain(b.values.keys()).collect();
    for f in fields {
        let level = score.fields.iter().find(|s| &s.field == f);
        eprintln!(
            "    {f:<14} {:<28} {:<28} {}",
            a.values.get(f).map_or("", String::as_str),
            b.values.get(f).map_or("", String::as_str),
            level.map_or(String::new(), |l| format!("{} {:+.2}", l.level, l.weight))
        );
    }
}

fn print_eval(r: &EvalReport) {
    println!("file               {}", r.file);
    println!("rows               {} ({} rejected)", r.rows, r.rejected);
    println!(
        "true clusters      {} ({} pairs)",
        r.true_clusters, r.true_pairs
    );
    println!(
        "hub clusters       {} ({} pairs)",
        r.predicted_clusters, r.predicted_pairs
    );
    println!();
    println!("                   precision   recall       F1");
    println!(
        "pairwise           {:>9.4} {:>8.4} {:>8.4}",
        r.pairwise.precision, r.pairwise.recall, r.pairwise.f1
    );
    println!(
        "exact clusters     {:>9.4} {:>8.4} {:>8.4}",
        r.cluster.precision, r.cluster.recall, r.cluster.f1
    );
    println!();
    println!("blocking recall    {:.4}", r.blocking_recall);
    println!("review tasks       {}", r.review_tasks);
    println!("generic keys       {}", r.generic_keys);
    println!("model              {}", r.model);
    println!("training           {:.3} s", r.train_seconds);
    println!(
        "import+match       {:.3} s ({:.0} rows/s)",
        r.import_seconds, r.rows_per_second
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An import of `rows` (a CSV with an id column `no`, batches of two) from the spoke
    /// `legacy` into a data directory under `dir`.
    fn legacy_import(dir: &Path, rows: &str, map: &str) -> (HubConfig, ImportArgs) {
        let csv = dir.join("legacy.csv");
        std::fs::write(&csv, rows).unwrap();
        let config = HubConfig {
            data_dir: dir.join("data"),
            ..HubConfig::default()
        };
        let args = ImportArgs {
            csv: CsvArgs {
                csv,
                map: map.into(),
                id: Some("no".into()),
                source: "legacy".into(),
            },
            batch: 2,
        };
        (config, args)
    }

    #[test]
    fn import_goes_on_past_bad_rows_and_counts_what_it_did() {
        let dir = tempfile::tempdir().unwrap();
        let (config, args) = legacy_import(
            dir.path(),
            "no,first,last,dob,mail\n\
             1,Ann,Lee,1990-01-01,ann@x.org\n\
             2,Ann,Lee,01/01/1990,ANN@x.org\n\
             3,Bob\n\
             4,Cy,Stone,31/02/1990,cy@x.org\n",
            "given_name=first,family_name=last,date_of_birth=dob,email=mail",
        );
        let (summary, rejected) = run_import(&config, &args, |_| {}).unwrap();
        assert_eq!(summary.rows, 3);
        assert_eq!(summary.applied, 3);
        assert_eq!(summary.entities, 2, "Ann twice is one person");
        assert_eq!(summary.linked, 1);
        assert_eq!(summary.findings, 1, "31/02 is kept raw and flagged");
        assert_eq!(rejected.len(), 1);
        assert_eq!(rejected[0].line, 4);
        // Importing again changes nothing.
        let (again, _) = run_import(&config, &args, |_| {}).unwrap();
        assert_eq!((again.applied, again.duplicates, again.entities), (0, 3, 2));
    }

    /// A row the engine cannot take (a record id over 256 bytes) stops the import with
    /// its line, after the batches read before it are applied; reading and applying on
    /// two threads neither hangs nor loses them.
    #[test]
    fn import_stops_at_a_row_it_cannot_take_keeping_the_batches_before() {
        let dir = tempfile::tempdir().unwrap();
        let long_id = "x".repeat(300);
        let (config, args) = legacy_import(
            dir.path(),
            &format!(
                "no,first,last\n1,Ann,Lee\n2,Bob,Ray\n3,Cy,Stone\n{long_id},Di,Moss\n5,Ed,Lamb\n"
            ),
            "given_name=first,family_name=last",
        );
        let error = run_import(&config, &args, |_| {}).unwrap_err();
        assert!(format!("{error:#}").contains("line 5"), "{error:#}");
        let store = Store::open(&config.data_dir).unwrap();
        // In key order, as sled keeps them.
        let imported: Vec<String> = store
            .tree(TreeName::Records)
            .iter()
            .map(|item| String::from_utf8(item.unwrap().0.to_vec()).unwrap())
            .collect();
        assert_eq!(
            imported,
            ["legacy/1", "legacy/2"],
            "the first batch, not the row after"
        );
    }

    /// Regression: a row whose mapped columns are all empty joins no entity, and `eval`
    /// stopped with "record … has no golden record" instead of counting it alone.
    #[test]
    fn eval_counts_a_row_without_usable_values_as_its_own_cluster() {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("truth.csv");
        std::fs::write(
            &csv,
            "no,first,last,person\n1,Ann,Lee,a\n2,Ann,Lee,a\n3,,,b\n4,Bob,Stone,c\n",
        )
        .unwrap();
        let config = HubConfig {
            data_dir: dir.path().join("data"),
            ..HubConfig::default()
        };
        let args = EvalArgs {
            csv: CsvArgs {
                csv,
                map: "given_name=first,family_name=last".into(),
                id: Some("no".into()),
                source: "t".into(),
            },
            truth: "person".into(),
            keep_data: None,
            show_errors: 0,
        };
        eval(&config, &args, true).unwrap();
    }
}
