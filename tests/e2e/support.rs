//! Helpers for the end-to-end tests: a broker, hubs on temporary directories, spokes
//! that publish CloudEvents, and readers of the outbound topics.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use cmdm_api::{CustomerHubClient, pb};
use cmdm_hub::{HubConfig, RunningHub};
use cmdm_kafka::EmbeddedBroker;
use cmdm_store::TreeName;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::Value;

pub const EVENTS: &str = "cmdm.events.v1";
pub const GOLDEN: &str = "cmdm.golden.v1";
pub const DLQ: &str = "cmdm.events.v1.dlq";
pub const PARTITIONS: i32 = 3;

/// A broker with the hub's topics.
pub fn broker() -> EmbeddedBroker {
    let topics: Vec<(String, i32)> = [EVENTS, GOLDEN, DLQ]
        .iter()
        .map(|t| ((*t).to_owned(), PARTITIONS))
        .collect();
    EmbeddedBroker::start(&topics).expect("embedded broker")
}

/// A hub configuration for tests: given broker, any free port, short linger.
pub fn config(data_dir: &Path, brokers: &str, group: &str) -> HubConfig {
    let mut config = HubConfig {
        data_dir: data_dir.to_owned(),
        ..HubConfig::default()
    };
    config.grpc_addr = "127.0.0.1:0".parse().unwrap();
    config.metrics_addr = "127.0.0.1:0".parse().unwrap();
    config.kafka.brokers = Some(brokers.to_owned());
    config.kafka.group_id = group.to_owned();
    config.kafka.batch_linger_ms = 5;
    config.kafka.batch_max = 50;
    config.kafka.max_event_bytes = 4096;
    config.survivorship.source_trust = vec!["crm".into(), "web".into(), "pos".into()];
    config
}

pub async fn start(config: HubConfig) -> RunningHub {
    cmdm_hub::start(config).await.expect("hub starts")
}

/// A spoke event in CloudEvents binary mode.
#[derive(Debug, Clone)]
pub struct Spoke {
    pub id: String,
    pub source: String,
    pub subject: String,
    pub kind: String,
    pub time: String,
    pub data: Option<Value>,
}

/// A `profile.upserted` event.
pub fn profile(id: &str, key: &str, time: &str, data: Value) -> Spoke {
    let (source, subject) = key.split_once('/').unwrap();
    Spoke {
        id: id.into(),
        source: source.into(),
        subject: subject.into(),
        kind: "profile.upserted".into(),
        time: time.into(),
        data: Some(data),
    }
}

pub fn producer(brokers: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("message.max.bytes", "10000000")
        .create()
        .expect("producer")
}

/// Publishes events in order, keyed `source/subject`.
pub async fn publish(brokers: &str, events: &[Spoke]) {
    let producer = producer(brokers);
    for e in events {
        let headers =
            cmdm_kafka::binary_event_headers(&e.id, &e.source, &e.subject, &e.kind, &e.time);
        let key = format!("{}/{}", e.source, e.subject);
        let body = e.data.as_ref().map(|d| d.to_string()).unwrap_or_default();
        publish_raw(&producer, &key, Some(body.as_bytes()), headers).await;
    }
}

/// Publishes one raw message.
pub async fn publish_raw(
    producer: &FutureProducer,
    key: &str,
    payload: Option<&[u8]>,
    headers: OwnedHeaders,
) {
    let mut record: FutureRecord<'_, str, [u8]> =
        FutureRecord::to(EVENTS).key(key).headers(headers);
    if let Some(payload) = payload {
        record = record.payload(payload);
    }
    producer
        .send(record, Duration::from_secs(10))
        .await
        .expect("publish");
}

