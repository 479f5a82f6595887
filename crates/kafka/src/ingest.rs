//! The batched consumer of `cmdm.events.v1`. Per batch: decode, send refusals to the dead
//! letter topic, apply the valid events and the offsets together (all or nothing), make
//! them durable, and only then commit the offsets to Kafka. Each batch is written and
//! flushed on its own thread while the next one is consumed and matched.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use cmdm_domain::InboundEvent;
use cmdm_engine::{Engine, SourceOffset};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::KafkaResult;
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::decode::{RawMessage, Rejection, RejectionClass, decode};
use crate::{Metrics, Result, dlq_headers};

/// Settings of the consumer.
#[derive(Debug, Clone)]
pub struct IngestConfig {
    pub brokers: String,
    pub group_id: String,
    pub session_timeout: Duration,
    pub events_topic: String,
    pub dlq_topic: String,
    /// Most messages applied in one batch write.
    pub batch_max: usize,
    /// How long a batch waits to fill once it has its first message.
    pub linger: Duration,
    /// Largest accepted message (payload and headers), in bytes.
    pub max_event_bytes: usize,
}

/// Seeks each assigned partition to the offset stored with the last applied batch, so the
/// store, not the group coordinator, says where consumption resumes.
struct StoredOffsets {
    engine: Arc<Engine>,
    metrics: Metrics,
    /// Partitions revoked since the batch loop last looked.
    revoked: Arc<std::sync::Mutex<Vec<(String, i32)>>>,
}

impl ClientContext for StoredOffsets {
    fn stats(&self, statistics: rdkafka::Statistics) {
        self.metrics.observe_statistics(&statistics);
    }
}

impl ConsumerContext for StoredOffsets {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let result = match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let assigned: Vec<(String, i32)> = tpl
                    .elements()
                    .iter()
                    .map(|e| (e.topic().to_owned(), e.partition()))
                    .collect();
                for (topic, partition) in assigned {
                    match self.engine.stored_offset(&topic, partition) {
                        Ok(Some(next)) => {
                            if let Err(e) =
                                tpl.set_partition_offset(&topic, partition, Offset::Offset(next))
                            {
                                warn!(%topic, partition, error = %e, "cannot seek to stored offset");
                            }
                        }
                        Ok(None) => {}
                        Err(e) => {
                            error!(%topic, partition, error = %e, "cannot read stored offset")
                        }
                    }
                }
                info!(partitions = tpl.count(), "partitions assigned");
                consumer.assign(tpl)
            }
            _ => {
                info!(partitions = tpl.count(), "partitions revoked");
                self.revoked
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .extend(
                        tpl.elements()
                            .iter()
                            .map(|e| (e.topic().to_owned(), e.partition())),
                    );
                consumer.unassign()
            }
        };
        if let Err(e) = result {
            error!(error = %e, "rebalance failed");
        }
    }
}

