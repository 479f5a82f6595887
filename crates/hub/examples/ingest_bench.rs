//! Sustained ingest through Kafka, end to end, against the raw rate of rdkafka on the same
//! topic in the same run: publishes N synthetic profile events (people with duplicates,
//! e-mails, phones) to an embedded broker, times a bare rdkafka consumer reading them all,
//! then times a hub (consume, decode, match, commit durably, publish the change feed)
//! ingesting them into an empty store.
//!
//! cargo run --release -p cmdm-hub --example ingest_bench -- EVENTS PARTITIONS [BROKERS]
//!
//! For memory under a backlog, run the two halves as two processes, so the publisher's
//! memory does not count: `INGEST_BENCH_PHASE=publish` only publishes;
//! `INGEST_BENCH_PHASE=hub INGEST_BENCH_SECONDS=S` only runs the hub, for at most S
//! seconds, printing its resident memory every 30 s and its peak at the end.
//!
//! `INGEST_BENCH_BATCH=N` sets the hub's `kafka.batch_max` (1000 unless given).
//!
//! `INGEST_BENCH_DATA=DIR` starts the hub on a copy of the data directory DIR (say, one
//! `cmdm import` filled with 1,000,000 records), so the events are matched against what
//! it holds; without it the store starts empty. Progress is read from the offsets stored
//! with each batch, so give the hub a topic it has not consumed before.
//!
//! Without BROKERS it uses the embedded broker, which keeps only a few megabytes per
//! partition (older messages are dropped): give a real broker, with the three topics
//! created, for more than about 10,000 events per partition.

use std::time::{Duration, Instant};

use cmdm_hub::HubConfig;
use cmdm_kafka::EmbeddedBroker;
use cmdm_store::TreeName;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, Message};

const EVENTS: &str = "cmdm.events.v1";

// The allocator of the hub's binary, so the hub's path is measured as it runs.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Events applied so far: the offsets stored with the batches (every event of the bench
/// is valid, so none goes to the dead letter topic). Counting the dedup tree instead
/// walks the whole tree, which on two cores takes the hub's own time.
fn applied_so_far(engine: &cmdm_engine::Engine, partitions: i32) -> usize {
    (0..partitions)
        .map(|p| {
            engine
                .stored_offset(EVENTS, p)
                .expect("stored offset")
                .unwrap_or(0)
        })
        .sum::<i64>() as usize
}

fn peak_rss_mib() -> f64 {
    status_mib("VmHWM:")
}

fn rss_mib() -> f64 {
    status_mib("VmRSS:")
}

fn status_mib(field: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

fn publish(brokers: &str, events: usize) {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "20")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .expect("producer");
    let people = cmdm_matching::synth::generate(events, 0.3, 42);
    for (i, person) in people.iter().take(events).enumerate() {
        let key = format!("web/{i}");
        let id = format!("e{i}");
        let subject = i.to_string();
        let body = serde_json::to_string(&person.attributes).expect("json");
        let headers = cmdm_kafka::binary_event_headers(
            &id,
            "web",
            &subject,
            "profile.upserted",
            "2026-11-23T10:00:00Z",
        );
        let mut record = BaseRecord::to(EVENTS)
            .key(key.as_str())
            .payload(body.as_str())
            .headers(headers);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, back)) => {
                    record = back;
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
    }
    producer.flush(Duration::from_secs(120)).expect("flush");
}

/// Seconds for a bare consumer to read every message of the topic.
fn raw_consume(brokers: &str, events: usize, partitions: i32) -> f64 {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "raw-bench")
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(EVENTS, p, rdkafka::Offset::Beginning)
            .expect("partition");
    }
    consumer.assign(&tpl).expect("assign");
    let mut read = 0;
    let mut bytes = 0usize;
    let mut started = None;
    while read < events {
        if let Some(message) = consumer.poll(Duration::from_millis(100)) {
            let message = message.expect("message");
            started.get_or_insert_with(Instant::now);
            bytes += message.payload().map_or(0, <[u8]>::len);
            read += 1;
        }
    }
    std::hint::black_box(bytes);
    started.map_or(0.0, |s| s.elapsed().as_secs_f64())
}

