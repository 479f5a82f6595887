//! The only crate that links rdkafka: decoding spoke events, dead letters, the batched
//! consumer that commits offsets once its batch is stored durably, the outbox publisher,
//! and the embedded broker used when no brokers are configured.

pub mod broker;
pub mod decode;
pub mod ingest;
pub mod metrics;
pub mod outbox;
pub mod protobuf;

use thiserror::Error;

pub use broker::EmbeddedBroker;
pub use decode::{RawMessage, Rejection, RejectionClass, decode};
pub use ingest::{IngestConfig, run_ingest};
pub use metrics::Metrics;
pub use outbox::{OutboxConfig, run_outbox};

/// Errors of the Kafka edge.
#[derive(Debug, Error)]
pub enum KafkaEdgeError {
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error(transparent)]
    Engine(#[from] cmdm_engine::EngineError),
    #[error("the engine task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
    #[error("embedded broker: {0}")]
    Broker(String),
}

/// Result alias of this crate.
pub type Result<T, E = KafkaEdgeError> = std::result::Result<T, E>;

/// The Kafka headers of a binary-mode CloudEvent with a JSON body, for Rust spokes, load
/// generators and tests: `ce_specversion`, `ce_id`, `ce_source`, `ce_subject`, `ce_type`,
/// `ce_time` and `content-type`.
pub fn binary_event_headers(
    id: &str,
    source: &str,
    subject: &str,
    event_type: &str,
    time: &str,
) -> rdkafka::message::OwnedHeaders {
    use rdkafka::message::{Header, OwnedHeaders};
    [
        ("ce_specversion", "1.0"),
        ("ce_id", id),
        ("ce_source", source),
        ("ce_subject", subject),
        ("ce_type", event_type),
        ("ce_time", time),
        ("content-type", "application/json"),
    ]
    .into_iter()
    .fold(OwnedHeaders::new(), |headers, (key, value)| {
        headers.insert(Header {
            key,
            value: Some(value),
        })
    })
}

/// Headers a dead letter carries besides the original message's own.
pub mod dlq_headers {
    /// Why the event was refused, for a person.
    pub const REASON: &str = "cmdm_dlq_reason";
    /// The kind of refusal, for machines: see [`crate::RejectionClass`].
    pub const CLASS: &str = "cmdm_dlq_error_class";
    /// Where the original message was.
    pub const TOPIC: &str = "cmdm_dlq_original_topic";
    pub const PARTITION: &str = "cmdm_dlq_original_partition";
    pub const OFFSET: &str = "cmdm_dlq_original_offset";
}