/// Consumes until `shutdown` is cancelled; then applies what it holds and returns.
/// `applied` is notified after each durable batch (the outbox publisher waits on it).
pub async fn run_ingest(
    engine: Arc<Engine>,
    config: IngestConfig,
    metrics: Metrics,
    applied: Arc<Notify>,
    shutdown: CancellationToken,
) -> Result<()> {
    let revoked = Arc::new(std::sync::Mutex::new(Vec::new()));
    // Rebalances happen inside `recv`: what the batch held before one may belong to a
    // partition that is no longer ours, and is released before anything newer is added.
    let release = |batch: &mut Vec<RawMessage>| {
        let gone = std::mem::take(&mut *revoked.lock().unwrap_or_else(|p| p.into_inner()));
        let released = release_revoked(batch, &gone);
        if released > 0 {
            info!(
                released,
                "in-flight messages of revoked partitions released unapplied"
            );
        }
    };
    let consumer: StreamConsumer<StoredOffsets> = ClientConfig::new()
        .set("bootstrap.servers", &config.brokers)
        .set(
            "session.timeout.ms",
            config.session_timeout.as_millis().to_string(),
        )
        // Heartbeats well inside the session, however short it is configured.
        .set(
            "heartbeat.interval.ms",
            (config.session_timeout.as_millis() / 3)
                .clamp(100, 3000)
                .to_string(),
        )
        .set("group.id", &config.group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("partition.assignment.strategy", "range")
        // Consumer lag for the metrics comes from these statistics.
        .set("statistics.interval.ms", "5000")
        .set(
            "message.max.bytes",
            (config.max_event_bytes.max(1 << 20) + 65_536).to_string(),
        )
        .create_with_context(StoredOffsets {
            engine: engine.clone(),
            metrics: metrics.clone(),
            revoked: revoked.clone(),
        })?;
    consumer.subscribe(&[&config.events_topic])?;
    let dlq: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &config.brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .create()?;
    info!(topic = %config.events_topic, group = %config.group_id, "ingest started");

    // Three batches overlap: one consumed and decoded here, the one before it matched on
    // a blocking thread, and the one before that written and flushed on the engine's
    // writer thread. A batch's offsets go to Kafka, and the publisher is woken, once it
    // is durable: when the batch after it has been matched.
    let mut matching: Option<Matching> = None;
    let mut behind: Option<Consumed> = None;
    loop {
        let mut batch = Vec::new();
        // With a batch being matched or written and no message waiting, that batch is
        // finished (and published) now rather than left waiting for traffic.
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            received = consumer.recv() => match received {
                Ok(message) => {
                    release(&mut batch);
                    batch.push(raw(&message));
                }
                Err(e) => {
                    warn!(error = %e, "consume error; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            },
            () = ready_if(matching.is_some() || behind.is_some()) => {
                if let Some(matched) = matching.take() {
                    matched
                        .finish(&dlq, &config, &metrics, &consumer, &mut behind, &applied)
                        .await?;
                } else if let Some(done) = behind.take() {
                    finish(&engine, &consumer, &done).await?;
                    applied.notify_one();
                }
                continue;
            }
        }
        let deadline = tokio::time::Instant::now() + config.linger;
        while batch.len() < config.batch_max {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep_until(deadline) => break,
                received = consumer.recv() => match received {
                    Ok(message) => {
                        release(&mut batch);
                        batch.push(raw(&message));
                    }
                    Err(e) => warn!(error = %e, "consume error"),
                },
            }
        }
        release(&mut batch);
        if batch.is_empty() {
            continue;
        }
        let decoded = decode_batch(&engine, &dlq, &config, &metrics, batch).await?;
        // Matching this batch starts once the one before it is matched (the engine
        // applies one batch at a time, in order).
        if let Some(matched) = matching.take() {
            matched
                .finish(&dlq, &config, &metrics, &consumer, &mut behind, &applied)
                .await?;
        }
        matching = Some(decoded.match_behind(&engine));
    }
    if let Some(matched) = matching.take() {
        matched
            .finish(&dlq, &config, &metrics, &consumer, &mut behind, &applied)
            .await?;
    }
    if let Some(done) = behind.take() {
        finish(&engine, &consumer, &done).await?;
        applied.notify_one();
    }
    info!("ingest stopped");
    Ok(())
}

/// Drops the messages of revoked partitions from a batch not yet applied, and says how
/// many. Neither applied nor committed, they are consumed again by the partition's next
/// owner from the last committed offset (or by this hub, from its stored offset), so
/// nothing of a partition is applied after its release and nothing is lost.
fn release_revoked(batch: &mut Vec<RawMessage>, revoked: &[(String, i32)]) -> usize {
    if revoked.is_empty() {
        return 0;
    }
    let before = batch.len();
    batch.retain(|m| {
        !revoked
            .iter()
            .any(|(topic, partition)| *topic == m.topic && *partition == m.partition)
    });
    before - batch.len()
}

fn raw(message: &impl Message) -> RawMessage {
    RawMessage {
        topic: message.topic().to_owned(),
        partition: message.partition(),
        offset: message.offset(),
        key: message.key().map(<[u8]>::to_vec),
        payload: message.payload().map(<[u8]>::to_vec),
        headers: message
            .headers()
            .map(|headers| {
                headers
                    .iter()
                    .map(|h| {
                        (
                            h.key.to_owned(),
                            h.value.map(<[u8]>::to_vec).unwrap_or_default(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default(),
    }
}

/// Ready at once if `ready`, never otherwise.
async fn ready_if(ready: bool) {
    if !ready {
        std::future::pending::<()>().await;
    }
}

/// The next offset of each partition a batch consumed.
struct Consumed {
    next: BTreeMap<(String, i32), i64>,
}

/// Waits until the last batch applied is written and durable, then commits its offsets.
async fn finish(
    engine: &Arc<Engine>,
    consumer: &StreamConsumer<StoredOffsets>,
    done: &Consumed,
) -> Result<()> {
    let engine = engine.clone();
    tokio::task::spawn_blocking(move || engine.written()).await??;
    commit_offsets(consumer, done)
}

/// Commits a durable batch's offsets to Kafka.
fn commit_offsets(consumer: &StreamConsumer<StoredOffsets>, done: &Consumed) -> Result<()> {
    let mut tpl = TopicPartitionList::new();
    for ((topic, partition), next) in &done.next {
        tpl.add_partition_offset(topic, *partition, Offset::Offset(*next))?;
    }
    // The store already holds these offsets; a failed commit only means redelivery,
    // which deduplication absorbs.
    if let Err(e) = consumer.commit(&tpl, CommitMode::Async) {
        warn!(error = %e, "offset commit to kafka failed; the stored offsets stand");
    }
    Ok(())
}

/// A consumed batch, decoded: the events to apply, the message each came from, and the
/// offsets to store with them.
struct Decoded {
    started: std::time::Instant,
    messages: Vec<RawMessage>,
    events: Vec<InboundEvent>,
    /// For each event, the position of its message in `messages`.
    origins: Vec<usize>,
    next: BTreeMap<(String, i32), i64>,
    refused: usize,
}

/// Decodes a batch and dead-letters what is refused.
async fn decode_batch(
    engine: &Arc<Engine>,
    dlq: &FutureProducer,
    config: &IngestConfig,
    metrics: &Metrics,
    messages: Vec<RawMessage>,
) -> Result<Decoded> {
    let started = std::time::Instant::now();
    let mut events = Vec::with_capacity(messages.len());
    let mut origins = Vec::with_capacity(messages.len());
    let mut next: BTreeMap<(String, i32), i64> = BTreeMap::new();
    let mut refused = 0usize;
    for (position, message) in messages.iter().enumerate() {
        let slot = next
            .entry((message.topic.clone(), message.partition))
            .or_insert(0);
        *slot = (*slot).max(message.offset + 1);
        match decode(message, config.max_event_bytes).and_then(|e| admissible(engine, e)) {
            Ok(event) => {
                events.push(event);
                origins.push(position);
            }
            Err(rejection) => {
                refuse(dlq, config, metrics, message, &rejection).await?;
                refused += 1;
            }
        }
    }
    Ok(Decoded {
        started,
        messages,
        events,
        origins,
        next,
        refused,
    })
}

impl Decoded {
    /// Starts applying the events with the offsets ([`Engine::apply_behind`]) on a
    /// blocking thread: the batch is matched there while the next one is consumed, and
    /// then written and flushed on the engine's writer thread.
    fn match_behind(mut self, engine: &Arc<Engine>) -> Matching {
        let offsets: Vec<SourceOffset> = self
            .next
            .iter()
            .map(|((topic, partition), next)| SourceOffset {
                topic: topic.clone(),
                partition: *partition,
                next: *next,
            })
            .collect();
        let engine = engine.clone();
        let events = std::mem::take(&mut self.events);
        let task =
            tokio::task::spawn_blocking(move || engine.apply_behind(&events, &offsets, true));
        Matching { task, batch: self }
    }
}

/// A batch being matched on a blocking thread (its events moved there).
struct Matching {
    task: tokio::task::JoinHandle<cmdm_engine::Result<cmdm_engine::BatchReport>>,
    batch: Decoded,
}

impl Matching {
    /// Waits until the batch is matched, which is when the one before it (`behind`) is
    /// written and flushed: commits that one's offsets and wakes the publisher. Then
    /// dead-letters what the engine itself refused, counts the outcomes, and leaves this
    /// batch `behind`.
    async fn finish(
        self,
        dlq: &FutureProducer,
        config: &IngestConfig,
        metrics: &Metrics,
        consumer: &StreamConsumer<StoredOffsets>,
        behind: &mut Option<Consumed>,
        applied: &Notify,
    ) -> Result<()> {
        let report = self.task.await??;
        let batch = self.batch;
        if let Some(done) = behind.replace(Consumed { next: batch.next }) {
            commit_offsets(consumer, &done)?;
            applied.notify_one();
        }
        let mut refused = batch.refused;
        // Refused by the engine itself: a record of an erased person. Nothing of them was
        // stored.
        for (position, reason) in &report.refused {
            let rejection = crate::decode::reject(RejectionClass::Erased, reason.clone());
            let message = &batch.messages[batch.origins[*position]];
            refuse(dlq, config, metrics, message, &rejection).await?;
            refused += 1;
        }
        metrics
            .apply_seconds
            .observe(batch.started.elapsed().as_secs_f64());
        metrics.batch_size.observe(batch.messages.len() as f64);
        for (outcome, n) in [
            ("applied", report.applied),
            ("duplicate", report.duplicates),
            ("dead_lettered", refused),
        ] {
            metrics
                .messages
                .with_label_values(&[outcome])
                .inc_by(n as u64);
        }
        for (kind, n) in [
            ("created", report.created),
            ("linked", report.linked),
            ("merged", report.merged),
            ("review", report.review_tasks),
        ] {
            metrics
                .decisions
                .with_label_values(&[kind])
                .inc_by(n as u64);
        }
        debug!(
            messages = batch.messages.len(),
            applied = report.applied,
            duplicates = report.duplicates,
            refused,
            decisions = report.decisions,
            "batch applied"
        );
        Ok(())
    }
}

/// Refuses, before the batch, a declaration naming something that is no contact point
/// (class `invalid`). Events about an erased person's record are refused by the engine
/// itself, which sees the batches still being matched or written before this one.
fn admissible(
    engine: &Engine,
    event: InboundEvent,
) -> std::result::Result<InboundEvent, Rejection> {
    if let Some(raw) = event.payload.contact_point()
        && engine.matcher().contact_point(raw).is_none()
    {
        return Err(crate::decode::reject(
            RejectionClass::Invalid,
            format!("data.contact_point: `{raw}` is neither an e-mail address nor a phone number"),
        ));
    }
    Ok(event)
}

/// Logs a refused message, dead-letters it and counts it by class.
async fn refuse(
    dlq: &FutureProducer,
    config: &IngestConfig,
    metrics: &Metrics,
    message: &RawMessage,
    rejection: &Rejection,
) -> KafkaResult<()> {
    warn!(
        topic = %message.topic,
        partition = message.partition,
        offset = message.offset,
        reason = %rejection,
        "dead-lettered"
    );
    dead_letter(dlq, &config.dlq_topic, message, rejection).await?;
    metrics
        .dead_letters
        .with_label_values(&[rejection.class.as_str()])
        .inc();
    Ok(())
}

/// Publishes a refused message to the dead letter topic and waits for the broker's ack.
async fn dead_letter(
    producer: &FutureProducer,
    topic: &str,
    message: &RawMessage,
    rejection: &Rejection,
) -> KafkaResult<()> {
    let partition = message.partition.to_string();
    let offset = message.offset.to_string();
    let mut headers = OwnedHeaders::new();
    for (key, value) in &message.headers {
        headers = headers.insert(Header {
            key,
            value: Some(value),
        });
    }
    let reason = rejection.reason.as_str();
    for (key, value) in [
        (dlq_headers::REASON, reason),
        (dlq_headers::CLASS, rejection.class.as_str()),
        (dlq_headers::TOPIC, message.topic.as_str()),
        (dlq_headers::PARTITION, partition.as_str()),
        (dlq_headers::OFFSET, offset.as_str()),
    ] {
        headers = headers.insert(Header {
            key,
            value: Some(value),
        });
    }
    let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic).headers(headers);
    if let Some(key) = &message.key {
        record = record.key(key.as_slice());
    }
    if let Some(payload) = &message.payload {
        record = record.payload(payload.as_slice());
    }
    producer
        .send(record, Duration::from_secs(30))
        .await
        .map(|_| ())
        .map_err(|(e, _)| e)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(partition: i32, offset: i64) -> RawMessage {
        RawMessage {
            topic: "cmdm.events.v1".into(),
            partition,
            offset,
            key: None,
            payload: None,
            headers: Vec::new(),
        }
    }

    #[test]
    fn a_revoked_partition_leaves_the_batch_unapplied_and_the_others_stay() {
        let mut batch = vec![message(0, 5), message(1, 7), message(0, 6), message(2, 1)];
        let revoked = vec![("cmdm.events.v1".to_owned(), 0), ("other".to_owned(), 1)];
        assert_eq!(release_revoked(&mut batch, &revoked), 2);
        let left: Vec<(i32, i64)> = batch.iter().map(|m| (m.partition, m.offset)).collect();
        assert_eq!(left, vec![(1, 7), (2, 1)]);
        assert_eq!(release_revoked(&mut batch, &[]), 0);
    }
}
