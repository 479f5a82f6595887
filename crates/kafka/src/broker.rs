//! The embedded Kafka-protocol broker: librdkafka's mock cluster on loopback, for trying
//! the hub out and for tests. Any Kafka client (kcat, librdkafka, the JVM client) can
//! publish to its bootstrap address.

use std::sync::mpsc;
use std::thread::JoinHandle;

use rdkafka::mocking::MockCluster;
use tracing::info;

use crate::{KafkaEdgeError, Result};

/// A running embedded broker; it stops when dropped.
pub struct EmbeddedBroker {
    bootstrap: String,
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl EmbeddedBroker {
    /// Starts a one-broker cluster with the given topics (name, partitions).
    pub fn start(topics: &[(String, i32)]) -> Result<Self> {
        let topics = topics.to_vec();
        let (ready_tx, ready_rx) = mpsc::channel::<Result<String, String>>();
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        // The mock cluster is not Send; it lives and dies on its own thread.
        let thread = std::thread::Builder::new()
            .name("embedded-broker".into())
            .spawn(move || {
                let cluster = match MockCluster::new(1) {
                    Ok(cluster) => cluster,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.to_string()));
                        return;
                    }
                };
                for (topic, partitions) in &topics {
                    if let Err(e) = cluster.create_topic(topic, *partitions, 1) {
                        let _ = ready_tx.send(Err(format!("create topic {topic}: {e}")));
                        return;
                    }
                }
                let _ = ready_tx.send(Ok(cluster.bootstrap_servers()));
                let _ = stop_rx.recv();
                drop(cluster);
            })
            .map_err(|e| KafkaEdgeError::Broker(e.to_string()))?;
        let bootstrap = ready_rx
            .recv()
            .map_err(|_| KafkaEdgeError::Broker("broker thread ended before starting".into()))?
            .map_err(KafkaEdgeError::Broker)?;
        info!(bootstrap = %bootstrap, "embedded broker started");
        Ok(EmbeddedBroker {
            bootstrap,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// The `bootstrap.servers` value for clients.
    pub fn bootstrap_servers(&self) -> &str {
        &self.bootstrap
    }
}

impl Drop for EmbeddedBroker {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
