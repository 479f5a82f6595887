//! The hub server: wires the store, the engine, the Kafka edge and the gRPC API, and shuts
//! them down in order (stop intake, drain, flush, commit) within a deadline.

pub mod config;
mod metrics_http;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use cmdm_api::{CustomerHubServer, HubService, pb};
use cmdm_engine::{Engine, EngineConfig};
use cmdm_kafka::{EmbeddedBroker, IngestConfig, Metrics, OutboxConfig, run_ingest, run_outbox};
use cmdm_store::Store;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

pub use config::{HubConfig, Overrides};

/// Opens the store and builds the engine with the configured rules.
pub fn open_engine(config: &HubConfig) -> anyhow::Result<Arc<Engine>> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data directory {}", config.data_dir.display()))?;
    let store = Store::open_with_cache(&config.data_dir, config.store_cache_mb << 20)
        .with_context(|| {
            format!(
                "cannot open the store in {} (is another hub using it?)",
                config.data_dir.display()
            )
        })?;
    let matcher = Arc::new(config.matching.matcher()?);
    let rules = EngineConfig {
        survivorship: config.survivorship.clone(),
        contact: config.contact.policy()?,
        after_erasure: config.privacy.after_erasure,
        purge_delay: Duration::from_secs(config.privacy.purge_delay_secs),
    };
    let engine = Arc::new(Engine::new(store, matcher, rules));
    if cmdm_engine::finish_pending_purge(&engine)? {
        warn!("an erasure's rewrite of the store was interrupted: finished it");
    }
    if let Some(replayed) = cmdm_engine::rebuild::ensure_projection_format(&engine)?
        && replayed > 0
    {
        warn!(
            replayed,
            "the projections were written by an older version of the hub: rebuilt from the log"
        );
    }
    Ok(engine)
}

/// Rewrites the store when erasures have waited for it long enough.
async fn run_deferred_purges(engine: Arc<Engine>, every: Duration, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
        let engine = engine.clone();
        match tokio::task::spawn_blocking(move || engine.purge_if_due()).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => error!(error = %e, "deferred rewrite of the store failed; retrying"),
            Err(e) => error!(error = %e, "deferred rewrite of the store panicked"),
        }
    }
}

/// A started hub.
pub struct RunningHub {
    engine: Arc<Engine>,
    grpc_addr: SocketAddr,
    metrics_addr: SocketAddr,
    metrics: Metrics,
    bootstrap: String,
    broker: Option<EmbeddedBroker>,
    shutdown: CancellationToken,
    ingest: JoinHandle<cmdm_kafka::Result<()>>,
    /// The consumer task itself (`ingest` waits on it, then stops the publisher).
    consumer: tokio::task::AbortHandle,
    outbox: JoinHandle<cmdm_kafka::Result<()>>,
    grpc: JoinHandle<Result<(), tonic::transport::Error>>,
    deadline: Duration,
}

impl RunningHub {
    /// The address the gRPC API listens on.
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    /// The address of the metrics endpoint.
    pub fn metrics_addr(&self) -> SocketAddr {
        self.metrics_addr
    }

    /// The hub's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The Kafka bootstrap servers in use (the embedded broker's when none were set).
    pub fn bootstrap_servers(&self) -> &str {
        &self.bootstrap
    }

    /// The engine, for in-process inspection.
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// Resolves when a component stops on its own (a fatal error).
    pub async fn failed(&mut self) -> String {
        tokio::select! {
            r = &mut self.ingest => format!("ingest stopped: {r:?}"),
            r = &mut self.outbox => format!("outbox publisher stopped: {r:?}"),
            r = &mut self.grpc => format!("gRPC server stopped: {r:?}"),
        }
    }

