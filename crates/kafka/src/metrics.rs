//! Prometheus metrics of the Kafka edge: consumer lag, batch sizes, dead letters, apply
//! latency and the change feed, in one registry the hub serves over HTTP.

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

/// The hub's metrics. Cheap to update from any thread.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Messages consumed, by outcome: `applied`, `duplicate`, `dead_lettered`.
    pub messages: IntCounterVec,
    /// Dead-lettered messages by error class.
    pub dead_letters: IntCounterVec,
    /// Messages per applied batch.
    pub batch_size: Histogram,
    /// Seconds to apply a batch and make it durable.
    pub apply_seconds: Histogram,
    /// Hub decisions by kind: `created`, `linked`, `merged`, `review`.
    pub decisions: IntCounterVec,
    /// Messages behind the partition's end, per topic and partition (from the consumer's
    /// statistics, refreshed every few seconds).
    pub consumer_lag: IntGaugeVec,
    /// Changes published on the golden topic.
    pub published: IntCounter,
    /// Failed publishing rounds (retried).
    pub publish_failures: IntCounter,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with every metric registered.
    pub fn new() -> Self {
        let registry =
            Registry::new_custom(Some("cmdm".to_owned()), None).expect("a valid metric prefix");
        let messages = IntCounterVec::new(
            Opts::new("ingest_messages_total", "Messages consumed, by outcome"),
            &["outcome"],
        )
        .expect("valid metric");
        let dead_letters = IntCounterVec::new(
            Opts::new(
                "ingest_dead_letters_total",
                "Messages sent to the dead letter topic, by error class",
            ),
            &["class"],
        )
        .expect("valid metric");
        let batch_size = Histogram::with_opts(
            HistogramOpts::new("ingest_batch_messages", "Messages per applied batch").buckets(
                vec![1.0, 5.0, 10.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 5000.0],
            ),
        )
        .expect("valid metric");
        let apply_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "ingest_apply_seconds",
                "Seconds to apply a batch and make it durable",
            )
            .buckets(prometheus::exponential_buckets(0.0005, 2.0, 16).expect("valid buckets")),
        )
        .expect("valid metric");
        let decisions = IntCounterVec::new(
            Opts::new("engine_decisions_total", "Hub decisions, by kind"),
            &["kind"],
        )
        .expect("valid metric");
        let consumer_lag = IntGaugeVec::new(
            Opts::new(
                "ingest_consumer_lag",
                "Messages between the consumed position and the end of the partition",
            ),
            &["topic", "partition"],
        )
        .expect("valid metric");
        let published = IntCounter::new(
            "outbox_published_total",
            "Changes published on the golden topic",
        )
        .expect("valid metric");
        let publish_failures = IntCounter::new(
            "outbox_publish_failures_total",
            "Publishing rounds that failed and were retried",
        )
        .expect("valid metric");
        for collector in [
            Box::new(messages.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(dead_letters.clone()),
            Box::new(batch_size.clone()),
            Box::new(apply_seconds.clone()),
            Box::new(decisions.clone()),
            Box::new(consumer_lag.clone()),
            Box::new(published.clone()),
            Box::new(publish_failures.clone()),
        ] {
            registry
                .register(collector)
                .expect("each metric registered once");
        }
        Metrics {
            registry,
            messages,
            dead_letters,
            batch_size,
            apply_seconds,
            decisions,
            consumer_lag,
            published,
            publish_failures,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        // Encoding into a Vec cannot fail for the text format.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8_lossy(&out).into_owned()
    }

    /// Records what the consumer's statistics say about lag.
    pub fn observe_statistics(&self, stats: &rdkafka::Statistics) {
        for (topic, t) in &stats.topics {
            for (partition, p) in &t.partitions {
                // librdkafka reports -1 for partitions it does not consume and the
                // internal "unassigned" partition as -1 too.
                if *partition < 0 || p.consumer_lag < 0 {
                    continue;
                }
                self.consumer_lag
                    .with_label_values(&[topic.as_str(), &partition.to_string()])
                    .set(p.consumer_lag);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_metric_with_its_prefix() {
        let metrics = Metrics::new();
        metrics.messages.with_label_values(&["applied"]).inc_by(3);
        metrics.dead_letters.with_label_values(&["schema"]).inc();
        metrics.batch_size.observe(3.0);
        metrics
            .consumer_lag
            .with_label_values(&["cmdm.events.v1", "0"])
            .set(42);
        let text = metrics.render();
        assert!(text.contains("cmdm_ingest_messages_total{outcome=\"applied\"} 3"));
        assert!(text.contains("cmdm_ingest_dead_letters_total{class=\"schema\"} 1"));
        assert!(text.contains("cmdm_ingest_batch_messages_count 1"));
        assert!(
            text.contains("cmdm_ingest_consumer_lag{partition=\"0\",topic=\"cmdm.events.v1\"} 42")
        );
    }
}
