//! The contact decision on a filled data directory, in one run: `CheckContact` in process
//! and over gRPC (loopback, the hub's own service), one at a time, and the batch form for
//! a campaign list of 100,000 golden ids, in process and over gRPC; then one erasure, whose
//! rewrite of the store is the cost that grows with the store.
//!
//! Before measuring, it gives a sample of 100,000 entities declarations through the
//! engine's normal write path (consents granted or withdrawn, weekly frequency, recorded
//! contacts, a few do-not-contact flags), so the checks weigh real reasons. This writes
//! to DATA_DIR: use a copy you can spare.
//!
//! cargo run --release -p cmdm-hub --example contact_bench -- DATA_DIR [CHECKS]
//!
//! Stop any hub using DATA_DIR first (the store allows one opener).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use cmdm_api::{Auth, CustomerHubClient, HubService, pb};
use cmdm_domain::{Channel, ContactQuestion, GoldenId, GoldenRecord, InboundEvent, Timestamp};
use cmdm_engine::ContactTarget;
use cmdm_hub::HubConfig;
use cmdm_store::TreeName;

// The allocator of the hub's binary, so the hub's path is measured as it runs.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const CAMPAIGN: usize = 100_000;

fn percentiles(mut micros: Vec<u64>) -> String {
    micros.sort_unstable();
    let at = |p: f64| {
        let i = ((micros.len() as f64 * p).ceil() as usize).clamp(1, micros.len());
        micros[i - 1] as f64 / 1000.0
    };
    format!(
        "p50 {:.3} ms  p99 {:.3} ms  max {:.3} ms  ({} checks)",
        at(0.5),
        at(0.99),
        at(1.0),
        micros.len()
    )
}