    /// Graceful stop: stop intake, apply what was consumed, flush, publish, then exit,
    /// giving up after the configured deadline.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        info!("shutting down");
        self.shutdown.cancel();
        let deadline = self.deadline;
        let stopping = async {
            let ingest = self.ingest.await;
            let outbox = self.outbox.await;
            let grpc = self.grpc.await;
            self.engine.store().flush().await?;
            ingest??;
            outbox??;
            grpc??;
            anyhow::Ok(())
        };
        let result = match tokio::time::timeout(deadline, stopping).await {
            Ok(result) => result,
            Err(_) => {
                warn!(
                    ?deadline,
                    "shutdown deadline passed; exiting with work in flight"
                );
                Ok(())
            }
        };
        drop(self.broker);
        info!("stopped");
        result
    }

    /// Stops at once without draining or flushing, as a crash would (for tests), and
    /// returns once the store is closed so that it can be opened again.
    pub async fn kill(self) {
        self.consumer.abort();
        self.ingest.abort();
        self.outbox.abort();
        self.grpc.abort();
        let _ = self.ingest.await;
        let _ = self.outbox.await;
        let _ = self.grpc.await;
        // A batch already handed to a blocking thread finishes there; wait for it.
        let started = std::time::Instant::now();
        while Arc::strong_count(&self.engine) > 1 && started.elapsed() < Duration::from_secs(30) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Starts every component and returns once the API listens and the consumer runs.
pub async fn start(config: HubConfig) -> anyhow::Result<RunningHub> {
    let engine = open_engine(&config)?;
    // Load the match index now (logged with its size and time), not on the first batch.
    let warming = engine.clone();
    tokio::task::spawn_blocking(move || warming.warm_up())
        .await
        .context("loading the match index")??;
    let kafka = &config.kafka;
    let (bootstrap, broker) = match &kafka.brokers {
        Some(brokers) => (brokers.clone(), None),
        None => {
            let topics: Vec<(String, i32)> =
                [&kafka.events_topic, &kafka.golden_topic, &kafka.dlq_topic]
                    .into_iter()
                    .map(|t| (t.clone(), kafka.embedded_partitions))
                    .collect();
            let broker = EmbeddedBroker::start(&topics)?;
            let bootstrap = broker.bootstrap_servers().to_owned();
            let addr_file = config.data_dir.join("broker.addr");
            std::fs::write(&addr_file, format!("{bootstrap}\n"))
                .with_context(|| format!("cannot write {}", addr_file.display()))?;
            info!(bootstrap = %bootstrap, file = %addr_file.display(), "no brokers configured: embedded Kafka broker on loopback");
            (bootstrap, Some(broker))
        }
    };
    let shutdown = CancellationToken::new();
    let applied = Arc::new(Notify::new());
    let metrics = Metrics::new();
    let metrics_listener = tokio::net::TcpListener::bind(config.metrics_addr)
        .await
        .with_context(|| format!("cannot listen on {} for metrics", config.metrics_addr))?;
    let metrics_addr = metrics_listener.local_addr()?;
    tokio::spawn(metrics_http::serve(
        metrics_listener,
        metrics.clone(),
        shutdown.clone(),
    ));

    if config.privacy.purge_delay_secs > 0 {
        tokio::spawn(run_deferred_purges(
            engine.clone(),
            Duration::from_secs(config.privacy.purge_delay_secs.clamp(1, 60)),
            shutdown.clone(),
        ));
    }
    let ingest = tokio::spawn(run_ingest(
        engine.clone(),
        IngestConfig {
            brokers: bootstrap.clone(),
            group_id: kafka.group_id.clone(),
            session_timeout: Duration::from_millis(kafka.session_timeout_ms),
            events_topic: kafka.events_topic.clone(),
            dlq_topic: kafka.dlq_topic.clone(),
            batch_max: kafka.batch_max,
            linger: Duration::from_millis(kafka.batch_linger_ms),
            max_event_bytes: kafka.max_event_bytes,
        },
        metrics.clone(),
        applied.clone(),
        shutdown.clone(),
    ));
    // The publisher stops only after ingest has drained, so the last batch is published.
    let outbox_stop = CancellationToken::new();
    let outbox = tokio::spawn(run_outbox(
        engine.clone(),
        OutboxConfig {
            brokers: bootstrap.clone(),
            golden_topic: kafka.golden_topic.clone(),
            batch: 1000,
            poll: Duration::from_millis(200),
        },
        metrics.clone(),
        applied,
        outbox_stop.clone(),
    ));
    let consumer = ingest.abort_handle();
    let ingest = chain_stop(ingest, outbox_stop);

    let listener = tokio::net::TcpListener::bind(config.grpc_addr)
        .await
        .with_context(|| format!("cannot listen on {}", config.grpc_addr))?;
    let grpc_addr = listener.local_addr()?;
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<CustomerHubServer<HubService>>().await;
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    // Both versions: older grpcurl and other tools still ask v1alpha.
    let reflection_v1 = reflection().build_v1().context("reflection service")?;
    let reflection_v1alpha = reflection().build_v1alpha().context("reflection service")?;
    let auth = cmdm_api::Auth::with_tokens(&config.api.tokens).map_err(anyhow::Error::msg)?;
    if auth.is_open() {
        warn!(grpc = %grpc_addr, "no API tokens configured: the gRPC API is open to every caller on this loopback address");
    }
    let mut server = tonic::transport::Server::builder();
    if let (Some(cert), Some(key)) = (&config.api.tls_cert, &config.api.tls_key) {
        let read = |p: &std::path::PathBuf| {
            std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))
        };
        let identity = tonic::transport::Identity::from_pem(read(cert)?, read(key)?);
        server = server
            .tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))
            .context("TLS configuration of the gRPC API")?;
        info!(cert = %cert.display(), "the gRPC API speaks TLS");
    }
    let router = server
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(HubService::new(engine.clone()).into_server(auth));
    let grpc_stop = shutdown.clone();
    let grpc = tokio::spawn(async move {
        router
            .serve_with_incoming_shutdown(
                // Without TCP_NODELAY small answers wait for delayed ACKs (~40 ms each).
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
                grpc_stop.cancelled_owned(),
            )
            .await
    });
    info!(grpc = %grpc_addr, metrics = %metrics_addr, kafka = %bootstrap, data_dir = %config.data_dir.display(), "hub started");
    Ok(RunningHub {
        engine,
        grpc_addr,
        metrics_addr,
        metrics,
        bootstrap,
        broker,
        shutdown,
        ingest,
        consumer,
        outbox,
        grpc,
        deadline: Duration::from_secs(config.shutdown_deadline_secs),
    })
}

/// Cancels `then` once `task` has finished, passing its result on.
fn chain_stop<T: Send + 'static>(task: JoinHandle<T>, then: CancellationToken) -> JoinHandle<T> {
    tokio::spawn(async move {
        let result = task.await;
        then.cancel();
        match result {
            Ok(value) => value,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    })
}

/// Runs the hub until `signal` resolves or a component fails, then shuts down.
pub async fn serve(config: HubConfig, signal: impl Future<Output = ()>) -> anyhow::Result<()> {
    let mut hub = start(config).await?;
    tokio::select! {
        () = signal => hub.shutdown().await,
        reason = hub.failed() => {
            error!(%reason, "a component failed; stopping");
            anyhow::bail!(reason)
        }
    }
}
