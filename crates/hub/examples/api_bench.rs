//! Load on the read API of a filled data directory, in one run: `GetGoldenRecord` through
//! the hub's own service (engine, store, conversion, roles) against a bare tonic service
//! answering a fixed message of the same size, then fuzzy `Search`. Both servers listen on
//! loopback in this process; a tonic client keeps `CONCURRENCY` requests in flight over a
//! few HTTP/2 connections for `SECONDS` each and records every latency.
//!
//! cargo run --release -p cmdm-hub --example api_bench -- DATA_DIR [SECONDS] [CONCURRENCY]
//!
//! Stop any hub using DATA_DIR first (the store allows one opener).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cmdm_api::{Auth, CustomerHubClient, CustomerHubServer, HubService, pb};
use cmdm_domain::{GoldenId, SourceRecord};
use cmdm_hub::HubConfig;
use cmdm_store::TreeName;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

// The allocator of the hub's binary, so the hub's path is measured as it runs.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// The bare service: a fixed answer, no store, no conversion, no roles.
#[derive(Clone)]
struct Fixed(pb::GetGoldenRecordResponse);

type Answer<T> = Result<Response<T>, Status>;

fn none<T>() -> Answer<T> {
    Err(Status::unimplemented("bare service"))
}

#[tonic::async_trait]
impl pb::customer_hub_server::CustomerHub for Fixed {
    async fn get_golden_record(
        &self,
        _: Request<pb::GetGoldenRecordRequest>,
    ) -> Answer<pb::GetGoldenRecordResponse> {
        Ok(Response::new(self.0.clone()))
    }
    async fn lookup_by_source_key(
        &self,
        _: Request<pb::LookupBySourceKeyRequest>,
    ) -> Answer<pb::LookupBySourceKeyResponse> {
        none()
    }
    async fn search(&self, _: Request<pb::SearchRequest>) -> Answer<pb::SearchResponse> {
        none()
    }
    async fn get_history(
        &self,
        _: Request<pb::GetHistoryRequest>,
    ) -> Answer<pb::GetHistoryResponse> {
        none()
    }
    async fn explain(&self, _: Request<pb::ExplainRequest>) -> Answer<pb::ExplainResponse> {
        none()
    }
    async fn list_tasks(&self, _: Request<pb::ListTasksRequest>) -> Answer<pb::ListTasksResponse> {
        none()
    }
    async fn get_task(&self, _: Request<pb::GetTaskRequest>) -> Answer<pb::GetTaskResponse> {
        none()
    }
    async fn merge(&self, _: Request<pb::MergeRequest>) -> Answer<pb::StewardResponse> {
        none()
    }
    async fn keep_apart(&self, _: Request<pb::KeepApartRequest>) -> Answer<pb::StewardResponse> {
        none()
    }
    async fn split(&self, _: Request<pb::SplitRequest>) -> Answer<pb::StewardResponse> {
        none()
    }
    async fn link(&self, _: Request<pb::LinkRequest>) -> Answer<pb::StewardResponse> {
        none()
    }
    async fn rematch(&self, _: Request<pb::RematchRequest>) -> Answer<pb::RematchResponse> {
        none()
    }
    async fn publish(&self, _: Request<pb::PublishRequest>) -> Answer<pb::PublishResponse> {
        none()
    }
    async fn check_contact(
        &self,
        _: Request<pb::CheckContactRequest>,
    ) -> Answer<pb::CheckContactResponse> {
        none()
    }
    type CheckContactBatchStream = std::pin::Pin<
        Box<dyn tokio_stream::Stream<Item = Result<pb::CheckContactBatchResponse, Status>> + Send>,
    >;
    async fn check_contact_batch(
        &self,
        _: Request<pb::CheckContactBatchRequest>,
    ) -> Answer<Self::CheckContactBatchStream> {
        none()
    }
    async fn erase(&self, _: Request<pb::EraseRequest>) -> Answer<pb::EraseResponse> {
        none()
    }
    async fn export(&self, _: Request<pb::ExportRequest>) -> Answer<pb::ExportResponse> {
        none()
    }
    async fn consent_report(
        &self,
        _: Request<pb::ConsentReportRequest>,
    ) -> Answer<pb::ConsentReportResponse> {
        none()
    }
}

