//! The real `cmdm-hub` process killed with SIGKILL at random points of a large ingest,
//! twenty times, restarted each time: at the end every valid event is applied exactly
//! once, the store equals byte for byte the store of an uninterrupted run, and the change
//! feed, read back as a compacted topic, holds exactly the final golden records.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cmdm_domain::{GoldenRecord, LogEntry, OutboundChange};
use cmdm_kafka::EmbeddedBroker;
use cmdm_matching::synth;
use cmdm_store::{Store, TreeName};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

const EVENTS: &str = "cmdm.events.v1";
const KILLS: usize = 20;

/// A small deterministic generator for the kill times.
struct SplitMix(u64);

impl SplitMix {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) % n
    }
}

/// One spoke message: key, CloudEvents attributes and JSON body.
struct Event {
    key: String,
    id: String,
    kind: &'static str,
    body: String,
    valid: bool,
}

/// Synthetic people with duplicates from three spokes, an update now and then, and a
/// consent without a purpose every 37th message (dead-lettered).
fn events() -> Vec<Event> {
    let sources = ["crm", "web", "pos"];
    let mut out = Vec::new();
    for (i, record) in synth::generate(4000, 0.4, 7).into_iter().enumerate() {
        let key = format!("{}/r{i}", sources[i % 3]);
        let body = serde_json::to_string(&record.attributes).expect("json");
        out.push(Event {
            key: key.clone(),
            id: format!("e{i}"),
            kind: "profile.upserted",
            body,
            valid: true,
        });
        if i % 11 == 0 {
            out.push(Event {
                key: key.clone(),
                id: format!("u{i}"),
                kind: "profile.upserted",
                body: r#"{"city": "Leeds"}"#.to_owned(),
                valid: true,
            });
        }
        if i % 37 == 0 {
            out.push(Event {
                key,
                id: format!("bad{i}"),
                kind: "consent.changed",
                body: r#"{"channel": "email", "status": "granted"}"#.to_owned(),
                valid: false,
            });
        }
    }
    out
}

fn publish(brokers: &str, events: &[Event]) {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("producer");
    for (n, e) in events.iter().enumerate() {
        let (source, subject) = e.key.split_once('/').expect("source/subject");
        let time = format!("2026-11-{:02}T10:00:00Z", 1 + n % 20);
        let headers = cmdm_kafka::binary_event_headers(&e.id, source, subject, e.kind, &time);
        let mut record = BaseRecord::to(EVENTS)
            .key(e.key.as_str())
            .payload(e.body.as_str())
            .headers(headers);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, back)) => {
                    record = back;
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
    }
    producer.flush(Duration::from_secs(30)).expect("flush");
}

/// The end of a hub's log, for failure messages.
fn log_tail(dir: &Path) -> String {
    let log = std::fs::read_to_string(dir.with_extension("log")).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// A hub process on `dir`, its log in `dir.log`.
fn spawn_hub(dir: &Path, brokers: &str, group: &str, golden: &str, dlq: &str) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.with_extension("log"))
        .expect("log file");
    Command::new(env!("CARGO_BIN_EXE_cmdm-hub"))
        .args(["--data-dir", &dir.display().to_string()])
        .args(["--brokers", brokers, "--group-id", group])
        .args(["--golden-topic", golden, "--dlq-topic", dlq])
        .args([
            "--grpc-addr",
            "127.0.0.1:0",
            "--metrics-addr",
            "127.0.0.1:0",
        ])
        .args(["--batch-max", "40", "--batch-linger-ms", "5"])
        // A killed member leaves the group only when its session times out.
        .args(["--session-timeout-ms", "6000"])
        .arg("serve")
        .env("RUST_LOG", "info,librdkafka=warn,rdkafka=warn")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("cmdm-hub starts")
}

/// Reads the offset a group committed on the single events partition. One reader per
/// group for the whole test: it never subscribes, so it never joins the group.
struct Committed {
    consumer: BaseConsumer,
}

impl Committed {
    fn new(brokers: &str, group: &str) -> Self {
        let consumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .create()
            .expect("offset reader");
        Committed { consumer }
    }

    fn get(&self) -> i64 {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(EVENTS, 0);
        let committed = self
            .consumer
            .committed_offsets(tpl, Duration::from_secs(10))
            .expect("committed offsets");
        match committed.elements()[0].offset() {
            Offset::Offset(n) => n,
            _ => 0,
        }
    }
}

fn end_offset(brokers: &str) -> i64 {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("watermark reader");
    consumer
        .fetch_watermarks(EVENTS, 0, Duration::from_secs(10))
        .expect("watermarks")
        .1
}