/// Copies a directory tree.
fn copy_dir(from: &std::path::Path, to: &std::path::Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let events: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let partitions: i32 = args.next().and_then(|a| a.parse().ok()).unwrap_or(4);
    let topics: Vec<(String, i32)> = [EVENTS, "cmdm.golden.v1", "cmdm.events.v1.dlq"]
        .iter()
        .map(|t| ((*t).to_owned(), partitions))
        .collect();
    let embedded;
    let brokers = match args.next() {
        Some(brokers) => brokers,
        None => {
            embedded = EmbeddedBroker::start(&topics).expect("broker");
            embedded.bootstrap_servers().to_owned()
        }
    };

    let phase = std::env::var("INGEST_BENCH_PHASE").unwrap_or_default();
    let limit = std::env::var("INGEST_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .map(Duration::from_secs);
    let mut raw_rate = f64::NAN;
    if phase != "hub" {
        let started = Instant::now();
        let b = brokers.clone();
        tokio::task::spawn_blocking(move || publish(&b, events))
            .await
            .expect("publish");
        println!(
            "published {events} events on {partitions} partitions in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        if phase == "publish" {
            return;
        }
        let b = brokers.clone();
        let raw = tokio::task::spawn_blocking(move || raw_consume(&b, events, partitions))
            .await
            .expect("raw consumer");
        raw_rate = events as f64 / raw;
        println!("rdkafka alone: {raw:.2} s, {raw_rate:.0} events/s");
    }

    let dir = tempfile::tempdir().expect("temp dir");
    if let Ok(from) = std::env::var("INGEST_BENCH_DATA") {
        let started = Instant::now();
        copy_dir(std::path::Path::new(&from), dir.path()).expect("copy of INGEST_BENCH_DATA");
        // What the import left for the change feed is not this run's work: publishing
        // it would compete with the ingest measured.
        let store = cmdm_store::Store::open(dir.path()).expect("store copy");
        let outbox = store.tree(TreeName::Outbox);
        let left = outbox.len();
        outbox.clear().expect("outbox cleared");
        store.flush_blocking().expect("flush");
        drop((outbox, store));
        println!(
            "hub starts on a copy of {from} ({:.1} s to copy; {left} outbox entries left by the import dropped)",
            started.elapsed().as_secs_f64()
        );
    }
    let mut config = HubConfig {
        data_dir: dir.path().to_owned(),
        ..HubConfig::default()
    };
    config.grpc_addr = "127.0.0.1:0".parse().expect("addr");
    config.metrics_addr = "127.0.0.1:0".parse().expect("addr");
    config.kafka.brokers = Some(brokers.clone());
    config.kafka.batch_max = std::env::var("INGEST_BENCH_BATCH")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000);
    // A group of its own: an earlier run's committed offsets would otherwise say the
    // topic was consumed already, and the empty store would start from there.
    config.kafka.group_id = format!("ingest-bench-{}", std::process::id());
    let hub = cmdm_hub::start(config).await.expect("hub");
    let engine = hub.engine().clone();
    let mut first = None;
    let started = Instant::now();
    let mut next_report = Duration::from_secs(30);
    let mut applied;
    loop {
        applied = applied_so_far(&engine, partitions);
        if applied > 0 {
            first.get_or_insert_with(Instant::now);
        }
        if applied >= events || limit.is_some_and(|l| started.elapsed() >= l) {
            break;
        }
        if started.elapsed() >= next_report {
            println!(
                "{:>5.0} s: {applied} applied, {} behind, RSS {:.0} MiB",
                started.elapsed().as_secs_f64(),
                events - applied,
                rss_mib()
            );
            next_report += Duration::from_secs(30);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let hub_seconds = first.map_or(0.0, |f| f.elapsed().as_secs_f64());
    let hub_rate = applied as f64 / hub_seconds;
    let ratio = if raw_rate.is_finite() {
        format!(", {:.3} of rdkafka alone", hub_rate / raw_rate)
    } else {
        String::new()
    };
    println!(
        "hub: {applied} events in {hub_seconds:.2} s, {hub_rate:.0} events/s{ratio}; peak RSS {:.0} MiB",
        peak_rss_mib()
    );
    hub.shutdown().await.expect("graceful stop");
}