/// Waits until `check` holds, panicking with `what` after 60 s.
pub async fn wait_for<F: FnMut() -> bool>(what: &str, mut check: F) {
    let start = Instant::now();
    while !check() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One HTTP GET over a fresh connection: the status line and the body.
pub async fn scrape(addr: std::net::SocketAddr, path: &str) -> (String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head.lines().next().unwrap_or_default().to_owned();
    (status, body.to_owned())
}

/// Events applied so far ([`cmdm_engine::Engine::events_applied`]), counted under the
/// store's read gate: a batch being written counts whole or not at all, so once its
/// events count, every other write of it (golden records, outbox) has landed too.
pub fn applied(hub: &RunningHub) -> usize {
    hub.engine().events_applied().expect("events applied") as usize
}

/// A plain channel to the hub, for the standard services' generated clients.
pub async fn channel(hub: &RunningHub) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{}", hub.grpc_addr()))
        .expect("endpoint")
        .connect()
        .await
        .expect("grpc channel")
}

pub async fn client(hub: &RunningHub) -> CustomerHubClient<tonic::transport::Channel> {
    CustomerHubClient::connect(format!("http://{}", hub.grpc_addr()))
        .await
        .expect("grpc client")
}

pub async fn lookup(hub: &RunningHub, key: &str) -> Result<pb::GoldenRecord, tonic::Status> {
    let (source, subject) = key.split_once('/').unwrap();
    let request = pb::LookupBySourceKeyRequest {
        source: source.into(),
        subject: subject.into(),
    };
    Ok(client(hub)
        .await
        .lookup_by_source_key(request)
        .await?
        .into_inner()
        .record
        .unwrap())
}

/// A message read back from a topic.
#[derive(Debug, Clone)]
pub struct Read {
    pub key: Option<String>,
    pub payload: Option<Vec<u8>>,
    pub headers: BTreeMap<String, String>,
}

/// Reads every message of a topic, from the start, until `count` or 20 s have passed.
pub fn read_topic(brokers: &str, topic: &str, count: usize) -> Vec<Read> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "e2e-reader")
        .set("enable.auto.commit", "false")
        .create()
        .expect("reader");
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let start = Instant::now();
    while out.len() < count && start.elapsed() < Duration::from_secs(20) {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            out.push(Read {
                key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
                payload: m.payload().map(<[u8]>::to_vec),
                headers: m
                    .headers()
                    .map(|h| {
                        h.iter()
                            .map(|h| {
                                let v = h.value.map(|v| String::from_utf8_lossy(v).into_owned());
                                (h.key.to_owned(), v.unwrap_or_default())
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
            });
        }
    }
    out
}

/// The hub's state independent of ids and arrival order: for every source record, the set
/// of records in its entity and the entity's golden attribute values.
pub fn canonical(hub: &RunningHub) -> BTreeMap<String, (Vec<String>, BTreeMap<String, String>)> {
    let engine = hub.engine();
    let mut out = BTreeMap::new();
    for item in engine.store().tree(TreeName::Records).iter() {
        let (key, value) = item.unwrap();
        if cmdm_engine::held::Parts::of(&value)
            .unwrap()
            .entity
            .is_none()
        {
            continue;
        }
        let key: cmdm_domain::SourceKey = String::from_utf8(key.to_vec()).unwrap().parse().unwrap();
        let golden = engine
            .lookup(&key)
            .unwrap()
            .expect("member has a golden record");
        out.insert(
            key.to_string(),
            (
                golden.members.iter().map(ToString::to_string).collect(),
                golden
                    .attributes
                    .iter()
                    .map(|(k, v)| (k.clone(), v.value.clone()))
                    .collect(),
            ),
        );
    }
    out
}

/// Every key and value of every tree except the outbox, for byte-level comparison.
pub fn dump(hub: &RunningHub) -> Vec<(&'static str, Vec<u8>, Vec<u8>)> {
    TreeName::ALL
        .iter()
        .filter(|t| **t != TreeName::Outbox)
        .flat_map(|t| {
            hub.engine().store().tree(*t).iter().map(move |i| {
                let (k, v) = i.unwrap();
                (t.as_str(), k.to_vec(), v.to_vec())
            })
        })
        .collect()
}