/// Runs a hub until it has consumed the whole topic, then stops it with SIGTERM.
fn run_to_end(dir: &Path, brokers: &str, group: &str, golden: &str, dlq: &str) {
    let mut hub = spawn_hub(dir, brokers, group, golden, dlq);
    let end = end_offset(brokers);
    let started = Instant::now();
    let committed = Committed::new(brokers, group);
    while committed.get() < end {
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "the hub did not catch up; see {}",
            dir.with_extension("log").display()
        );
        if let Some(status) = hub.try_wait().expect("hub status") {
            panic!(
                "the hub exited with {status}; see {}",
                dir.with_extension("log").display()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let status = Command::new("kill")
        .args(["-TERM", &hub.id().to_string()])
        .status()
        .expect("kill -TERM");
    assert!(status.success());
    let status = hub.wait().expect("hub exits");
    assert!(status.success(), "graceful stop: {status}");
}

/// A spoke following the change feed from its start as messages arrive, keeping the
/// latest message per key, as a compacted topic would. (The test broker drops the oldest
/// messages of a partition past a few megabytes, so the feed is followed live.)
struct Follower {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<BTreeMap<String, OutboundChange>>,
}

impl Follower {
    fn start(brokers: &str, topic: &str) -> Self {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("group.id", format!("follower-{topic}"))
            .set("enable.auto.commit", "false")
            .create()
            .expect("follower");
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, 0, Offset::Beginning)
            .expect("partition");
        consumer.assign(&tpl).expect("assign");
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopping = stop.clone();
        let topic = topic.to_owned();
        let thread = std::thread::spawn(move || {
            let mut latest = BTreeMap::new();
            let mut next = 0;
            loop {
                if stopping.load(std::sync::atomic::Ordering::SeqCst) {
                    // Drain to the end of the partition as it is now.
                    let end = consumer
                        .fetch_watermarks(&topic, 0, Duration::from_secs(10))
                        .expect("watermarks")
                        .1;
                    if next >= end {
                        return latest;
                    }
                }
                if let Some(message) = consumer.poll(Duration::from_millis(100)) {
                    let message = message.expect("feed message");
                    assert_eq!(message.offset(), next, "the follower skipped messages");
                    next = message.offset() + 1;
                    let key = String::from_utf8_lossy(message.key().expect("keyed")).into_owned();
                    let change: OutboundChange =
                        serde_json::from_slice(message.payload().expect("payload"))
                            .expect("change");
                    latest.insert(key, change);
                }
            }
        });
        Follower { stop, thread }
    }

    /// The latest change per golden id once the feed has been read to its end.
    fn finish(self) -> BTreeMap<String, OutboundChange> {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.thread.join().expect("follower thread")
    }
}

/// Every projection tree, key and value.
fn projections(store: &Store) -> Vec<(&'static str, Vec<u8>, Vec<u8>)> {
    TreeName::PROJECTIONS
        .iter()
        .flat_map(|t| {
            store.tree(*t).iter().map(move |item| {
                let (k, v) = item.expect("read");
                (t.as_str(), k.to_vec(), v.to_vec())
            })
        })
        .collect()
}

fn golden_records(store: &Store) -> BTreeMap<String, GoldenRecord> {
    store
        .tree(TreeName::Entities)
        .iter()
        .map(|item| {
            let (_, v) = item.expect("read");
            let golden: GoldenRecord =
                cmdm_store::decode_bin(TreeName::Entities, &v).expect("golden record");
            (golden.id.to_string(), golden)
        })
        .collect()
}

#[test]
fn sigkill_twenty_times_during_ingest_loses_and_duplicates_nothing() {
    let topics: Vec<(String, i32)> = [
        EVENTS,
        "golden.crash",
        "dlq.crash",
        "golden.clean",
        "dlq.clean",
    ]
    .iter()
    .map(|t| ((*t).to_owned(), 1))
    .collect();
    let broker = EmbeddedBroker::start(&topics).expect("broker");
    let brokers = broker.bootstrap_servers().to_owned();
    let mut guard = Some(tempfile::tempdir().expect("temp dir"));
    let work: PathBuf = guard.as_ref().expect("just made").path().to_owned();
    // CMDM_KEEP_TEST_DIR=1 keeps the stores and hub logs for a post-mortem.
    if std::env::var_os("CMDM_KEEP_TEST_DIR").is_some() {
        eprintln!(
            "keeping {}",
            guard.take().expect("just made").keep().display()
        );
    }
    let crashed: PathBuf = work.join("crashed");
    let clean: PathBuf = work.join("clean");

    let followers = [
        ("golden.crash", Follower::start(&brokers, "golden.crash")),
        ("golden.clean", Follower::start(&brokers, "golden.clean")),
    ];
    let events = events();
    let valid: BTreeSet<&str> = events
        .iter()
        .filter(|e| e.valid)
        .map(|e| e.id.as_str())
        .collect();
    let mut rng = SplitMix(2026);
    let mut mid_ingest = 0;
    // The whole ingest is waiting when the hub first starts; each run applies part of it.
    publish(&brokers, &events);
    let end = end_offset(&brokers);
    let mut last = 0;
    for round in 0..KILLS {
        // A new consumer group each time: the hub resumes from the offsets in its store
        // whatever the group says, and a new group need not wait for the killed member's
        // session to time out.
        let group = format!("crash-{round}");
        let committed = Committed::new(&brokers, &group);
        let mut hub = spawn_hub(&crashed, &brokers, &group, "golden.crash", "dlq.crash");
        // Kill only once it is applying (the group gave it the partition and it committed
        // a first batch), and then at a random offset in this round's share of the ingest:
        // a point in the work, not a time, so a faster hub is still killed mid-ingest.
        let share = end / (KILLS as i64 + 1);
        let target = share * (round as i64 + 1) + rng.below(share as u64 / 2) as i64;
        let started = Instant::now();
        while committed.get() <= last.max(target) {
            if let Some(status) = hub.try_wait().expect("hub status") {
                panic!(
                    "the hub exited with {status}; see {}",
                    crashed.with_extension("log").display()
                );
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "the hub did not reach offset {target} within a minute after {mid_ingest} kills:\n{}",
                log_tail(&crashed)
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        last = committed.get();
        if last < end {
            mid_ingest += 1;
        }
        hub.kill().expect("SIGKILL");
        hub.wait().expect("killed hub reaped");
    }
    eprintln!(
        "{} messages, {mid_ingest} of {KILLS} kills during the ingest, {} consumed when the last one landed",
        events.len(),
        last
    );
    assert_eq!(mid_ingest, KILLS, "every kill landed during the ingest");
    let started = Instant::now();
    run_to_end(
        &crashed,
        &brokers,
        "crash-final",
        "golden.crash",
        "dlq.crash",
    );
    eprintln!("crashed hub finished in {:?}", started.elapsed());
    let started = Instant::now();
    run_to_end(&clean, &brokers, "clean", "golden.clean", "dlq.clean");
    eprintln!("clean run in {:?}", started.elapsed());

    let crashed_store = Store::open(&crashed).expect("crashed store");
    let clean_store = Store::open(&clean).expect("clean store");

    // Every valid event applied exactly once: one log entry each, none twice.
    let mut applied = BTreeMap::new();
    for entry in crashed_store.log() {
        let (_, bytes) = entry.expect("log entry");
        if let LogEntry::Event(event) = LogEntry::from_stored(&bytes).expect("log entry") {
            *applied.entry(event.id).or_insert(0) += 1;
        }
    }
    assert!(
        applied.values().all(|n| *n == 1),
        "an event was applied twice"
    );
    let applied: BTreeSet<&str> = applied.keys().map(String::as_str).collect();
    assert_eq!(applied, valid, "every valid event, and only those, applied");

    // Golden records identical to the uninterrupted run's, byte for byte.
    let a = projections(&crashed_store);
    let b = projections(&clean_store);
    assert!(!a.is_empty());
    assert!(
        a == b,
        "the crashed run's projections differ from the clean run's"
    );

    // A spoke's copy built from the change feed holds exactly the final golden records:
    // the latest message per id, those carrying a record (upserted, split, kept apart)
    // holding it, merged and deleted ones removing it.
    for ((topic, follower), store) in followers.into_iter().zip([&crashed_store, &clean_store]) {
        let copy: BTreeMap<String, GoldenRecord> = follower
            .finish()
            .into_iter()
            .filter_map(|(key, change)| change.record.map(|record| (key, record)))
            .collect();
        let held = golden_records(store);
        let only_feed: Vec<&String> = copy.keys().filter(|k| !held.contains_key(*k)).collect();
        let only_store: Vec<&String> = held.keys().filter(|k| !copy.contains_key(*k)).collect();
        let differing = copy
            .iter()
            .filter(|(k, f)| held.get(*k).is_some_and(|h| h != *f))
            .count();
        assert!(
            only_feed.is_empty() && only_store.is_empty() && differing == 0,
            "{topic}: only in the spoke's copy {only_feed:?}, only in the hub {only_store:?}, \
             {differing} differ"
        );
    }
    assert!(
        crashed_store.tree(TreeName::Outbox).is_empty(),
        "outbox drained"
    );
}