fn event(
    id: String,
    member: &cmdm_domain::SourceKey,
    kind: &str,
    data: serde_json::Value,
) -> InboundEvent {
    InboundEvent::from_parts(
        Some(&id),
        Some(&member.source),
        Some(kind),
        Some(&member.subject),
        Some("2026-11-20T10:00:00Z"),
        Some(&data),
    )
    .expect("a valid bench event")
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let dir = args
        .get(1)
        .ok_or_else(|| anyhow::anyhow!("usage: contact_bench DATA_DIR [CHECKS]"))?;
    let checks: usize = args.get(2).map_or(Ok(20_000), |s| s.parse())?;
    let config = HubConfig {
        data_dir: dir.into(),
        ..HubConfig::default()
    };
    let engine = cmdm_hub::open_engine(&config)?;
    engine.warm_up()?;

    // Every golden record; the campaign list is an even spread of 100,000 of them.
    let mut goldens: Vec<(GoldenId, cmdm_domain::SourceKey)> = Vec::new();
    for item in engine.store().tree(TreeName::Entities).iter() {
        let (_, value) = item?;
        let golden: GoldenRecord = cmdm_store::decode_bin(TreeName::Entities, &value)?;
        goldens.push((golden.id, golden.members[0].clone()));
    }
    let step = (goldens.len() / CAMPAIGN).max(1);
    let campaign: Vec<(GoldenId, cmdm_domain::SourceKey)> = goldens
        .iter()
        .step_by(step)
        .take(CAMPAIGN)
        .cloned()
        .collect();
    println!(
        "{} golden records; campaign list of {}",
        goldens.len(),
        campaign.len()
    );

    let started = Instant::now();
    let mut events = Vec::new();
    for (i, (_, member)) in campaign.iter().enumerate() {
        let status = if i % 3 == 2 { "withdrawn" } else { "granted" };
        events.push(event(
            format!("bench-consent-{i}"),
            member,
            "consent.changed",
            serde_json::json!({"purpose": "marketing", "channel": "email", "status": status,
                               "evidence": {"collection_point": "bench", "text_version": "v1"}}),
        ));
        if i % 4 == 0 {
            events.push(event(
                format!("bench-pref-{i}"),
                member,
                "preference.changed",
                serde_json::json!({"frequency": {"email": "weekly"}, "do_not_contact": i % 100 == 0}),
            ));
        }
        if i % 8 == 0 {
            let mut contact = event(
                format!("bench-contact-{i}"),
                member,
                "contact.recorded",
                serde_json::json!({"channel": "email", "purpose": "marketing"}),
            );
            contact.time = Timestamp::parse_rfc3339("time", "2026-11-22T10:00:00Z")?;
            events.push(contact);
        }
    }
    for chunk in events.chunks(1000) {
        engine.apply_batch(chunk, &[])?;
    }
    engine.store().flush_blocking()?;
    println!(
        "{} declarations applied in {:.1} s",
        events.len(),
        started.elapsed().as_secs_f64()
    );

    let question = ContactQuestion {
        channel: Channel::Email,
        purpose: "marketing".into(),
        topic: None,
        at: Timestamp::parse_rfc3339("at", "2026-11-23T12:00:00Z")?,
    };
    let ids: Vec<GoldenId> = campaign.iter().map(|(id, _)| *id).collect();

    // One at a time, in process, over the whole population in a spread order.
    let spread = (goldens.len() / checks).max(1);
    for round in 0..2 {
        let mut micros = Vec::with_capacity(checks);
        let mut allowed = 0;
        for (id, _) in goldens.iter().step_by(spread).take(checks) {
            let t = Instant::now();
            let d = engine.check_contact(&ContactTarget::Entity(*id), &question)?;
            micros.push(t.elapsed().as_micros() as u64);
            allowed += usize::from(d.allowed);
        }
        println!(
            "CheckContact in process, round {}: {}; {allowed} allowed",
            round + 1,
            percentiles(micros)
        );
    }

    for round in 0..3 {
        let t = Instant::now();
        let answers = engine.check_contacts(&ids, &question);
        let allowed = answers
            .iter()
            .filter(|a| a.as_ref().is_ok_and(|d| d.allowed))
            .count();
        println!(
            "batch of {} in process, round {}: {:.3} s; {allowed} allowed",
            ids.len(),
            round + 1,
            t.elapsed().as_secs_f64()
        );
    }

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr: SocketAddr = listener.local_addr()?;
        let incoming =
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
        let service = HubService::new(engine.clone()).into_server(Auth::open());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(incoming),
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut client = CustomerHubClient::connect(format!("http://{addr}"))
            .await?
            .max_decoding_message_size(64 << 20);
        let q = pb::ContactQuestion {
            channel: "email".into(),
            purpose: "marketing".into(),
            topic: String::new(),
            at: "2026-11-23T12:00:00Z".into(),
        };
        for round in 0..2 {
            let mut micros = Vec::with_capacity(checks);
            for (id, _) in goldens.iter().step_by(spread).take(checks) {
                let t = Instant::now();
                client
                    .check_contact(pb::CheckContactRequest {
                        target: Some(pb::check_contact_request::Target::GoldenId(id.to_string())),
                        question: Some(q.clone()),
                    })
                    .await?;
                micros.push(t.elapsed().as_micros() as u64);
            }
            println!(
                "CheckContact over gRPC, one at a time, round {}: {}",
                round + 1,
                percentiles(micros)
            );
        }
        for round in 0..2 {
            let t = Instant::now();
            let mut stream = client
                .check_contact_batch(pb::CheckContactBatchRequest {
                    golden_ids: ids.iter().map(ToString::to_string).collect(),
                    question: Some(q.clone()),
                })
                .await?
                .into_inner();
            let mut verdicts = 0;
            while let Some(chunk) = stream.message().await? {
                verdicts += chunk.verdicts.len();
            }
            println!(
                "CheckContactBatch of {verdicts} over gRPC, round {}: {:.3} s",
                round + 1,
                t.elapsed().as_secs_f64()
            );
        }
        anyhow::Ok(())
    })?;

    let t = Instant::now();
    let report = engine.consent_report()?;
    println!(
        "ConsentReport: {:.1} s ({} month rows, {} customers, {} with an opt-out)",
        t.elapsed().as_secs_f64(),
        report.periods.len(),
        report.customers,
        report.customers_with_opt_out
    );

    // One erasure: crypto-shredding and purge, then the rewrite of the whole store.
    let t = Instant::now();
    let report = engine.erase(ids[0], "bench", "contact_bench erasure timing")?;
    println!(
        "Erase of {} ({} records): {:.1} s, store files {:.0} MB -> {:.0} MB, {} keys copied",
        report.entity,
        report.records.len(),
        t.elapsed().as_secs_f64(),
        report.purge.map_or(0, |p| p.bytes_before) as f64 / 1e6,
        report.purge.map_or(0, |p| p.bytes_after) as f64 / 1e6,
        report.purge.map_or(0, |p| p.keys_copied)
    );
    Ok(())
}
