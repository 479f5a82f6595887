//! The embedded Kafka-protocol broker: librdkafka's mock cluster on loopback, for trying
//! the hub out and for tests. Any Kafka client (kcat, librdkafka, the JVM client) can
//! publish to its bootstrap address.

use std::sync::mpsc;
use std::thread::JoinHandle;

use rdkafka::mocking::MockCluster;
use tracing::info;

use crate::{KafkaEdgeError, Result};

/// What the broker's thread is asked to do; dropping the sender stops the broker.
enum Command {
    /// Take the broker down (`true`: connections refused, data kept) or bring it back.
    Down(bool, mpsc::Sender<Result<(), String>>),
}

/// A running embedded broker; it stops when dropped.
pub struct EmbeddedBroker {
    bootstrap: String,
    commands: Option<mpsc::Sender<Command>>,
    thread: Option<JoinHandle<()>>,
}

/// The id of the single broker of the embedded cluster.
const BROKER_ID: i32 = 1;

impl EmbeddedBroker {
    /// Starts a one-broker cluster with the given topics (name, partitions).
    pub fn start(topics: &[(String, i32)]) -> Result<Self> {
        let topics = topics.to_vec();
        let (ready_tx, ready_rx) = mpsc::channel::<Result<String, String>>();
        let (commands_tx, commands_rx) = mpsc::channel::<Command>();
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
                while let Ok(command) = commands_rx.recv() {
                    match command {
                        Command::Down(down, reply) => {
                            let result = if down {
                                cluster.broker_down(BROKER_ID)
                            } else {
                                cluster.broker_up(BROKER_ID)
                            };
                            let _ = reply.send(result.map_err(|e| e.to_string()));
                        }
                    }
                }
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
            commands: Some(commands_tx),
            thread: Some(thread),
        })
    }

    /// The `bootstrap.servers` value for clients.
    pub fn bootstrap_servers(&self) -> &str {
        &self.bootstrap
    }

    /// Takes the broker down (clients cannot connect; its data is kept) or brings it back
    /// up, as an outage would.
    pub fn set_down(&self, down: bool) -> Result<()> {
        let (reply_tx, reply_rx) = mpsc::channel();
        self.commands
            .as_ref()
            .ok_or_else(|| KafkaEdgeError::Broker("broker stopped".into()))?
            .send(Command::Down(down, reply_tx))
            .map_err(|_| KafkaEdgeError::Broker("broker thread ended".into()))?;
        reply_rx
            .recv()
            .map_err(|_| KafkaEdgeError::Broker("broker thread ended".into()))?
            .map_err(KafkaEdgeError::Broker)
    }
}

impl Drop for EmbeddedBroker {
    fn drop(&mut self) {
        drop(self.commands.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
