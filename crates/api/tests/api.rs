//! Every RPC through a real tonic client against the service served in-process on
//! loopback, over an engine on a temporary store: answers, each error status, and each
//! role refusal.

use std::sync::Arc;

use cmdm_api::{Auth, CustomerHubClient, HubService, Role, TokenConfig, pb};
use cmdm_engine::{Engine, EngineConfig};
use cmdm_matching::{FuzzyMatcher, MatcherConfig, Model};
use cmdm_store::Store;
use tonic::transport::Channel;
use tonic::{Code, Request};

const SPOKE: &str = "spoke-token-0123456789";
const STEWARD: &str = "steward-token-0123456789";
const ADMIN: &str = "admin-token-0123456789";

struct Hub {
    addr: std::net::SocketAddr,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn serve(auth: Auth) -> Hub {
    let matcher = FuzzyMatcher::new(Model::default_person(), MatcherConfig::default()).unwrap();
    let engine = Arc::new(Engine::new(
        Store::temporary().unwrap(),
        Arc::new(matcher),
        EngineConfig::default(),
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(HubService::new(engine).into_server(auth))
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                async {
                    let _ = stopped.await;
                },
            ),
    );
    Hub { addr, _stop: stop }
}

fn tokens() -> Auth {
    let token = |token: &str, name: &str, role| TokenConfig {
        token: token.into(),
        name: name.into(),
        role,
    };
    Auth::with_tokens(&[
        token(SPOKE, "pos-system", Role::Spoke),
        token(STEWARD, "alice", Role::Steward),
        token(ADMIN, "root", Role::Admin),
    ])
    .unwrap()
}

async fn client(hub: &Hub) -> CustomerHubClient<Channel> {
    CustomerHubClient::connect(format!("http://{}", hub.addr))
        .await
        .unwrap()
}

fn as_<T>(token: &str, message: T) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

fn key(source: &str, subject: &str) -> Option<pb::SourceKey> {
    Some(pb::SourceKey {
        source: source.into(),
        subject: subject.into(),
    })
}

fn profile(id: &str, source: &str, subject: &str, data: serde_json::Value) -> pb::Event {
    pb::Event {
        id: id.into(),
        source: source.into(),
        r#type: "profile.upserted".into(),
        subject: subject.into(),
        time: "2026-01-01T10:00:00Z".into(),
        data_json: data.to_string(),
    }
}

/// web/w1 and pos/p1 land in the review band against each other; crm/c1 is a stranger.
fn events() -> Vec<pb::Event> {
    vec![
        profile(
            "1",
            "web",
            "w1",
            serde_json::json!({"given_name": "Jonathan", "family_name": "Smyth",
                "date_of_birth": "1980-02-01", "postcode": "SW1A 1AA", "phone": "01632 960001"}),
        ),
        profile(
            "2",
            "pos",
            "p1",
            serde_json::json!({"given_name": "Jon", "family_name": "Smyth", "postcode": "SW1A 1AA"}),
        ),
        profile(
            "3",
            "crm",
            "c1",
            serde_json::json!({"given_name": "Ann", "family_name": "Other", "email": "ann@example.org"}),
        ),
    ]
}

fn code<T: std::fmt::Debug>(result: Result<T, tonic::Status>) -> (Code, String) {
    let status = result.expect_err("the call should fail");
    (status.code(), status.message().to_owned())
}

#[tokio::test]
async fn every_rpc_answers_and_fails_precisely() {
    let hub = serve(tokens()).await;
    let mut c = client(&hub).await;

    // Publish: valid events applied, invalid ones named, redelivery a duplicate.
    let mut batch = events();
    batch.push(pb::Event {
        r#type: "consent.changed".into(),
        id: "bad".into(),
        data_json: r#"{"channel": "email", "status": "granted"}"#.into(),
        ..profile("x", "web", "w1", serde_json::json!({}))
    });
    batch.push(pb::Event {
        data_json: "{not json".into(),
        ..profile("y", "web", "w1", serde_json::json!({}))
    });
    let published = c
        .publish(as_(SPOKE, pb::PublishRequest { events: batch }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(published.applied, 3);
    assert_eq!(published.rejected.len(), 2, "{published:?}");
    assert_eq!(published.rejected[0].index, 3);
    assert!(
        published.rejected[0].reason.contains("purpose"),
        "{published:?}"
    );
    assert!(published.rejected[1].reason.contains("not JSON"));
    let again = c
        .publish(as_(SPOKE, pb::PublishRequest { events: events() }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((again.applied, again.duplicates), (0, 3));

    // Lookup and get.
    let web = c
        .lookup_by_source_key(as_(
            SPOKE,
            pb::LookupBySourceKeyRequest {
                source: "web".into(),
                subject: "w1".into(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .record
        .unwrap();
    let pos = c
        .lookup_by_source_key(as_(
            SPOKE,
            pb::LookupBySourceKeyRequest {
                source: "pos".into(),
                subject: "p1".into(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .record
        .unwrap();
    assert_ne!(web.golden_id, pos.golden_id);
    let got = c
        .get_golden_record(as_(
            SPOKE,
            pb::GetGoldenRecordRequest {
                golden_id: web.golden_id.clone(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.record.as_ref(), Some(&web));
    let (status, message) = code(
        c.get_golden_record(as_(
            SPOKE,
            pb::GetGoldenRecordRequest {
                golden_id: "G0000009999".into(),
                ..Default::default()
            },
        ))
        .await,
    );
    assert_eq!(status, Code::NotFound, "{message}");
    let (status, message) = code(
        c.get_golden_record(as_(
            SPOKE,
            pb::GetGoldenRecordRequest {
                golden_id: "42".into(),
                ..Default::default()
            },
        ))
        .await,
    );
    assert_eq!(status, Code::InvalidArgument);
    assert!(message.contains("golden_id"), "{message}");
    let (status, message) = code(
        c.get_golden_record(as_(
            SPOKE,
            pb::GetGoldenRecordRequest {
                golden_id: web.golden_id.clone(),
                as_of_time: "yesterday".into(),
                ..Default::default()
            },
        ))
        .await,
    );
    assert_eq!(status, Code::InvalidArgument);
    assert!(message.contains("as_of_time"), "{message}");
    let (status, _) = code(
        c.lookup_by_source_key(as_(
            SPOKE,
            pb::LookupBySourceKeyRequest {
                source: "web".into(),
                subject: "nobody".into(),
            },
        ))
        .await,
    );
    assert_eq!(status, Code::NotFound);

    // Search.
    let found = c
        .search(as_(
            SPOKE,
            pb::SearchRequest {
                full_name: "Jonathan Smyth".into(),
                postcode: "sw1a 1aa".into(),
                page_size: 1,
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(found.hits.len(), 1);
    assert_eq!(
        found.hits[0].record.as_ref().unwrap().golden_id,
        web.golden_id
    );
    assert!(found.total >= 2, "both Smyths are candidates: {found:?}");
    assert_eq!(found.next_page_token, "1");
    let next = c
        .search(as_(
            SPOKE,
            pb::SearchRequest {
                full_name: "Jonathan Smyth".into(),
                postcode: "sw1a 1aa".into(),
                page_size: 1,
                page_token: found.next_page_token.clone(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        next.hits[0].record.as_ref().unwrap().golden_id,
        pos.golden_id
    );
    let (status, _) = code(c.search(as_(SPOKE, pb::SearchRequest::default())).await);
    assert_eq!(status, Code::InvalidArgument);
    let (status, message) = code(
        c.search(as_(
            SPOKE,
            pb::SearchRequest {
                email: "a@b.c".into(),
                page_token: "zz".into(),
                ..Default::default()
            },
        ))
        .await,
    );
    assert_eq!(status, Code::InvalidArgument);
    assert!(message.contains("page_token"));

    // Tasks: a spoke may not list them; a steward may.
    let (status, message) = code(
        c.list_tasks(as_(SPOKE, pb::ListTasksRequest::default()))
            .await,
    );
    assert_eq!(status, Code::PermissionDenied);
    assert!(message.contains("steward"), "{message}");
    let tasks = c
        .list_tasks(as_(
            STEWARD,
            pb::ListTasksRequest {
                order_by: "score".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(tasks.total, 1, "{tasks:?}");
    let task = tasks.tasks[0].clone();
    assert_eq!(task.status, "open");
    let (status, _) = code(
        c.list_tasks(as_(
            STEWARD,
            pb::ListTasksRequest {
                status: "pending".into(),
                ..Default::default()
            },
        ))
        .await,
    );
    assert_eq!(status, Code::InvalidArgument);
    let shown = c
        .get_task(as_(
            STEWARD,
            pb::GetTaskRequest {
                task_id: task.task_id,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(shown.record.unwrap().attributes["given_name"], "Jon");
    assert_eq!(shown.entity_records.len(), 1);
    assert_eq!(shown.entity_records[0].attributes["given_name"], "Jonathan");
    assert_eq!(shown.comparisons.len(), 1);
    let (status, _) = code(
        c.get_task(as_(STEWARD, pb::GetTaskRequest { task_id: 999 }))
            .await,
    );
    assert_eq!(status, Code::NotFound);

    // Merge through the task: spokes may not; stewards may; twice is refused.
    let merge = |token: &'static str| {
        as_(
            token,
            pb::MergeRequest {
                task_id: task.task_id,
                comment: "same person, confirmed by phone".into(),
                ..Default::default()
            },
        )
    };
    let (status, _) = code(c.merge(merge(SPOKE)).await);
    assert_eq!(status, Code::PermissionDenied);
    let merged = c.merge(merge(STEWARD)).await.unwrap().into_inner();
    assert_eq!(merged.decision, "steward_merged");
    assert_eq!(merged.records[0].members.len(), 2);
    let (status, message) = code(c.merge(merge(STEWARD)).await);
    assert_eq!(status, Code::FailedPrecondition);
    assert!(message.contains("already resolved"), "{message}");
    let redirected = c
        .get_golden_record(as_(
            SPOKE,
            pb::GetGoldenRecordRequest {
                golden_id: pos.golden_id.clone(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(redirected.redirected_from, pos.golden_id);
    assert_eq!(redirected.record.unwrap().golden_id, web.golden_id);
    let as_of = c
        .get_golden_record(as_(
            SPOKE,
            pb::GetGoldenRecordRequest {
                golden_id: web.golden_id.clone(),
                as_of_seq: merged.seq - 1,
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .record
        .unwrap();
    assert_eq!(as_of.members.len(), 1, "before the merge: {as_of:?}");

    // Explain: the record was placed by the steward; the pair compares.
    let explained = c
        .explain(as_(
            SPOKE,
            pb::ExplainRequest {
                record: key("pos", "p1"),
                other: None,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(explained.golden_id, web.golden_id);
    assert_eq!(explained.comparisons.len(), 1);
    let pair = c
        .explain(as_(
            SPOKE,
            pb::ExplainRequest {
                record: key("web", "w1"),
                other: key("crm", "c1"),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(
        pair.summary.contains("below the review threshold") || pair.summary.contains("contradict"),
        "{}",
        pair.summary
    );
    assert!(pair.link_threshold > pair.review_threshold);
    let (status, message) = code(
        c.explain(as_(
            SPOKE,
            pb::ExplainRequest {
                record: key("web", ""),
                other: None,
            },
        ))
        .await,
    );
    assert_eq!(status, Code::InvalidArgument);
    assert!(message.contains("record"), "{message}");

    // Split pos/p1 out again, then keep the two apart; link refuses a no-op.
    let split = c
        .split(as_(
            STEWARD,
            pb::SplitRequest {
                record: key("pos", "p1"),
                comment: "different date of birth on the card".into(),
                task_id: 0,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(split.decision, "record_split");
    assert_eq!(
        split.records[1].golden_id, pos.golden_id,
        "the old id comes back"
    );
    let (status, _) = code(
        c.split(as_(
            STEWARD,
            pb::SplitRequest {
                record: key("pos", "p1"),
                ..Default::default()
            },
        ))
        .await,
    );
    assert_eq!(status, Code::FailedPrecondition);
    let kept = c
        .keep_apart(as_(
            STEWARD,
            pb::KeepApartRequest {
                golden_id: web.golden_id.clone(),
                other_golden_id: pos.golden_id.clone(),
                comment: "two people".into(),
                task_id: 0,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(kept.decision, "kept_apart");
    let (status, message) = code(
        c.keep_apart(as_(
            STEWARD,
            pb::KeepApartRequest {
                golden_id: web.golden_id.clone(),
                ..Default::default()
            },
        ))
        .await,
    );
    assert_eq!(status, Code::InvalidArgument);
    assert!(message.contains("other_golden_id"), "{message}");
    let (status, _) = code(
        c.link(as_(
            STEWARD,
            pb::LinkRequest {
                record: key("web", "w1"),
                golden_id: web.golden_id.clone(),
                ..Default::default()
            },
        ))
        .await,
    );
    assert_eq!(status, Code::FailedPrecondition);
    let (status, _) = code(
        c.link(as_(
            STEWARD,
            pb::LinkRequest {
                record: key("web", "nobody"),
                golden_id: web.golden_id.clone(),
                ..Default::default()
            },
        ))
        .await,
    );
    assert_eq!(status, Code::NotFound);
    let linked = c
        .link(as_(
            STEWARD,
            pb::LinkRequest {
                record: key("crm", "c1"),
                golden_id: web.golden_id.clone(),
                comment: "household account".into(),
                task_id: 0,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(linked.decision, "steward_linked");

    // Rematch: admin only; steward decisions hold.
    let (status, _) = code(c.rematch(as_(STEWARD, pb::RematchRequest {})).await);
    assert_eq!(status, Code::PermissionDenied);
    let rematch = c
        .rematch(as_(ADMIN, pb::RematchRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rematch.merged, 0);

    // History shows each step, with the steward's name and comment.
    let history = c
        .get_history(as_(
            SPOKE,
            pb::GetHistoryRequest {
                golden_id: pos.golden_id.clone(),
                record: None,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let steps: Vec<(&str, &str)> = history
        .entries
        .iter()
        .map(|e| (e.name.as_str(), e.by.as_str()))
        .collect();
    for step in [
        ("profile.upserted", "pos"),
        ("entity_created", "matcher"),
        ("review_opened", "matcher"),
        ("steward_merged", "alice"),
        ("record_split", "alice"),
        ("kept_apart", "alice"),
    ] {
        assert!(steps.contains(&step), "{step:?} missing from {steps:?}");
    }
    let record_history = c
        .get_history(as_(
            SPOKE,
            pb::GetHistoryRequest {
                golden_id: String::new(),
                record: key("crm", "c1"),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        record_history.entries.last().unwrap().why,
        "household account"
    );
    let (status, _) = code(
        c.get_history(as_(SPOKE, pb::GetHistoryRequest::default()))
            .await,
    );
    assert_eq!(status, Code::InvalidArgument);
}

#[tokio::test]
async fn tokens_are_required_and_checked() {
    let hub = serve(tokens()).await;
    let mut c = client(&hub).await;
    let request = || pb::LookupBySourceKeyRequest {
        source: "web".into(),
        subject: "w1".into(),
    };
    let (status, message) = code(c.lookup_by_source_key(Request::new(request())).await);
    assert_eq!(status, Code::Unauthenticated);
    assert!(message.contains("Bearer"), "{message}");
    let (status, message) = code(c.lookup_by_source_key(as_("wrong-token", request())).await);
    assert_eq!(status, Code::Unauthenticated);
    assert!(message.contains("unknown token"), "{message}");
    let mut basic = Request::new(request());
    basic
        .metadata_mut()
        .insert("authorization", "Basic abc".parse().unwrap());
    let (status, _) = code(c.lookup_by_source_key(basic).await);
    assert_eq!(status, Code::Unauthenticated);
    // Authenticated but absent.
    let (status, _) = code(c.lookup_by_source_key(as_(SPOKE, request())).await);
    assert_eq!(status, Code::NotFound);
    // Each steward action is refused to a spoke.
    let (status, _) = code(
        c.keep_apart(as_(SPOKE, pb::KeepApartRequest::default()))
            .await,
    );
    assert_eq!(status, Code::PermissionDenied);
    let (status, _) = code(c.split(as_(SPOKE, pb::SplitRequest::default())).await);
    assert_eq!(status, Code::PermissionDenied);
    let (status, _) = code(c.link(as_(SPOKE, pb::LinkRequest::default())).await);
    assert_eq!(status, Code::PermissionDenied);
    let (status, _) = code(
        c.get_task(as_(SPOKE, pb::GetTaskRequest { task_id: 1 }))
            .await,
    );
    assert_eq!(status, Code::PermissionDenied);
    // Short or repeated tokens are refused at configuration.
    let short = TokenConfig {
        token: "short".into(),
        name: "x".into(),
        role: Role::Admin,
    };
    assert!(Auth::with_tokens(&[short]).is_err());
}

#[tokio::test]
async fn an_open_hub_lets_every_caller_in_as_admin() {
    let hub = serve(Auth::open()).await;
    let mut c = client(&hub).await;
    c.publish(Request::new(pb::PublishRequest { events: events() }))
        .await
        .unwrap();
    let report = c
        .rematch(Request::new(pb::RematchRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(report.merged, 0);
}

fn consent_event(id: &str, source: &str, subject: &str, data: serde_json::Value) -> pb::Event {
    pb::Event {
        r#type: "consent.changed".into(),
        ..profile(id, source, subject, data)
    }
}

fn contact_question(channel: &str, purpose: &str) -> Option<pb::ContactQuestion> {
    Some(pb::ContactQuestion {
        channel: channel.into(),
        purpose: purpose.into(),
        topic: String::new(),
        at: "2026-06-01T12:00:00Z".into(),
    })
}

#[tokio::test]
async fn consent_contact_erasure_export_and_reports() {
    let hub = serve(tokens()).await;
    let mut c = client(&hub).await;
    let mut published = events();
    published.push(consent_event(
        "c1",
        "web",
        "w1",
        serde_json::json!({"purpose": "marketing", "channel": "email", "status": "granted",
                           "evidence": {"collection_point": "checkout", "text_version": "v7"}}),
    ));
    published.push(consent_event(
        "c2",
        "esp",
        "unsub",
        serde_json::json!({"purpose": "marketing", "channel": "sms", "status": "withdrawn",
                           "contact_point": "+44 1632 960001"}),
    ));
    let response = c
        .publish(as_(SPOKE, pb::PublishRequest { events: published }))
        .await
        .unwrap()
        .into_inner();
    assert!(response.rejected.is_empty(), "{:?}", response.rejected);
    let w1 = c
        .lookup_by_source_key(as_(
            SPOKE,
            pb::LookupBySourceKeyRequest {
                source: "web".into(),
                subject: "w1".into(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .record
        .unwrap()
        .golden_id;

    // Allowed, with its reason; by contact point, the withdrawal named the phone number.
    let check = |target, channel: &str| pb::CheckContactRequest {
        target: Some(target),
        question: contact_question(channel, "marketing"),
    };
    use pb::check_contact_request::Target;
    let email = c
        .check_contact(as_(SPOKE, check(Target::GoldenId(w1.clone()), "email")))
        .await
        .unwrap()
        .into_inner();
    assert!(email.allowed, "{email:?}");
    assert_eq!(email.reasons[0].code, "consent_granted");
    let sms = c
        .check_contact(as_(
            SPOKE,
            check(Target::ContactPoint("01632 960001".into()), "sms"),
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(!sms.allowed);
    assert_eq!(sms.reasons[0].code, "consent_withdrawn");
    let (status, message) = code(
        c.check_contact(as_(
            SPOKE,
            pb::CheckContactRequest {
                target: Some(Target::GoldenId(w1.clone())),
                question: contact_question("pigeon", "marketing"),
            },
        ))
        .await,
    );
    assert_eq!(status, Code::InvalidArgument);
    assert!(message.contains("question.channel"), "{message}");

    // The batch form streams verdicts in order; an unknown id carries its error.
    let mut stream = c
        .check_contact_batch(as_(
            SPOKE,
            pb::CheckContactBatchRequest {
                golden_ids: vec![w1.clone(), "G0000999999".into()],
                question: contact_question("email", "marketing"),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let mut verdicts = Vec::new();
    while let Some(chunk) = stream.message().await.unwrap() {
        verdicts.extend(chunk.verdicts);
    }
    assert_eq!(verdicts.len(), 2);
    assert!(verdicts[0].allowed);
    assert!(!verdicts[1].allowed && verdicts[1].error.contains("no golden record"));

    // Export for a steward, not a spoke.
    let (status, message) = code(
        c.export(as_(
            SPOKE,
            pb::ExportRequest {
                golden_id: w1.clone(),
            },
        ))
        .await,
    );
    assert_eq!(status, Code::PermissionDenied, "{message}");
    let export = c
        .export(as_(
            STEWARD,
            pb::ExportRequest {
                golden_id: w1.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    for expected in ["Jonathan", "checkout", "v7", "consent.changed"] {
        assert!(export.json.contains(expected), "export lacks {expected}");
    }
    let report = c
        .consent_report(as_(STEWARD, pb::ConsentReportRequest {}))
        .await
        .unwrap()
        .into_inner();
    let granted: u64 = report.periods.iter().map(|p| p.granted).sum();
    let withdrawn: u64 = report.periods.iter().map(|p| p.withdrawn).sum();
    assert_eq!((granted, withdrawn), (1, 1));

    // Erasure is for admins and needs a reason; afterwards the person is gone.
    let erase = |comment: &str| pb::EraseRequest {
        golden_id: w1.clone(),
        comment: comment.into(),
    };
    assert_eq!(
        code(c.erase(as_(STEWARD, erase("ticket 7"))).await).0,
        Code::PermissionDenied
    );
    assert_eq!(
        code(c.erase(as_(ADMIN, erase(""))).await).0,
        Code::InvalidArgument
    );
    let erased = c
        .erase(as_(ADMIN, erase("ticket 7")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(erased.golden_id, w1);
    assert!(!erased.records.is_empty());
    let (status, _) = code(
        c.get_golden_record(as_(
            SPOKE,
            pb::GetGoldenRecordRequest {
                golden_id: w1.clone(),
                ..Default::default()
            },
        ))
        .await,
    );
    assert_eq!(status, Code::NotFound);
    // A later event about the erased record is refused, with the reason.
    let late = c
        .publish(as_(
            SPOKE,
            pb::PublishRequest {
                events: vec![profile(
                    "9",
                    "web",
                    "w1",
                    serde_json::json!({"given_name": "J"}),
                )],
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(late.applied, 0);
    assert!(late.rejected[0].reason.contains("erased"), "{late:?}");
}
