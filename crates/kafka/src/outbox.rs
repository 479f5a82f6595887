//! Publishes the outbox to `cmdm.golden.v1`, keyed by golden id, in order, and removes
//! entries only once the broker acknowledged them: nothing is lost, nothing invented.

use std::sync::Arc;
use std::time::Duration;

use cmdm_engine::Engine;
use rdkafka::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::Result;

/// Settings of the publisher.
#[derive(Debug, Clone)]
pub struct OutboxConfig {
    pub brokers: String,
    pub golden_topic: String,
    /// Entries published per round.
    pub batch: usize,
    /// How often to look for entries when not woken.
    pub poll: Duration,
}

/// Publishes until `shutdown` is cancelled, then publishes what is left and returns.
pub async fn run_outbox(
    engine: Arc<Engine>,
    config: OutboxConfig,
    metrics: crate::Metrics,
    wake: Arc<Notify>,
    shutdown: CancellationToken,
) -> Result<()> {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &config.brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .create()?;
    info!(topic = %config.golden_topic, "outbox publisher started");
    loop {
        let entries = engine.outbox(config.batch)?;
        if entries.is_empty() {
            if shutdown.is_cancelled() {
                break;
            }
            tokio::select! {
                () = wake.notified() => {}
                () = tokio::time::sleep(config.poll) => {}
                () = shutdown.cancelled() => {}
            }
            continue;
        }
        // Enqueue the whole round first: the idempotent producer keeps per-key order.
        let mut deliveries = Vec::with_capacity(entries.len());
        for entry in &entries {
            let key = entry.change.golden_id.to_string();
            let payload =
                serde_json::to_vec(&entry.change).map_err(cmdm_engine::EngineError::from)?;
            let kind = serde_json::to_value(entry.change.kind)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            let headers = OwnedHeaders::new()
                .insert(Header {
                    key: "cmdm_change_type",
                    value: Some(kind.as_str()),
                })
                .insert(Header {
                    key: "content-type",
                    value: Some("application/json"),
                });
            let mut record: FutureRecord<'_, String, Vec<u8>> =
                FutureRecord::to(&config.golden_topic)
                    .key(&key)
                    .headers(headers);
            // An erasure is a tombstone: compaction then drops every earlier value of the key.
            if entry.change.kind != cmdm_domain::OutboundKind::Erased {
                record = record.payload(&payload);
            }
            loop {
                match producer.send_result(record) {
                    Ok(delivery) => {
                        deliveries.push(delivery);
                        break;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        record = back;
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    Err((e, _)) => return Err(e.into()),
                }
            }
        }
        let mut failed = None;
        for delivery in deliveries {
            match delivery.await {
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) => failed = Some(e),
                Err(_) => failed = Some(KafkaError::Canceled),
            }
        }
        match failed {
            None => {
                let keys: Vec<Vec<u8>> = entries.into_iter().map(|e| e.key).collect();
                debug!(published = keys.len(), "outbox published");
                engine.outbox_done(&keys)?;
                metrics.published.inc_by(keys.len() as u64);
            }
            Some(e) => {
                // Resend the round in order; a duplicate carries the same full state.
                warn!(error = %e, "publishing the change feed failed; retrying");
                metrics.publish_failures.inc();
                tokio::time::sleep(Duration::from_millis(500)).await;
                if shutdown.is_cancelled() {
                    warn!("stopping with unpublished changes; they stay in the outbox");
                    break;
                }
            }
        }
    }
    info!("outbox publisher stopped");
    Ok(())
}
