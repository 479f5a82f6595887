//! End-to-end: spokes publish to the embedded broker, the hub runs in-process, reads go
//! through a real tonic client.

use std::collections::BTreeSet;
use std::time::Duration;

use cmdm_api::pb;
use cmdm_e2e::*;
use cmdm_store::TreeName;
use rdkafka::message::{Header, OwnedHeaders};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_spokes_make_one_golden_record_readable_over_grpc() {
    let broker = broker();
    let brokers = broker.bootstrap_servers().to_owned();
    let dir = tempfile::tempdir().unwrap();
    let hub = start(config(dir.path(), &brokers, "g1")).await;

    publish(&brokers, &[
        profile("w-1", "web/w1", "2026-11-20T10:00:00Z", json!({"given_name": "Jon", "family_name": "Smyth", "email": "Jon.Smyth@example.org"})),
        profile("p-1", "pos/p1", "2026-11-21T10:00:00Z", json!({"given_name": "John", "email": "jon.smyth@EXAMPLE.org", "postcode": "SW1A 1AA"})),
        profile("c-1", "crm/c1", "2026-11-21T11:00:00Z", json!({"given_name": "Ann", "email": "ann@example.org"})),
    ])
    .await;
    wait_for("three events applied", || applied(&hub) == 3).await;

    let jon = lookup(&hub, "pos/p1").await.unwrap();
    let members: Vec<String> = jon
        .members
        .iter()
        .map(|m| format!("{}/{}", m.source, m.subject))
        .collect();
    assert_eq!(members, vec!["pos/p1", "web/w1"]);
    let given = &jon.attributes["given_name"];
    assert_eq!(given.value, "John", "most recent by event time");
    assert_eq!(given.source.as_ref().unwrap().source, "pos");
    assert_eq!(
        jon.attributes["family_name"]
            .source
            .as_ref()
            .unwrap()
            .source,
        "web"
    );
    assert_eq!(jon.attributes["postcode"].value, "SW1A 1AA");

    let by_id = client(&hub)
        .await
        .get_golden_record(pb::GetGoldenRecordRequest {
            golden_id: jon.golden_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(by_id.record.unwrap(), jon);
    assert!(by_id.redirected_from.is_empty());

    let ann = lookup(&hub, "crm/c1").await.unwrap();
    assert_ne!(
        ann.golden_id, jon.golden_id,
        "a different e-mail is a second entity"
    );

    // A redelivered event changes nothing; a marker behind it proves it was consumed.
    let log_before = hub.engine().store().log_len().unwrap();
    publish(&brokers, &[
        profile("p-1", "pos/p1", "2026-11-21T10:00:00Z", json!({"given_name": "John", "email": "jon.smyth@EXAMPLE.org", "postcode": "SW1A 1AA"})),
        profile("m-1", "pos/p1-marker", "2026-11-22T10:00:00Z", json!({"given_name": "Mark"})),
    ])
    .await;
    wait_for("marker applied", || applied(&hub) == 4).await;
    assert_eq!(lookup(&hub, "pos/p1").await.unwrap(), jon);
    // The marker added one event and one entity-created decision, nothing else.
    assert_eq!(hub.engine().store().log_len().unwrap(), log_before + 2);

    // Errors name what is wrong.
    let missing = lookup(&hub, "pos/nobody").await.unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);
    let bad = client(&hub)
        .await
        .get_golden_record(pb::GetGoldenRecordRequest {
            golden_id: "42".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    assert!(bad.message().contains("golden_id"));

    // Standard health service.
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel(&hub).await);
    let status = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "cmdm.v1.CustomerHub".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        status.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );

    // Server reflection lists the services, so tools need no proto files.
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let mut reflection = ServerReflectionClient::new(channel(&hub).await);
    let ask = tonic_reflection::pb::v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = reflection
        .server_reflection_info(tokio_stream::iter(vec![ask]))
        .await
        .unwrap()
        .into_inner();
    let answer = answers.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
        panic!("unexpected reflection answer {answer:?}")
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(
        names.contains(&"cmdm.v1.CustomerHub".to_owned()),
        "{names:?}"
    );
    assert!(
        names.contains(&"grpc.health.v1.Health".to_owned()),
        "{names:?}"
    );

    // The change feed carries the golden record, keyed by its id.
    let feed = read_topic(&brokers, GOLDEN, 4);
    let jon_changes: Vec<Value> = feed
        .iter()
        .filter(|m| m.key.as_deref() == Some(jon.golden_id.as_str()))
        .map(|m| serde_json::from_slice(m.payload.as_deref().unwrap()).unwrap())
        .collect();
    let last = jon_changes.last().expect("golden record published");
    assert_eq!(last["type"], "upserted");
    assert_eq!(last["record"]["members"].as_array().unwrap().len(), 2);

    hub.shutdown().await.unwrap();
    let engine = cmdm_hub::open_engine(&config(dir.path(), &brokers, "g1")).unwrap();
    let report = cmdm_engine::rebuild::verify(&engine).unwrap();
    assert!(report.is_identical(), "{:?}", report.differences);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_goes_to_the_dead_letter_topic_and_nothing_valid_is_lost() {
    let broker = broker();
    let brokers = broker.bootstrap_servers().to_owned();
    let dir = tempfile::tempdir().unwrap();
    let hub = start(config(dir.path(), &brokers, "g2")).await;
    let producer = producer(&brokers);
    let attrs = |id: &str, kind: &str| {
        OwnedHeaders::new()
            .insert(Header {
                key: "ce_id",
                value: Some(id),
            })
            .insert(Header {
                key: "ce_source",
                value: Some("web"),
            })
            .insert(Header {
                key: "ce_subject",
                value: Some("w1"),
            })
            .insert(Header {
                key: "ce_type",
                value: Some(kind),
            })
            .insert(Header {
                key: "ce_time",
                value: Some("2026-11-23T10:00:00Z"),
            })
    };
    // All on one key, so one partition: the bad ones sit between the good ones.
    let key = "web/w1";
    publish(
        &brokers,
        &[profile(
            "ok-1",
            key,
            "2026-11-23T09:00:00Z",
            json!({"given_name": "Ann"}),
        )],
    )
    .await;
    publish_raw(
        &producer,
        key,
        Some(b"{not json"),
        attrs("bad-1", "profile.upserted"),
    )
    .await;
    let no_id = OwnedHeaders::new()
        .insert(Header {
            key: "ce_source",
            value: Some("web"),
        })
        .insert(Header {
            key: "ce_type",
            value: Some("profile.upserted"),
        });
    publish_raw(&producer, key, Some(b"{}"), no_id).await;
    publish_raw(
        &producer,
        key,
        Some(b"{}"),
        attrs("bad-3", "profile.exploded"),
    )
    .await;
    let big = format!("{{\"note\": \"{}\"}}", "x".repeat(8000));
    publish_raw(
        &producer,
        key,
        Some(big.as_bytes()),
        attrs("bad-4", "profile.upserted"),
    )
    .await;
    let consent = br#"{"channel":"email","status":"granted"}"#;
    publish_raw(
        &producer,
        key,
        Some(consent),
        attrs("bad-5", "consent.changed"),
    )
    .await;
    let structured = br#"{"id":"bad-6","type":"profile.upserted","subject":"w1","time":"2026-11-23T10:00:00Z","data":{}}"#;
    publish_raw(&producer, key, Some(structured), OwnedHeaders::new()).await;
    let good_structured = br#"{"specversion":"1.0","id":"ok-2","source":"web","type":"profile.upserted","subject":"w1","time":"2026-11-23T11:00:00Z","data":{"email":"ann@example.org"}}"#;
    publish_raw(&producer, key, Some(good_structured), OwnedHeaders::new()).await;

    wait_for("both valid events applied", || applied(&hub) == 2).await;
    let ann = lookup(&hub, key).await.unwrap();
    assert_eq!(ann.attributes["given_name"].value, "Ann");
    assert_eq!(ann.attributes["email"].value, "ann@example.org");

    let dead = read_topic(&brokers, DLQ, 6);
    assert_eq!(dead.len(), 6, "{dead:?}");
    let classes: Vec<&str> = dead
        .iter()
        .map(|m| m.headers["cmdm_dlq_error_class"].as_str())
        .collect();
    assert_eq!(
        classes,
        vec![
            "undecodable",
            "missing-attribute",
            "unknown-type",
            "oversized",
            "invalid",
            "missing-attribute"
        ]
    );
    let offsets: BTreeSet<i64> = dead
        .iter()
        .map(|m| m.headers["cmdm_dlq_original_offset"].parse().unwrap())
        .collect();
    assert_eq!(
        offsets.len(),
        6,
        "each dead letter names its own original offset"
    );
    for m in &dead {
        assert_eq!(m.headers["cmdm_dlq_original_topic"], EVENTS);
        assert!(!m.headers["cmdm_dlq_reason"].is_empty());
        assert_eq!(m.key.as_deref(), Some(key), "the original key is kept");
    }
    assert_eq!(
        dead[0].payload.as_deref(),
        Some(&b"{not json"[..]),
        "the original payload is kept"
    );
    assert!(dead[4].headers["cmdm_dlq_reason"].contains("purpose"));

    // The metrics endpoint counts the same, over plain HTTP as Prometheus scrapes it
    // (metrics follow the flush that follows the commit: poll briefly).
    let expected = [
        "cmdm_ingest_messages_total{outcome=\"dead_lettered\"} 6".to_owned(),
        format!(
            "cmdm_ingest_messages_total{{outcome=\"applied\"}} {}",
            applied(&hub)
        ),
        "cmdm_ingest_dead_letters_total{class=\"missing-attribute\"} 2".to_owned(),
        "cmdm_ingest_dead_letters_total{class=\"oversized\"} 1".to_owned(),
        "cmdm_ingest_dead_letters_total{class=\"undecodable\"} 1".to_owned(),
        "cmdm_ingest_apply_seconds_count".to_owned(),
        "cmdm_ingest_batch_messages_bucket".to_owned(),
    ];
    let started = std::time::Instant::now();
    loop {
        let (status, body) = scrape(hub.metrics_addr(), "/metrics").await;
        assert!(status.contains("200"), "{status}");
        let missing: Vec<&String> = expected.iter().filter(|l| !body.contains(*l)).collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "missing {missing:?} in\n{body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, _) = scrape(hub.metrics_addr(), "/nothing").await;
    assert!(status.contains("404"), "{status}");
    hub.shutdown().await.unwrap();
}

/// Spokes' events with shared e-mails and phones, so that entities link and merge.
fn workload(range: std::ops::Range<usize>) -> Vec<Spoke> {
    let sources = ["web", "pos", "crm", "callcenter"];
    range
        .map(|i| {
            let person = i % 37;
            let source = sources[i % sources.len()];
            let mut data = json!({"given_name": format!("Person{person}"), "seen": i.to_string()});
            if i % 3 != 0 {
                data["email"] = json!(format!("person{person}@example.org"));
            }
            if i % 2 == 0 {
                data["phone"] = json!(format!("01632 96{:04}", person));
            }
            let time = format!("2026-11-{:02}T{:02}:{:02}:00Z", 1 + i % 28, i % 24, i % 60);
            profile(
                &format!("ev-{i}"),
                &format!("{source}/r{}", i % 150),
                &time,
                data,
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_hub_restarts_and_replays_to_the_state_of_a_clean_run() {
    let broker = broker();
    let brokers = broker.bootstrap_servers().to_owned();
    let dir = tempfile::tempdir().unwrap();
    let first = workload(0..400);
    let second = workload(400..600);
    publish(&brokers, &first).await;

    // Crash part-way through the first backlog.
    let hub = start(config(dir.path(), &brokers, "crash")).await;
    wait_for("some events applied", || applied(&hub) >= 50).await;
    hub.kill().await;

    publish(&brokers, &second).await;
    let hub = start(config(dir.path(), &brokers, "crash")).await;
    wait_for("all 600 events applied", || applied(&hub) == 600).await;
    let recovered = canonical(&hub);
    let bytes_after_recovery = dump(&hub);

    // Crash again, lose Kafka's and the store's positions, replay everything from the
    // start with a new group: every message is a redelivery and changes nothing.
    hub.kill().await;
    {
        let engine = cmdm_hub::open_engine(&config(dir.path(), &brokers, "crash")).unwrap();
        engine.store().tree(TreeName::Offsets).clear().unwrap();
        engine.store().flush_blocking().unwrap();
    }
    let hub = start(config(dir.path(), &brokers, "replay-all")).await;
    let replayed_offsets = || {
        (0..PARTITIONS)
            .filter_map(|p| hub.engine().stored_offset(EVENTS, p).unwrap())
            .sum::<i64>()
    };
    wait_for("every message consumed again", || replayed_offsets() == 600).await;
    let mut replayed = dump(&hub);
    let mut expected = bytes_after_recovery.clone();
    // Only the stored offsets may differ (they were cleared and rewritten).
    replayed.retain(|(tree, _, _)| *tree != "offsets");
    expected.retain(|(tree, _, _)| *tree != "offsets");
    assert_eq!(
        replayed, expected,
        "replaying the same messages changed the state"
    );
    hub.shutdown().await.unwrap();

    // A clean, uninterrupted run over the same topic reaches the same state.
    let clean_dir = tempfile::tempdir().unwrap();
    let clean = start(config(clean_dir.path(), &brokers, "clean")).await;
    wait_for("clean run applied all", || applied(&clean) == 600).await;
    assert_eq!(canonical(&clean), recovered);
    clean.shutdown().await.unwrap();

    let engine = cmdm_hub::open_engine(&config(dir.path(), &brokers, "crash")).unwrap();
    assert!(
        cmdm_engine::rebuild::verify(&engine)
            .unwrap()
            .is_identical()
    );
}

/// Synthetic people (with a few duplicates), one event each, from the web shop.
fn people(range: std::ops::Range<usize>) -> Vec<Spoke> {
    let all = cmdm_matching::synth::generate(180, 0.12, 11);
    range
        .map(|i| {
            profile(
                &format!("o-{i}"),
                &format!("web/o{i}"),
                "2026-11-23T10:00:00Z",
                json!(all[i].attributes),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_outage_pauses_the_hub_and_loses_nothing() {
    let broker = broker();
    let brokers = broker.bootstrap_servers().to_owned();
    let dir = tempfile::tempdir().unwrap();
    let hub = start(config(dir.path(), &brokers, "outage")).await;

    publish(&brokers, &people(0..100)).await;
    wait_for("the first events applied", || applied(&hub) == 100).await;

    broker.set_down(true).unwrap();
    // The spokes keep publishing: their client holds the events until the broker is back.
    let spokes = {
        let brokers = brokers.clone();
        tokio::spawn(async move { publish(&brokers, &people(100..200)).await })
    };
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        applied(&hub),
        100,
        "nothing arrives while the broker is down"
    );
    assert!(!spokes.is_finished(), "the spokes wait for the broker");

    broker.set_down(false).unwrap();
    spokes.await.unwrap();
    wait_for("every event applied after the outage", || {
        applied(&hub) == 200
    })
    .await;

    // The change feed caught up too: every golden record is on it, none lost.
    let entities = hub.engine().store().tree(TreeName::Entities).len();
    assert!(entities > 150, "{entities} entities");
    let started = std::time::Instant::now();
    let mut want = entities;
    loop {
        // Entities changed more than once have several messages: read more each round.
        let feed = read_topic(&brokers, GOLDEN, want);
        want += entities;
        let ids: BTreeSet<String> = feed.iter().filter_map(|m| m.key.clone()).collect();
        if ids.len() >= entities {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{} of {entities} golden records on the feed ({} messages read); metrics:\n{}",
            ids.len(),
            feed.len(),
            hub.metrics().render()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Every component kept running through the outage: the stop is clean.
    hub.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_steward_resolves_a_review_task_that_kafka_ingest_opened() {
    let broker = broker();
    let brokers = broker.bootstrap_servers().to_owned();
    let dir = tempfile::tempdir().unwrap();
    let hub = start(config(dir.path(), &brokers, "steward")).await;
    // One after the other, so the web record's entity is the older (surviving) one.
    let web_profile = json!({"given_name": "Jonathan", "family_name": "Smyth",
        "date_of_birth": "1980-02-01", "postcode": "SW1A 1AA", "phone": "01632 960001"});
    let pos_profile = json!({"given_name": "Jon", "family_name": "Smyth", "postcode": "SW1A 1AA"});
    publish(
        &brokers,
        &[profile(
            "w-1",
            "web/w1",
            "2026-11-20T10:00:00Z",
            web_profile,
        )],
    )
    .await;
    wait_for("first event applied", || applied(&hub) == 1).await;
    publish(
        &brokers,
        &[profile(
            "p-1",
            "pos/p1",
            "2026-11-21T10:00:00Z",
            pos_profile,
        )],
    )
    .await;
    wait_for("two events applied", || applied(&hub) == 2).await;
    let web = lookup(&hub, "web/w1").await.unwrap().golden_id;
    let pos = lookup(&hub, "pos/p1").await.unwrap().golden_id;
    assert_ne!(web, pos);

    let mut c = client(&hub).await;
    let tasks = c
        .list_tasks(pb::ListTasksRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(tasks.total, 1, "ingest opened one review task: {tasks:?}");
    let task = tasks.tasks[0].task_id;
    let comment = |text: &str| text.to_owned();
    c.merge(pb::MergeRequest {
        task_id: task,
        comment: comment("same phone on file"),
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(lookup(&hub, "pos/p1").await.unwrap().golden_id, web);
    c.split(pb::SplitRequest {
        record: Some(pb::SourceKey {
            source: "pos".into(),
            subject: "p1".into(),
        }),
        comment: comment("a different Jon"),
        task_id: 0,
    })
    .await
    .unwrap();
    assert_eq!(
        lookup(&hub, "pos/p1").await.unwrap().golden_id,
        pos,
        "its id comes back"
    );
    c.keep_apart(pb::KeepApartRequest {
        golden_id: web.clone(),
        other_golden_id: pos.clone(),
        comment: comment("father and son"),
        task_id: 0,
    })
    .await
    .unwrap();
    c.rematch(pb::RematchRequest {}).await.unwrap();
    // A record like both, from a third spoke, joins one of them at most.
    publish(&brokers, &[profile("c-1", "crm/c1", "2026-11-22T10:00:00Z", json!({"given_name": "Jonathan",
        "family_name": "Smyth", "date_of_birth": "1980-02-01", "postcode": "SW1A 1AA", "phone": "01632 960001"}))])
    .await;
    wait_for("third event applied", || applied(&hub) == 3).await;
    assert_ne!(
        lookup(&hub, "pos/p1").await.unwrap().golden_id,
        lookup(&hub, "web/w1").await.unwrap().golden_id,
        "the steward's decisions hold"
    );

    let history = c
        .get_history(pb::GetHistoryRequest {
            golden_id: pos.clone(),
            record: None,
        })
        .await
        .unwrap()
        .into_inner();
    let steps: Vec<(String, String)> = history
        .entries
        .iter()
        .map(|e| (e.name.clone(), e.why.clone()))
        .collect();
    for (step, why) in [
        ("steward_merged", "same phone on file"),
        ("record_split", "a different Jon"),
        ("kept_apart", "father and son"),
    ] {
        assert!(
            steps.contains(&(step.to_owned(), why.to_owned())),
            "{step} missing from {steps:?}"
        );
    }
    // The change feed tells the spokes: merged, then split out again.
    let mut kinds = Vec::new();
    wait_for("merged and split on the feed", || {
        // upserted w1, p1; merged + upserted; split + upserted; upserted c1.
        kinds = read_topic(&brokers, GOLDEN, 7)
            .into_iter()
            .filter(|m| m.key.as_deref() == Some(pos.as_str()))
            .map(|m| {
                let v: Value = serde_json::from_slice(m.payload.as_deref().unwrap()).unwrap();
                v["type"].as_str().unwrap().to_owned()
            })
            .collect();
        kinds.contains(&"merged".to_owned()) && kinds.contains(&"split".to_owned())
    })
    .await;
    hub.shutdown().await.unwrap();
    let engine = cmdm_hub::open_engine(&config(dir.path(), &brokers, "steward")).unwrap();
    let report = cmdm_engine::rebuild::verify(&engine).unwrap();
    assert!(report.is_identical(), "{:?}", report.differences);
}

#[tokio::test]
async fn with_a_certificate_the_api_speaks_tls_and_checks_tokens() {
    let broker = broker();
    let brokers = broker.bootstrap_servers().to_owned();
    let dir = tempfile::tempdir().unwrap();
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert = certified.cert.pem();
    let (cert_file, key_file) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_file, &cert).unwrap();
    std::fs::write(&key_file, certified.signing_key.serialize_pem()).unwrap();
    let mut config = config(&dir.path().join("data"), &brokers, "tls");
    config.api.tls_cert = Some(cert_file);
    config.api.tls_key = Some(key_file);
    config.api.tokens = vec![cmdm_api::TokenConfig {
        token: "a-spoke-token-of-some-length".into(),
        name: "pos".into(),
        role: cmdm_api::Role::Spoke,
    }];
    let hub = start(config).await;
    let port = hub.grpc_addr().port();

    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(&cert))
        .domain_name("localhost");
    let channel = tonic::transport::Channel::from_shared(format!("https://localhost:{port}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .expect("a TLS connection with the hub's certificate");
    let mut c = cmdm_api::CustomerHubClient::new(channel);
    let request = || pb::LookupBySourceKeyRequest {
        source: "pos".into(),
        subject: "nobody".into(),
    };
    let refused = c.lookup_by_source_key(request()).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    let mut with_token = tonic::Request::new(request());
    with_token.metadata_mut().insert(
        "authorization",
        "Bearer a-spoke-token-of-some-length".parse().unwrap(),
    );
    let answer = c.lookup_by_source_key(with_token).await.unwrap_err();
    assert_eq!(
        answer.code(),
        tonic::Code::NotFound,
        "authenticated over TLS"
    );

    // Plaintext gets no answer from a TLS listener.
    let plain = tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect()
        .await;
    if let Ok(channel) = plain {
        let result = cmdm_api::CustomerHubClient::new(channel)
            .lookup_by_source_key(request())
            .await;
        assert!(result.is_err(), "plaintext must not be served");
    }
    hub.shutdown().await.unwrap();
}

/// Event ids in a hub's log.
fn logged_events(hub: &cmdm_hub::RunningHub) -> BTreeSet<String> {
    hub.engine()
        .store()
        .log()
        .filter_map(|entry| {
            let (_, bytes) = entry.unwrap();
            match cmdm_domain::LogEntry::from_stored(&bytes).unwrap() {
                cmdm_domain::LogEntry::Event(event) => Some(event.id),
                cmdm_domain::LogEntry::Decision(_) => None,
            }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_hub_joining_the_group_takes_partitions_and_nothing_is_lost() {
    let broker = broker();
    let brokers = broker.bootstrap_servers().to_owned();
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = start(config(dir_a.path(), &brokers, "rebalance")).await;
    publish(&brokers, &people(0..90)).await;
    wait_for("the first hub applied everything", || applied(&a) == 90).await;

    // A second member joins while the spokes keep publishing: the group rebalances, the
    // first hub releases partitions (with whatever it had in flight for them) and the
    // second consumes them from the committed offsets.
    let spokes = {
        let brokers = brokers.clone();
        tokio::spawn(async move {
            for chunk in (90..180).step_by(10) {
                publish(&brokers, &people(chunk..chunk + 10)).await;
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        })
    };
    let b = start(config(dir_b.path(), &brokers, "rebalance")).await;
    spokes.await.unwrap();
    let all: BTreeSet<String> = (0..180).map(|i| format!("o-{i}")).collect();
    wait_for("every event applied by one hub or the other", || {
        let seen: BTreeSet<String> = logged_events(&a)
            .union(&logged_events(&b))
            .cloned()
            .collect();
        seen == all
    })
    .await;
    assert!(applied(&b) > 0, "the second hub was given partitions");
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

/// Files under `dir` whose bytes contain `needle` (ASCII case-insensitive).
fn files_containing(dir: &std::path::Path, needle: &str) -> Vec<std::path::PathBuf> {
    let needle = needle.to_ascii_lowercase().into_bytes();
    let mut found = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(path) = stack.pop() {
        if path.is_dir() {
            stack.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
        } else if std::fs::read(&path)
            .unwrap()
            .to_ascii_lowercase()
            .windows(needle.len())
            .any(|w| w == needle.as_slice())
        {
            found.push(path);
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erased_person_is_gone_from_every_file_and_from_the_compacted_feed() {
    let broker = broker();
    let brokers = broker.bootstrap_servers().to_owned();
    let dir = tempfile::tempdir().unwrap();
    let hub = start(config(dir.path(), &brokers, "g-erase")).await;
    let quill = json!({"given_name": "Quillon", "family_name": "Vanderzee",
                       "email": "quillon.vanderzee@example.org", "phone": "01632 960777"});
    publish(&brokers, &[
        profile("q-1", "web/q1", "2026-11-20T10:00:00Z", quill.clone()),
        profile("q-2", "pos/q2", "2026-11-21T10:00:00Z", json!({"given_name": "Quillon", "family_name": "Vanderzee", "email": "Quillon.Vanderzee@example.org"})),
        profile("a-1", "crm/a1", "2026-11-21T11:00:00Z", json!({"given_name": "Ann", "email": "ann@example.org"})),
    ])
    .await;
    wait_for("three events applied", || applied(&hub) == 3).await;
    let id = lookup(&hub, "web/q1").await.unwrap().golden_id;
    assert_eq!(lookup(&hub, "pos/q2").await.unwrap().golden_id, id);
    let ann = lookup(&hub, "crm/a1").await.unwrap();

    let erased = client(&hub)
        .await
        .erase(pb::EraseRequest {
            golden_id: id.clone(),
            comment: "erasure request 17".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(erased.records.len(), 2);

    // The feed ends the entity with a tombstone; a spoke rebuilding its copy from the
    // topic (last value per key, a tombstone deletes) holds nothing of the person.
    let mut feed = Vec::new();
    wait_for("tombstone published", || {
        feed = read_topic(&brokers, GOLDEN, usize::MAX);
        feed.iter().any(|m| {
            m.key.as_deref() == Some(id.as_str())
                && m.payload.is_none()
                && m.headers.get("cmdm_change_type").map(String::as_str) == Some("erased")
        })
    })
    .await;
    let mut copy: std::collections::BTreeMap<String, Vec<u8>> = Default::default();
    for m in &feed {
        let key = m.key.clone().unwrap();
        match &m.payload {
            Some(value) => copy.insert(key, value.clone()),
            None => copy.remove(&key),
        };
    }
    assert!(!copy.contains_key(&id));
    assert!(copy.contains_key(&ann.golden_id));
    for value in copy.values() {
        assert!(
            !String::from_utf8_lossy(value)
                .to_lowercase()
                .contains("vanderzee")
        );
    }

    // A later event about an erased record goes to the dead letter topic, class `erased`.
    publish(
        &brokers,
        &[profile("q-3", "web/q1", "2026-11-22T10:00:00Z", quill)],
    )
    .await;
    let mut dead = Vec::new();
    wait_for("erased record dead-lettered", || {
        dead = read_topic(&brokers, DLQ, 1);
        !dead.is_empty()
    })
    .await;
    assert_eq!(dead[0].headers[cmdm_kafka::dlq_headers::CLASS], "erased");

    hub.shutdown().await.unwrap();
    for needle in ["vanderzee", "quillon", "960777"] {
        assert_eq!(
            files_containing(dir.path(), needle),
            Vec::<std::path::PathBuf>::new(),
            "`{needle}` is still in the data directory"
        );
    }
    let engine = cmdm_hub::open_engine(&config(dir.path(), &brokers, "g-erase")).unwrap();
    let report = cmdm_engine::rebuild::verify(&engine).unwrap();
    assert!(report.is_identical(), "{:?}", report.differences);
}