/// A loopback listener with TCP_NODELAY on its connections, as the hub serves.
async fn bind() -> (tonic::transport::server::TcpIncoming, SocketAddr) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    (incoming, addr)
}

async fn serve_hub(service: HubService) -> SocketAddr {
    let (incoming, addr) = bind().await;
    let router = tonic::transport::Server::builder().add_service(service.into_server(Auth::open()));
    tokio::spawn(router.serve_with_incoming(incoming));
    addr
}

async fn serve_fixed(service: Fixed) -> SocketAddr {
    let (incoming, addr) = bind().await;
    let router = tonic::transport::Server::builder().add_service(CustomerHubServer::new(service));
    tokio::spawn(router.serve_with_incoming(incoming));
    addr
}

struct Run {
    requests: usize,
    errors: usize,
    seconds: f64,
    latencies: Vec<u32>,
}

impl Run {
    fn rate(&self) -> f64 {
        self.requests as f64 / self.seconds
    }

    fn pct(&self, p: f64) -> f64 {
        if self.latencies.is_empty() {
            return 0.0;
        }
        let i = ((self.latencies.len() as f64 * p).ceil() as usize).clamp(1, self.latencies.len());
        f64::from(self.latencies[i - 1]) / 1000.0
    }

    fn report(&self, name: &str) {
        println!(
            "{name:<34} {:>9} requests in {:.1} s = {:>8.0}/s   p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms  errors {}",
            self.requests,
            self.seconds,
            self.rate(),
            self.pct(0.50),
            self.pct(0.99),
            self.pct(1.0),
            self.errors
        );
    }
}

/// Keeps `concurrency` calls in flight for `seconds`, after one second of warm-up.
async fn load<F, Fut>(addr: SocketAddr, concurrency: usize, seconds: u64, call: F) -> Run
where
    F: Fn(CustomerHubClient<Channel>, usize) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let connections = 4.min(concurrency);
    let mut channels = Vec::new();
    for _ in 0..connections {
        channels.push(
            Channel::from_shared(format!("http://{addr}"))
                .unwrap()
                .connect()
                .await
                .unwrap(),
        );
    }
    let warm_until = Instant::now() + Duration::from_secs(1);
    let stop_at = warm_until + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for worker in 0..concurrency {
        let client = CustomerHubClient::new(channels[worker % connections].clone());
        let call = call.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0;
            let mut n = worker;
            loop {
                let started = Instant::now();
                if started >= stop_at {
                    break;
                }
                let ok = call(client.clone(), n).await;
                n += concurrency;
                if started >= warm_until {
                    latencies.push(started.elapsed().as_micros() as u32);
                    errors += usize::from(!ok);
                }
            }
            (latencies, errors)
        }));
    }
    let mut run = Run {
        requests: 0,
        errors: 0,
        seconds: seconds as f64,
        latencies: Vec::new(),
    };
    for task in tasks {
        let (latencies, errors) = task.await.unwrap();
        run.requests += latencies.len();
        run.errors += errors;
        run.latencies.extend(latencies);
    }
    run.latencies.sort_unstable();
    run
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let dir = args
        .get(1)
        .ok_or_else(|| anyhow::anyhow!("usage: api_bench DATA_DIR [SECONDS] [CONCURRENCY]"))?;
    let seconds: u64 = args.get(2).map_or(Ok(10), |s| s.parse())?;
    let concurrency: usize = args.get(3).map_or(Ok(32), |s| s.parse())?;
    let config = HubConfig {
        data_dir: dir.into(),
        store_cache_mb: std::env::var("CMDM_STORE_CACHE_MB")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(HubConfig::default().store_cache_mb),
        ..HubConfig::default()
    };
    let engine = cmdm_hub::open_engine(&config)?;
    let started = Instant::now();
    engine.warm_up()?;
    println!(
        "match index loaded in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // Golden ids to read, and search queries made from source records (name + postcode,
    // name + date of birth), in a fixed pseudo-random order.
    let mut ids = Vec::new();
    for item in engine.store().tree(TreeName::Entities).iter() {
        let (key, _) = item?;
        ids.push(GoldenId(u64::from_be_bytes(key.as_ref().try_into()?)));
    }
    let mut queries = Vec::new();
    let mut sources = Vec::new();
    for (i, item) in engine
        .store()
        .tree(TreeName::Records)
        .iter()
        .step_by(97)
        .take(4000)
        .enumerate()
    {
        let (_, value) = item?;
        let record: SourceRecord = cmdm_engine::held::Parts::of(&value)?.record()?;
        let v = |k: &str| record.value(k).unwrap_or_default().to_owned();
        let mut query = pb::SearchRequest {
            given_name: v("given_name"),
            family_name: v("family_name"),
            page_size: 10,
            ..Default::default()
        };
        match i % 3 {
            0 => query.postcode = v("postcode"),
            1 => query.date_of_birth = v("date_of_birth"),
            _ => {}
        }
        queries.push(query);
        sources.push(record.key.clone());
    }
    // How often the entity holding the record a query was made from ranks first, and
    // among the first ten (a name alone cannot tell apart people who share it).
    for (kind, name) in [
        (0, "name + postcode"),
        (1, "name + date of birth"),
        (2, "name only"),
    ] {
        let (mut first, mut ten, mut total) = (0, 0, 0);
        for (i, query) in queries.iter().enumerate().filter(|(i, _)| i % 3 == kind) {
            let attributes = [
                ("given_name", &query.given_name),
                ("family_name", &query.family_name),
                ("postcode", &query.postcode),
                ("date_of_birth", &query.date_of_birth),
            ]
            .into_iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| (k.to_owned(), v.clone()))
            .collect();
            let Ok((hits, _)) = engine.search(&cmdm_engine::SearchQuery { attributes }, 0, 10)
            else {
                continue;
            };
            total += 1;
            let at = hits
                .iter()
                .position(|h| h.record.members.contains(&sources[i]));
            first += usize::from(at == Some(0));
            ten += usize::from(at.is_some());
        }
        let pct = |n: usize| 100.0 * n as f64 / total.max(1) as f64;
        println!(
            "search by {name}: the queried person first in {:.1} %, in the first ten in {:.1} % of {total} queries",
            pct(first),
            pct(ten)
        );
    }
    let mix = |n: usize, len: usize| (n.wrapping_mul(2_654_435_761)) % len.max(1);
    println!(
        "{} golden records, {} search queries; {concurrency} requests in flight, {seconds} s each",
        ids.len(),
        queries.len()
    );
    let sample = engine
        .golden(ids[ids.len() / 2])?
        .map(|l| cmdm_api::to_proto(&l.record))
        .ok_or_else(|| anyhow::anyhow!("no golden record to copy"))?;
    let fixed = Fixed(pb::GetGoldenRecordResponse {
        record: Some(sample),
        redirected_from: String::new(),
    });
    println!(
        "fixed answer: {} bytes encoded",
        prost::Message::encoded_len(&fixed.0)
    );

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let hub = serve_hub(HubService::new(engine.clone())).await;
        let bare = serve_fixed(fixed).await;
        let ids = Arc::new(ids);
        let get = |ids: Arc<Vec<GoldenId>>| {
            move |mut c: CustomerHubClient<Channel>, n: usize| {
                let id = ids[mix(n, ids.len())].to_string();
                async move {
                    c.get_golden_record(pb::GetGoldenRecordRequest {
                        golden_id: id,
                        ..Default::default()
                    })
                    .await
                    .is_ok()
                }
            }
        };
        let bare_run = load(bare, concurrency, seconds, get(ids.clone())).await;
        let hub_run = load(hub, concurrency, seconds, get(ids.clone())).await;
        bare_run.report("GetGoldenRecord, bare tonic");
        hub_run.report("GetGoldenRecord, hub");
        println!("ratio hub / bare: {:.3}", hub_run.rate() / bare_run.rate());
        let queries = Arc::new(queries);
        let search_concurrency = concurrency.min(4);
        let search_run = load(hub, search_concurrency, seconds, move |mut c, n| {
            let query = queries[mix(n, queries.len())].clone();
            async move { c.search(query).await.is_ok() }
        })
        .await;
        search_run.report(&format!("Search, hub ({search_concurrency} in flight)"));
    });
    Ok(())
}
