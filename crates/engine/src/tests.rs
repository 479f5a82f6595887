//! Engine behaviour on a temporary store: linking, merging, idempotency, rebuild.

use std::sync::Arc;

use cmdm_domain::{Decision, GoldenId, InboundEvent, OutboundKind, ReviewStatus, SourceKey};
use cmdm_matching::{FuzzyMatcher, MatcherConfig, Model, Survivorship};
use cmdm_store::{Store, TreeName};
use serde_json::{Value, json};

use crate::rebuild::verify;
use crate::{
    AsOf, Engine, EngineConfig, EngineError, SearchQuery, SourceOffset, StewardAction,
    StewardRequest, TaskAnswer,
};

pub(crate) fn matcher() -> FuzzyMatcher {
    FuzzyMatcher::new(Model::default_person(), MatcherConfig::default()).unwrap()
}

pub(crate) fn engine(store: Store) -> Engine {
    let config = EngineConfig {
        survivorship: Survivorship {
            source_trust: vec!["crm".into(), "web".into()],
            ..Survivorship::default()
        },
        ..EngineConfig::default()
    };
    Engine::new(store, Arc::new(matcher()), config)
}

pub(crate) fn event(
    id: &str,
    source: &str,
    subject: &str,
    kind: &str,
    time: &str,
    data: Value,
) -> InboundEvent {
    InboundEvent::from_parts(
        Some(id),
        Some(source),
        Some(kind),
        Some(subject),
        Some(time),
        Some(&data),
    )
    .unwrap()
}

pub(crate) fn profile(
    id: &str,
    source: &str,
    subject: &str,
    time: &str,
    data: Value,
) -> InboundEvent {
    event(id, source, subject, "profile.upserted", time, data)
}

/// Every key and value of `names` in `store`, tree by tree, to compare two stores.
fn trees(store: &Store, names: &[TreeName]) -> Vec<(&'static str, Vec<u8>, Vec<u8>)> {
    names
        .iter()
        .flat_map(|t| {
            store.tree(*t).iter().map(move |i| {
                let (k, v) = i.unwrap();
                (t.as_str(), k.to_vec(), v.to_vec())
            })
        })
        .collect()
}

pub(crate) fn key(s: &str) -> SourceKey {
    s.parse().unwrap()
}

fn mixed_workload() -> Vec<InboundEvent> {
    vec![
        profile(
            "1",
            "web",
            "w1",
            "2026-01-01T10:00:00Z",
            json!({"given_name": "Jon", "family_name": "Smyth", "email": "Jon.Smyth@Example.org"}),
        ),
        profile(
            "2",
            "pos",
            "p9",
            "2026-01-02T10:00:00Z",
            json!({"given_name": "John", "email": "jon.smyth@example.org", "phone": "01632 960001"}),
        ),
        profile(
            "3",
            "crm",
            "c7",
            "2026-01-03T10:00:00Z",
            json!({"given_name": "Ann", "email": "ann@example.org"}),
        ),
        profile(
            "4",
            "callcenter",
            "k1",
            "2026-01-04T10:00:00Z",
            json!({"given_name": "Annie", "phone": "+44 1632 960002"}),
        ),
        // Shares Ann's e-mail and Annie's phone: the two entities merge.
        profile(
            "5",
            "support",
            "s1",
            "2026-01-05T10:00:00Z",
            json!({"email": "ANN@example.org", "phone": "01632960002"}),
        ),
        event(
            "6",
            "web",
            "w1",
            "consent.changed",
            "2026-01-06T10:00:00Z",
            json!({"purpose": "marketing", "channel": "email", "status": "granted"}),
        ),
        event(
            "7",
            "pos",
            "p9",
            "consent.changed",
            "2026-01-07T10:00:00Z",
            json!({"purpose": "marketing", "channel": "email", "status": "withdrawn"}),
        ),
        event(
            "8",
            "web",
            "w1",
            "preference.changed",
            "2026-01-06T11:00:00Z",
            json!({"topics": {"offers": true}}),
        ),
        event(
            "9",
            "pos",
            "p9",
            "contact.recorded",
            "2026-01-08T10:00:00Z",
            json!({"channel": "sms", "purpose": "receipts"}),
        ),
        // A late, older e-mail never overrides the newer one.
        profile(
            "10",
            "web",
            "w1",
            "2025-12-01T10:00:00Z",
            json!({"email": "old@example.org", "given_name": "Jonathan"}),
        ),
        profile(
            "11",
            "mail",
            "m1",
            "2026-01-09T10:00:00Z",
            json!({"given_name": "Zed", "email": "zed@example.org"}),
        ),
        event(
            "12",
            "mail",
            "m1",
            "profile.deleted",
            "2026-01-10T10:00:00Z",
            json!(null),
        ),
    ]
}

#[test]
fn two_spokes_with_the_same_email_make_one_golden_record_with_provenance() {
    let engine = engine(Store::temporary().unwrap());
    let report = engine.apply_batch(&mixed_workload()[..3], &[]).unwrap();
    assert_eq!(report.applied, 3);
    let jon = engine.lookup(&key("web/w1")).unwrap().unwrap();
    let pos = engine.lookup(&key("pos/p9")).unwrap().unwrap();
    assert_eq!(jon.id, pos.id);
    assert_eq!(jon.members, vec![key("pos/p9"), key("web/w1")]);
    // Most recent by event time wins, and names its source record.
    assert_eq!(jon.attributes["given_name"].value, "John");
    assert_eq!(jon.attributes["given_name"].source, key("pos/p9"));
    assert_eq!(jon.attributes["family_name"].source, key("web/w1"));
    let ann = engine.lookup(&key("crm/c7")).unwrap().unwrap();
    assert_ne!(ann.id, jon.id, "a different e-mail is a different entity");
}

#[test]
fn a_record_matching_two_entities_merges_them_and_the_old_id_redirects() {
    let engine = engine(Store::temporary().unwrap());
    engine.apply_batch(&mixed_workload()[..4], &[]).unwrap();
    let ann = engine.lookup(&key("crm/c7")).unwrap().unwrap().id;
    let annie = engine.lookup(&key("callcenter/k1")).unwrap().unwrap().id;
    assert_ne!(ann, annie);
    engine.apply_batch(&mixed_workload()[4..5], &[]).unwrap();
    let merged = engine.lookup(&key("callcenter/k1")).unwrap().unwrap();
    assert_eq!(merged.id, ann.min(annie), "the older id survives");
    let via_old = engine.golden(ann.max(annie)).unwrap().unwrap();
    assert_eq!(via_old.record.id, merged.id);
    assert_eq!(via_old.redirected_from, Some(ann.max(annie)));
    assert_eq!(merged.members.len(), 3);
    engine.store().flush_blocking().unwrap();
    let outbox = engine.outbox(100).unwrap();
    assert!(
        outbox.iter().any(
            |e| e.change.golden_id == ann.max(annie) && e.change.survivor_id == Some(merged.id)
        )
    );
}

#[test]
fn redelivered_events_change_nothing() {
    let engine = engine(Store::temporary().unwrap());
    let events = mixed_workload();
    engine.apply_batch(&events, &[]).unwrap();
    let before = dump(engine.store());
    let report = engine.apply_batch(&events, &[]).unwrap();
    assert_eq!(report.applied, 0);
    assert_eq!(report.duplicates, events.len());
    assert_eq!(dump(engine.store()), before);
}

/// A record's first event counts for dedup with the record's data key, not in the dedup
/// tree; an event with the same source and id is a duplicate all the same, whatever its
/// subject, in the same batch, in a later one, after a restart and after an erasure.
#[test]
fn a_records_first_event_counts_for_dedup_with_its_key() {
    let dedup = |store: &Store, id: &str| {
        store
            .get(TreeName::Dedup, format!("web\0{id}").as_bytes())
            .unwrap()
    };
    let ann = |id: &str, subject: &str| {
        profile(
            id,
            "web",
            subject,
            "2026-01-01T10:00:00Z",
            json!({"given_name": "Ann", "family_name": "Lee", "email": format!("{subject}@example.org")}),
        )
    };
    let store = Store::temporary().unwrap();
    let first = engine(store.clone());
    let report = first
        .apply_batch(&[ann("1", "w1"), ann("1", "w1"), ann("1", "w2")], &[])
        .unwrap();
    assert_eq!((report.applied, report.duplicates), (1, 2));
    assert_eq!(dedup(&store, "1"), None, "counted with the key instead");
    assert!(store.get(TreeName::Keys, b"web/w1").unwrap().unwrap().len() > 32);
    let report = first
        .apply_batch(&[ann("1", "w3"), ann("2", "w1")], &[])
        .unwrap();
    assert_eq!((report.applied, report.duplicates), (1, 1));
    assert!(
        dedup(&store, "2").is_some(),
        "a later event has its own entry"
    );
    assert!(verify(&first).unwrap().is_identical());
    drop(first);

    // A restarted engine tells them from the keys.
    let restarted = engine(store.clone());
    let report = restarted.apply_batch(&[ann("1", "w4")], &[]).unwrap();
    assert_eq!((report.applied, report.duplicates), (0, 1));

    // The erasure deletes the key: the first event moves to the dedup tree.
    let entity = restarted.lookup(&key("web/w1")).unwrap().unwrap().id;
    restarted.erase(entity, "dpo", "request 1").unwrap();
    assert!(store.get(TreeName::Keys, b"web/w1").unwrap().is_none());
    assert!(dedup(&store, "1").is_some());
    let report = restarted
        .apply_batch(&[ann("1", "w1"), ann("1", "w5")], &[])
        .unwrap();
    assert_eq!((report.applied, report.duplicates), (0, 2));
    assert!(verify(&restarted).unwrap().is_identical());
}

#[test]
fn declarations_and_late_events_follow_event_time() {
    let engine = engine(Store::temporary().unwrap());
    engine.apply_batch(&mixed_workload(), &[]).unwrap();
    let jon = engine.lookup(&key("web/w1")).unwrap().unwrap();
    assert_eq!(jon.attributes["email"].value, "jon.smyth@example.org");
    let web = engine.source_record(&key("web/w1")).unwrap().unwrap();
    assert_eq!(
        web.value("email"),
        Some("Jon.Smyth@Example.org"),
        "the late older e-mail lost"
    );
    assert_eq!(web.value("given_name"), Some("Jon"));
    assert_eq!(jon.attributes["given_name"].value, "John");
    let consent = &jon.consents["marketing/email"];
    assert_eq!(consent.status, cmdm_domain::ConsentStatus::Withdrawn);
    assert_eq!(jon.preferences["topic.offers"].value, "true");
    // The deleted record left, and its entity with it.
    assert!(engine.lookup(&key("mail/m1")).unwrap().is_none());
}

#[test]
fn offsets_commit_with_the_batch() {
    let engine = engine(Store::temporary().unwrap());
    let offsets = [SourceOffset {
        topic: "cmdm.events.v1".into(),
        partition: 2,
        next: 41,
    }];
    engine
        .apply_batch(&mixed_workload()[..1], &offsets)
        .unwrap();
    assert_eq!(engine.stored_offset("cmdm.events.v1", 2).unwrap(), Some(41));
    assert_eq!(engine.stored_offset("cmdm.events.v1", 0).unwrap(), None);
}

#[test]
fn rebuild_reproduces_live_projections_and_detects_corruption() {
    let engine = engine(Store::temporary().unwrap());
    let events = mixed_workload();
    // Several batches, so replay crosses batch boundaries differently from the live run.
    for chunk in events.chunks(5) {
        engine.apply_batch(chunk, &[]).unwrap();
    }
    let report = verify(&engine).unwrap();
    assert!(report.is_identical(), "{:?}", report.differences);
    assert!(report.entries > events.len() as u64);

    let jon = engine.lookup(&key("web/w1")).unwrap().unwrap();
    let mut tampered = jon.clone();
    tampered.attributes.get_mut("given_name").unwrap().value = "Mallory".into();
    engine
        .store()
        .tree(TreeName::Entities)
        .insert(
            jon.id.0.to_be_bytes(),
            cmdm_store::encode_bin(TreeName::Entities, &tampered).unwrap(),
        )
        .unwrap();
    let report = verify(&engine).unwrap();
    assert_eq!(report.total_differences, 1);
    assert_eq!(report.differences[0].tree, "entities");
    assert!(
        report.differences[0]
            .live
            .as_deref()
            .unwrap()
            .contains("Mallory")
    );
}

#[test]
fn personal_data_in_the_log_is_sealed() {
    let engine = engine(Store::temporary().unwrap());
    engine.apply_batch(&mixed_workload()[..1], &[]).unwrap();
    for item in engine.store().tree(TreeName::Log).iter() {
        let (_, value) = item.unwrap();
        let text = String::from_utf8_lossy(&value);
        assert!(
            !text.to_lowercase().contains("smyth"),
            "plaintext in log: {text}"
        );
    }
    assert!(engine.golden(GoldenId(999)).unwrap().is_none());
}

fn dump(store: &Store) -> Vec<(String, Vec<u8>, Vec<u8>)> {
    TreeName::ALL
        .iter()
        .flat_map(|t| {
            store.tree(*t).iter().map(move |i| {
                let (k, v) = i.unwrap();
                (t.as_str().to_owned(), k.to_vec(), v.to_vec())
            })
        })
        .collect()
}

/// The fixture of exact expected clusters: a chain that must not collapse, a generic
/// phone that must not join strangers, and a typo'd duplicate that must join.
#[test]
fn fixture_forms_exactly_the_expected_clusters() {
    let config = MatcherConfig {
        generic_limit: 3,
        ..MatcherConfig::default()
    };
    let matcher = FuzzyMatcher::new(Model::default_person(), config).unwrap();
    let engine = Engine::new(
        Store::temporary().unwrap(),
        Arc::new(matcher),
        EngineConfig::default(),
    );
    let t = "2026-01-01T00:00:00Z";
    let store_phone = "01632 999999";
    let events = vec![
        // A and B share an e-mail; C shares B's phone but contradicts A.
        profile(
            "1",
            "web",
            "a",
            t,
            json!({"given_name": "Ann", "family_name": "Lee", "email": "ann.lee@x.org", "date_of_birth": "1990-01-01"}),
        ),
        profile(
            "2",
            "pos",
            "b",
            t,
            json!({"given_name": "Ann", "family_name": "Lee", "email": "ann.lee@x.org", "phone": "01632 960001"}),
        ),
        profile(
            "3",
            "crm",
            "c",
            t,
            json!({"given_name": "Bob", "family_name": "Stone", "phone": "01632 960001", "date_of_birth": "1955-07-30"}),
        ),
        // A typo'd duplicate.
        profile(
            "4",
            "web",
            "j1",
            t,
            json!({"given_name": "Jonathan", "family_name": "Smith", "date_of_birth": "1970-05-05", "postcode": "SW1A 1AA"}),
        ),
        profile(
            "5",
            "pos",
            "j2",
            t,
            json!({"given_name": "Jonathon", "family_name": "Smyth", "date_of_birth": "05/05/1970", "postcode": "sw1a1aa"}),
        ),
        // Strangers giving the shop's phone; the last two even share a family name.
        profile(
            "6",
            "pos",
            "x1",
            t,
            json!({"given_name": "Carl", "family_name": "Ng", "phone": store_phone}),
        ),
        profile(
            "7",
            "pos",
            "x2",
            t,
            json!({"given_name": "Dana", "family_name": "Ortiz", "phone": store_phone}),
        ),
        profile(
            "8",
            "pos",
            "x3",
            t,
            json!({"given_name": "Eve", "family_name": "Park", "phone": store_phone}),
        ),
        profile(
            "9",
            "pos",
            "x4",
            t,
            json!({"given_name": "Fay", "family_name": "Quinn", "phone": store_phone}),
        ),
        profile(
            "10",
            "pos",
            "x5",
            t,
            json!({"given_name": "Gus", "family_name": "Quinn", "phone": store_phone}),
        ),
    ];
    let report = engine.apply_batch(&events, &[]).unwrap();
    assert!(
        report.generic_keys.contains("ph:+441632999999"),
        "{:?}",
        report.generic_keys
    );

    let mut clusters: Vec<Vec<String>> = Vec::new();
    for item in engine.store().tree(TreeName::Entities).iter() {
        let (_, value) = item.unwrap();
        let golden: cmdm_domain::GoldenRecord =
            cmdm_store::decode_bin(TreeName::Entities, &value).unwrap();
        clusters.push(golden.members.iter().map(ToString::to_string).collect());
    }
    clusters.sort();
    let expected: Vec<Vec<String>> = vec![
        vec!["crm/c"],
        vec!["pos/b", "web/a"],
        vec!["pos/j2", "web/j1"],
        vec!["pos/x1"],
        vec!["pos/x2"],
        vec!["pos/x3"],
        vec!["pos/x4"],
        vec!["pos/x5"],
    ]
    .into_iter()
    .map(|c| c.into_iter().map(str::to_owned).collect())
    .collect();
    assert_eq!(clusters, expected);
    // Every decision kept its explanation.
    let jon = engine.lookup(&key("pos/j2")).unwrap().unwrap();
    assert_eq!(jon.members.len(), 2);
    assert!(verify(&engine).unwrap().is_identical());
}

/// The match index loaded from the projections at start decides exactly as the one the
/// write path keeps up to date: an engine restarted before every event ends in the same
/// projections as one that ran throughout.
#[test]
fn a_restarted_engine_decides_like_one_that_ran_throughout() {
    let events = mixed_workload();
    let throughout = engine(Store::temporary().unwrap());
    for event in &events {
        throughout
            .apply_batch(std::slice::from_ref(event), &[])
            .unwrap();
    }
    let store = Store::temporary().unwrap();
    for event in &events {
        engine(store.clone())
            .apply_batch(std::slice::from_ref(event), &[])
            .unwrap();
    }
    let merged = throughout.store().tree(TreeName::Redirects).len();
    assert!(merged > 0, "the workload merges entities");
    assert_eq!(
        trees(throughout.store(), &TreeName::PROJECTIONS),
        trees(&store, &TreeName::PROJECTIONS)
    );
}

pub(crate) fn steward(action: StewardAction, task: Option<u64>) -> StewardRequest {
    StewardRequest {
        action,
        by: "steward:alice".into(),
        comment: "checked with the customer".into(),
        task,
    }
}

fn review_band_pair() -> Vec<InboundEvent> {
    vec![
        profile(
            "1",
            "web",
            "w1",
            "2026-01-01T10:00:00Z",
            json!({"given_name": "Jonathan", "family_name": "Smyth", "date_of_birth": "1980-02-01",
                   "postcode": "SW1A 1AA", "phone": "01632 960001"}),
        ),
        profile(
            "2",
            "pos",
            "p1",
            "2026-01-02T10:00:00Z",
            json!({"given_name": "Jon", "family_name": "Smyth", "postcode": "SW1A 1AA"}),
        ),
    ]
}

#[test]
fn steward_merges_a_review_task_splits_it_again_and_keeps_it_apart_through_a_rematch() {
    let engine = engine(Store::temporary().unwrap());
    engine.apply_batch(&review_band_pair(), &[]).unwrap();
    let (web, pos) = (key("web/w1"), key("pos/p1"));
    let tasks = engine.tasks().unwrap();
    assert_eq!(tasks.len(), 1, "the pair is in the review band");
    let task = tasks[0].clone();
    assert_eq!(task.record, pos);
    let (web_entity, pos_entity) = (
        engine.entity_of(&web).unwrap().unwrap(),
        engine.entity_of(&pos).unwrap().unwrap(),
    );
    assert_ne!(web_entity, pos_entity);
    let before_merge = engine.store().next_seq().unwrap() - 1;

    // Merge through the task.
    let merged = engine
        .resolve_task(
            task.id,
            TaskAnswer::Merge,
            "steward:alice",
            "same phone on file",
        )
        .unwrap();
    assert!(
        matches!(merged.decision, Decision::StewardMerged { survivor, merged, .. }
        if survivor == web_entity && merged == pos_entity)
    );
    let golden = engine.golden(pos_entity).unwrap().unwrap();
    assert_eq!(golden.redirected_from, Some(pos_entity));
    assert_eq!(golden.record.members, vec![pos.clone(), web.clone()]);
    let resolved = engine.task(task.id).unwrap().unwrap();
    assert_eq!(resolved.status, ReviewStatus::Resolved);
    assert_eq!(resolved.resolution.as_ref().unwrap().by, "steward:alice");
    let again = engine.resolve_task(task.id, TaskAnswer::KeepApart, "steward:bob", "");
    assert!(
        matches!(&again, Err(EngineError::Refused(m)) if m.contains("already resolved")),
        "{again:?}"
    );

    // As of before the merge, the two were separate; as of the merge, one.
    let then = engine
        .golden_as_of(web_entity, AsOf::Seq(before_merge))
        .unwrap()
        .unwrap();
    assert_eq!(then.members, vec![web.clone()]);
    let at_merge = engine
        .golden_as_of(pos_entity, AsOf::Seq(merged.seq))
        .unwrap()
        .unwrap();
    assert_eq!(
        at_merge.id, web_entity,
        "a merged id reads as the entity it joined"
    );
    assert_eq!(at_merge.members, vec![pos.clone(), web.clone()]);
    assert_eq!(at_merge.attributes, golden.record.attributes);

    // Split the record out again: it gets its own id back.
    let split = engine
        .steward(steward(
            StewardAction::Split {
                record: pos.clone(),
            },
            None,
        ))
        .unwrap();
    assert!(
        matches!(split.decision, Decision::RecordSplit { to, revived: true, .. }
        if to == pos_entity)
    );
    assert_eq!(engine.entity_of(&pos).unwrap(), Some(pos_entity));
    let web_golden = engine.golden(web_entity).unwrap().unwrap().record;
    assert_eq!(web_golden.members, vec![web.clone()]);
    assert!(web_golden.merged_ids.is_empty());
    assert_eq!(
        web_golden.attributes["given_name"].value, "Jonathan",
        "the golden record is recomputed from the records left"
    );
    let pos_golden = engine.golden(pos_entity).unwrap().unwrap();
    assert_eq!(pos_golden.redirected_from, None);
    assert_eq!(pos_golden.record.attributes["given_name"].value, "Jon");
    let alone = engine.steward(steward(
        StewardAction::Split {
            record: pos.clone(),
        },
        None,
    ));
    assert!(matches!(alone, Err(EngineError::Refused(_))), "{alone:?}");

    // Keep apart explicitly, then re-match everything: nothing brings them together.
    engine
        .steward(steward(
            StewardAction::KeepApart {
                entity: web_entity,
                other: pos_entity,
            },
            None,
        ))
        .unwrap();
    let rematch = engine.rematch(100).unwrap();
    assert_eq!(
        rematch.merged + rematch.linked + rematch.review_tasks,
        0,
        "{rematch:?}"
    );
    assert_ne!(
        engine.entity_of(&pos).unwrap(),
        engine.entity_of(&web).unwrap()
    );
    let pair = engine.explain_pair(&web, &pos).unwrap();
    assert!(pair.kept_apart.is_some(), "{pair:?}");
    assert!(
        pair.summary
            .contains("kept apart by steward:alice (kept_apart"),
        "{}",
        pair.summary
    );

    // A new spoke record like both still cannot join the two together.
    engine
        .apply_batch(
            &[profile(
                "3",
                "crm",
                "c1",
                "2026-01-03T10:00:00Z",
                json!({"given_name": "Jonathan", "family_name": "Smyth", "date_of_birth": "1980-02-01",
                       "postcode": "SW1A 1AA", "phone": "01632 960001"}),
            )],
            &[],
        )
        .unwrap();
    assert_ne!(
        engine.entity_of(&pos).unwrap(),
        engine.entity_of(&web).unwrap()
    );

    // The history shows each step with who and why; the feed has each change.
    let (_, history) = engine.history(pos_entity).unwrap();
    let names: Vec<&str> = history.iter().map(|h| h.name.as_str()).collect();
    for step in [
        "profile.upserted",
        "entity_created",
        "review_opened",
        "steward_merged",
        "record_split",
        "kept_apart",
    ] {
        assert!(names.contains(&step), "{step} missing from {names:?}");
    }
    let merge_step = history.iter().find(|h| h.name == "steward_merged").unwrap();
    assert_eq!(merge_step.by, "steward:alice");
    assert_eq!(merge_step.why, "same phone on file");
    let feed = engine.outbox(usize::MAX).unwrap();
    let kinds: Vec<(OutboundKind, GoldenId)> = feed
        .iter()
        .map(|e| (e.change.kind, e.change.golden_id))
        .collect();
    assert!(
        kinds.contains(&(OutboundKind::Merged, pos_entity)),
        "{kinds:?}"
    );
    let split_msg = feed
        .iter()
        .find(|e| e.change.kind == OutboundKind::Split)
        .expect("a split message");
    assert_eq!(split_msg.change.golden_id, pos_entity);
    assert_eq!(split_msg.change.survivor_id, Some(web_entity));
    let apart: Vec<(GoldenId, Option<GoldenId>, bool)> = feed
        .iter()
        .filter(|e| e.change.kind == OutboundKind::KeptApart)
        .map(|e| {
            (
                e.change.golden_id,
                e.change.other_id,
                e.change.record.is_some(),
            )
        })
        .collect();
    assert_eq!(
        apart,
        vec![
            (web_entity, Some(pos_entity), true),
            (pos_entity, Some(web_entity), true)
        ],
        "both entities, each with its full record"
    );

    // Steward decisions replay like any other.
    assert!(verify(&engine).unwrap().is_identical());
}

#[test]
fn steward_link_and_refusals() {
    let engine = engine(Store::temporary().unwrap());
    engine.apply_batch(&review_band_pair(), &[]).unwrap();
    let (web, pos) = (key("web/w1"), key("pos/p1"));
    let web_entity = engine.entity_of(&web).unwrap().unwrap();
    let pos_entity = engine.entity_of(&pos).unwrap().unwrap();
    let unknown = engine.steward(steward(
        StewardAction::Merge {
            entity: web_entity,
            other: GoldenId(999),
        },
        None,
    ));
    assert!(
        matches!(unknown, Err(EngineError::NotFound(_))),
        "{unknown:?}"
    );
    let same = engine.steward(steward(
        StewardAction::Merge {
            entity: web_entity,
            other: web_entity,
        },
        None,
    ));
    assert!(matches!(same, Err(EngineError::Refused(_))), "{same:?}");
    let nobody = engine.steward(StewardRequest {
        by: " ".into(),
        ..steward(
            StewardAction::Split {
                record: pos.clone(),
            },
            None,
        )
    });
    assert!(matches!(nobody, Err(EngineError::Refused(_))), "{nobody:?}");

    engine
        .steward(steward(
            StewardAction::Link {
                record: pos.clone(),
                entity: web_entity,
            },
            None,
        ))
        .unwrap();
    assert_eq!(engine.entity_of(&pos).unwrap(), Some(web_entity));
    assert!(
        engine.golden(pos_entity).unwrap().is_none(),
        "the emptied entity is gone"
    );
    let explained = engine.explain_record(&pos).unwrap();
    assert_eq!(explained.entity, Some(web_entity));
    assert_eq!(explained.placed_by.unwrap().name, "steward_linked");
    assert_eq!(explained.members.len(), 1);
    let deleted = engine
        .outbox(usize::MAX)
        .unwrap()
        .into_iter()
        .any(|e| e.change.kind == OutboundKind::Deleted && e.change.golden_id == pos_entity);
    assert!(deleted);
    assert!(verify(&engine).unwrap().is_identical());
}

#[test]
fn search_ranks_the_caller_first() {
    let engine = engine(Store::temporary().unwrap());
    engine.apply_batch(&mixed_workload(), &[]).unwrap();
    engine.apply_batch(&review_band_pair(), &[]).unwrap();
    let query = SearchQuery {
        attributes: [("full_name", "Jonathan Smyth"), ("postcode", "sw1a1aa")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
    };
    let (hits, total) = engine.search(&query, 0, 10).unwrap();
    assert!(total >= 1 && !hits.is_empty());
    let first = &hits[0];
    assert_eq!(
        first.record.id,
        engine.entity_of(&key("web/w1")).unwrap().unwrap(),
        "{hits:?}"
    );
    assert!(first.matched.iter().any(|f| f.field == "family_name"));
    assert!(hits.windows(2).all(|w| w[0].weight >= w[1].weight));
    let (page2, _) = engine.search(&query, 1, 10).unwrap();
    assert_eq!(page2.len(), hits.len() - 1);
    // Any one contact point or a name with a date of birth finds the person too.
    let web = engine.entity_of(&key("web/w1")).unwrap().unwrap();
    for pairs in [
        vec![("phone", "+44 1632 960001")],
        vec![
            ("given_name", "jonathan"),
            ("family_name", "SMYTH"),
            ("date_of_birth", "01/02/1980"),
        ],
    ] {
        let query = SearchQuery {
            attributes: pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        };
        let (hits, _) = engine.search(&query, 0, 10).unwrap();
        assert_eq!(
            hits.first().map(|h| h.record.id),
            Some(web),
            "{pairs:?}: {hits:?}"
        );
    }
    let by_email = SearchQuery {
        attributes: [("email".to_owned(), "ANN@example.org".to_owned())].into(),
    };
    let (hits, _) = engine.search(&by_email, 0, 10).unwrap();
    assert_eq!(
        hits.first().map(|h| h.record.id),
        engine.entity_of(&key("crm/c7")).unwrap(),
        "{hits:?}"
    );
    let empty = engine.search(&SearchQuery::default(), 0, 10);
    assert!(matches!(empty, Err(EngineError::Refused(_))));
}

#[test]
fn projections_in_an_older_format_are_rebuilt_from_the_log_on_open() {
    use crate::rebuild::{PROJECTION_FORMAT, ensure_projection_format};
    let engine = engine(Store::temporary().unwrap());
    assert_eq!(
        ensure_projection_format(&engine).unwrap(),
        Some(0),
        "a new store"
    );
    engine.apply_batch(&mixed_workload(), &[]).unwrap();
    assert_eq!(ensure_projection_format(&engine).unwrap(), None, "current");
    let meta = engine.store().tree(TreeName::Meta);
    let logged = engine.store().log_len().unwrap();
    // Format 5 kept a record's entity and prepared form in trees of their own, the
    // record alone in its value: such a store is rebuilt.
    meta.insert(b"projection_format", &5u64.to_be_bytes())
        .unwrap();
    let records = engine.store().tree(TreeName::Records);
    let (key, _) = records.iter().next().unwrap().unwrap();
    records.insert(&key, &b"\x01\x02"[..]).unwrap();
    engine
        .store()
        .tree(TreeName::Features)
        .insert(&key, &b"stale"[..])
        .unwrap();
    assert_eq!(ensure_projection_format(&engine).unwrap(), Some(logged));
    assert!(verify(&engine).unwrap().is_identical());
    assert!(
        engine.store().tree(TreeName::Features).is_empty(),
        "the trees of format 5 are emptied"
    );
    // So is a store from before the version key.
    meta.remove(b"projection_format").unwrap();
    assert_eq!(ensure_projection_format(&engine).unwrap(), Some(logged));
    assert!(verify(&engine).unwrap().is_identical());
    assert_eq!(
        meta.get(b"projection_format").unwrap().unwrap().as_ref(),
        PROJECTION_FORMAT.to_be_bytes()
    );
}

#[test]
fn as_of_time_reads_what_the_hub_held_then() {
    let engine = engine(Store::temporary().unwrap());
    let events = review_band_pair();
    engine.apply_batch(&events[..1], &[]).unwrap();
    let web = engine.entity_of(&key("web/w1")).unwrap().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(5));
    let before_second = cmdm_domain::Timestamp::now();
    std::thread::sleep(std::time::Duration::from_millis(5));
    engine.apply_batch(&events[1..], &[]).unwrap();
    let pos = engine.entity_of(&key("pos/p1")).unwrap().unwrap();
    let task = engine.tasks().unwrap()[0].id;
    std::thread::sleep(std::time::Duration::from_millis(5));
    let before_merge = cmdm_domain::Timestamp::now();
    std::thread::sleep(std::time::Duration::from_millis(5));
    engine
        .resolve_task(task, TaskAnswer::Merge, "steward:alice", "")
        .unwrap();

    let then = engine
        .golden_as_of(web, AsOf::Time(before_second))
        .unwrap()
        .unwrap();
    assert_eq!(then.members, vec![key("web/w1")]);
    assert!(
        engine
            .golden_as_of(pos, AsOf::Time(before_second))
            .unwrap()
            .is_none(),
        "pos/p1's entity did not exist yet"
    );
    let separate = engine
        .golden_as_of(pos, AsOf::Time(before_merge))
        .unwrap()
        .unwrap();
    assert_eq!(
        (separate.id, separate.members.clone()),
        (pos, vec![key("pos/p1")])
    );
    let now = engine
        .golden_as_of(pos, AsOf::Time(cmdm_domain::Timestamp::now()))
        .unwrap()
        .unwrap();
    assert_eq!(now.id, web, "merged by now: the id reads as its survivor");
    assert_eq!(now.members, vec![key("pos/p1"), key("web/w1")]);
    assert_eq!(
        now.attributes,
        engine.golden(web).unwrap().unwrap().record.attributes
    );
}

/// Synthetic people with duplicates, then the mixed workload (merges, consents, a late
/// event, a deletion) and a review-band pair, as profile events.
fn pipeline_workload() -> Vec<InboundEvent> {
    let mut events: Vec<InboundEvent> = cmdm_matching::synth::generate(300, 0.4, 7)
        .into_iter()
        .enumerate()
        .map(|(i, record)| {
            profile(
                &format!("s{i}"),
                "synth",
                &format!("r{i}"),
                "2026-01-01T09:00:00Z",
                serde_json::to_value(&record.attributes).unwrap(),
            )
        })
        .collect();
    events.extend(mixed_workload());
    // Its ids are the mixed workload's: renamed, and its records filed under other ids.
    events.extend(review_band_pair().into_iter().map(|mut event| {
        event.id = format!("review-{}", event.id);
        event.subject = format!("{}-review", event.subject);
        event
    }));
    events
}

#[test]
fn records_prepared_ahead_leave_the_store_as_records_prepared_in_line_do() {
    // New records, records changed again within one batch, and (the second part) records
    // the store holds from earlier batches.
    let mut events = pipeline_workload();
    events.extend((0..120).map(|i| {
        profile(
            &format!("u{i}"),
            "synth",
            &format!("r{i}"),
            "2026-03-01T09:00:00Z",
            json!({"email": format!("moved{i}@example.org"), "postcode": "LS1 4AP"}),
        )
    }));
    // Batches this large are prepared ahead on a second thread; one event at a time is not.
    let ahead = engine(Store::temporary().unwrap());
    let mut report = crate::BatchReport::default();
    for chunk in events.chunks(100) {
        report.add(ahead.apply_batch(chunk, &[]).unwrap());
    }
    let in_line = engine(Store::temporary().unwrap());
    let mut expected = crate::BatchReport::default();
    for event in &events {
        expected.add(
            in_line
                .apply_batch(std::slice::from_ref(event), &[])
                .unwrap(),
        );
    }
    // The outbox holds one change per entity per batch: it counts differently.
    (report.outbox, expected.outbox) = (0, 0);
    assert_eq!(report, expected);
    assert!(report.linked > 0 && report.merged > 0, "{report:?}");
    assert_eq!(
        trees(ahead.store(), &TreeName::PROJECTIONS),
        trees(in_line.store(), &TreeName::PROJECTIONS)
    );
    assert!(verify(&ahead).unwrap().is_identical());
}

#[test]
fn batches_written_behind_leave_the_store_as_batch_after_batch_does() {
    let events = pipeline_workload();
    let offset = |next| SourceOffset {
        topic: "cmdm.events.v1".into(),
        partition: 0,
        next,
    };
    let one_by_one = engine(Store::temporary().unwrap());
    let mut expected = crate::BatchReport::default();
    for (n, chunk) in events.chunks(17).enumerate() {
        expected.add(one_by_one.apply_batch(chunk, &[offset(n as i64)]).unwrap());
    }
    let pipelined = engine(Store::temporary().unwrap());
    let mut report = crate::BatchReport::default();
    for (n, chunk) in events.chunks(17).enumerate() {
        let durable = n % 2 == 0;
        report.add(
            pipelined
                .apply_behind(chunk, &[offset(n as i64)], durable)
                .unwrap(),
        );
    }
    // Redelivered: the dedup of a batch still being written is seen.
    let again = pipelined
        .apply_behind(&events[events.len() - 17..], &[], false)
        .unwrap();
    pipelined.written().unwrap();
    assert_eq!((again.duplicates, again.applied), (17, 0));
    assert_eq!(report, expected);
    assert!(
        report.merged > 0 && report.linked > 0 && report.review_tasks > 0,
        "{report:?}"
    );

    // Data keys are random, so the sealed log differs; everything derived must not.
    let compared = |store: &Store| {
        let mut all = TreeName::PROJECTIONS.to_vec();
        all.extend([TreeName::Outbox, TreeName::Offsets]);
        trees(store, &all)
    };
    assert_eq!(compared(one_by_one.store()), compared(pipelined.store()));
    assert_eq!(
        one_by_one.store().log_len().unwrap(),
        pipelined.store().log_len().unwrap()
    );
    // The index decides like the other's afterwards, and a writer of another kind
    // (here a transaction) waits for the batch still being written and follows it.
    let more = profile(
        "late",
        "web",
        "w9",
        "2026-02-01T10:00:00Z",
        json!({"given_name": "Jon", "family_name": "Smyth", "email": "jon.smyth@example.org"}),
    );
    let after = profile(
        "later",
        "web",
        "w9",
        "2026-02-02T10:00:00Z",
        json!({"given_name": "Jon", "family_name": "Smyth", "phone": "07700 900123"}),
    );
    assert_eq!(
        one_by_one
            .apply_batch(std::slice::from_ref(&more), &[])
            .unwrap(),
        pipelined
            .apply_behind(std::slice::from_ref(&more), &[], false)
            .unwrap()
    );
    assert_eq!(
        one_by_one
            .apply_batch(std::slice::from_ref(&after), &[])
            .unwrap(),
        pipelined
            .apply_batch(std::slice::from_ref(&after), &[])
            .unwrap()
    );
    assert_eq!(compared(one_by_one.store()), compared(pipelined.store()));
}

#[test]
fn the_outbox_offers_only_the_changes_of_batches_flushed_to_disk() {
    let engine = engine(Store::temporary().unwrap());
    let events = mixed_workload();
    engine.apply_batch(&events[..4], &[]).unwrap();
    assert!(
        engine.outbox(usize::MAX).unwrap().is_empty(),
        "not flushed yet"
    );
    engine.store().flush_blocking().unwrap();
    let first = engine.outbox(usize::MAX).unwrap();
    assert!(!first.is_empty());
    // Written behind without a flush: held back until one.
    engine.apply_behind(&events[4..5], &[], false).unwrap();
    engine.written().unwrap();
    assert_eq!(engine.outbox(usize::MAX).unwrap(), first);
    // Written behind and flushed on its own thread.
    engine.apply_behind(&events[5..6], &[], true).unwrap();
    engine.written().unwrap();
    let both = engine.outbox(usize::MAX).unwrap();
    assert!(both.len() > first.len() && both.starts_with(&first));
}

/// The index keeps only compact forms: a changed profile must give up the blocking keys
/// of its stored form, whether that form was stored by an earlier batch or earlier in
/// the same batch, exactly as an index loaded afresh from the store has them.
#[test]
fn a_changed_profile_is_found_through_its_new_values_only() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(Store::open(dir.path()).unwrap());
    let ann = |id: &str, time: &str, email: &str| {
        profile(
            id,
            "web",
            "w1",
            time,
            json!({"given_name": "Ann", "family_name": "Lee", "email": email}),
        )
    };
    engine
        .apply_batch(&[ann("1", "2026-01-01T00:00:00Z", "ann@old.org")], &[])
        .unwrap();
    engine
        .apply_batch(
            &[
                ann("2", "2026-01-02T00:00:00Z", "ann@mid.org"),
                ann("3", "2026-01-03T00:00:00Z", "ann@new.org"),
            ],
            &[],
        )
        .unwrap();
    let holders = |index: &crate::index::MatchIndex, block: &str| match index.lookup(block) {
        crate::index::Found::Records(slots) => slots
            .iter()
            .map(|&slot| index.key(slot).to_string())
            .collect::<Vec<_>>(),
        crate::index::Found::Generic => vec!["generic".to_owned()],
    };
    let live = engine.lock_index().unwrap();
    let live = live.as_ref().expect("the index is loaded by the batches");
    let loaded = crate::index::MatchIndex::load(engine.store(), &matcher()).unwrap();
    for index in [live, &loaded] {
        assert_eq!(holders(index, "em:ann@old.org"), Vec::<String>::new());
        assert_eq!(holders(index, "em:ann@mid.org"), Vec::<String>::new());
        assert_eq!(holders(index, "em:ann@new.org"), vec!["web/w1".to_owned()]);
    }
}

/// A record found through one key only is a candidate if few records hold that key; any
/// record sharing two keys is one whatever their holders.
#[test]
fn a_single_common_key_finds_no_candidate() {
    // (slot, records holding the key it was found through), once per key.
    let found = vec![(7, 40), (3, 10), (9, 40), (9, 60), (5, 26), (2, 25)];
    assert_eq!(
        crate::engine::shared_keys(found.clone(), 25),
        vec![(2, 1), (3, 1), (9, 2)]
    );
    // At the generic limit the rule is off: every record found is a candidate.
    assert_eq!(
        crate::engine::shared_keys(found, 100),
        vec![(2, 1), (3, 1), (5, 1), (7, 1), (9, 2)]
    );
}

/// Golden records grown batch after batch, mostly by records joining them (worked out
/// from the stored golden values), hold what survivorship gives for all their members:
/// with ties in event time and source, updates moving records between entities,
/// consents and do-not-contact.
#[test]
fn golden_records_grown_by_joining_records_hold_what_all_their_members_give() {
    let rules = Survivorship {
        source_trust: vec!["crm".into(), "web".into()],
        attributes: [
            (
                "given_name".to_owned(),
                cmdm_matching::Strategy::MostComplete,
            ),
            ("city".to_owned(), cmdm_matching::Strategy::SourceTrust),
        ]
        .into(),
        ..Survivorship::default()
    };
    let config = EngineConfig {
        survivorship: rules.clone(),
        ..EngineConfig::default()
    };
    let engine = Engine::new(Store::temporary().unwrap(), Arc::new(matcher()), config);
    let names = ["Jon", "Jonathan", "John"];
    let cities = ["Leeds", "York", "Hull"];
    let families = [
        "Smith",
        "Okafor",
        "Nakamura",
        "Lindqvist",
        "Moreau",
        "Kowalski",
    ];
    let times = ["2026-01-01T10:00:00Z", "2026-01-02T10:00:00Z"];
    let sources = ["crm", "web", "pos"];
    let mut events = Vec::new();
    for k in 0..90usize {
        let person = k * 7 % 6;
        // Subjects come back: a record changes, and may move to another person. A
        // consent or a preference is about the record of the profile before it.
        let about = match k % 9 {
            4 | 7 => k - 1,
            _ => k,
        };
        let source = sources[about % 3];
        let subject = format!("s{}", about % 40);
        let time = times[k % 5 % 2];
        let id = k.to_string();
        let status = ["granted", "withdrawn", "denied"][k % 3];
        events.push(match k % 9 {
            4 => event(
                &id,
                source,
                &subject,
                "consent.changed",
                time,
                json!({"purpose": "marketing", "channel": "email",
                       "status": status}),
            ),
            7 => event(
                &id,
                source,
                &subject,
                "preference.changed",
                time,
                json!({"do_not_contact": k % 2 == 0}),
            ),
            _ => profile(
                &id,
                source,
                &subject,
                time,
                json!({
                    "given_name": names[k % 3],
                    "family_name": families[person],
                    "email": format!("{}@example.org", families[person]),
                    "city": cities[k % 3],
                }),
            ),
        });
    }
    let matcher = matcher();
    // Every golden record against its members, after every batch: the number of
    // member records checked.
    let check = |engine: &Engine| {
        let mut checked = 0;
        for item in engine.store().tree(TreeName::Entities).iter() {
            let (_, value) = item.unwrap();
            let golden: cmdm_domain::GoldenRecord =
                cmdm_store::decode_bin(TreeName::Entities, &value).unwrap();
            let members: Vec<cmdm_domain::SourceRecord> = golden
                .members
                .iter()
                .map(|key| engine.source_record(key).unwrap().unwrap())
                .collect();
            let every = cmdm_matching::survive(&members, &rules);
            assert_eq!(golden.attributes, every.attributes, "{}", golden.id);
            assert_eq!(golden.consents, every.consents, "{}", golden.id);
            assert_eq!(golden.preferences, every.preferences, "{}", golden.id);
            assert_eq!(
                golden.contact_points,
                crate::projector::held_contact_points(&matcher, members.iter()),
                "{}",
                golden.id
            );
            checked += golden.members.len();
        }
        checked
    };
    let mut checked = 0;
    for batch in events.chunks(5) {
        engine.apply_batch(batch, &[]).unwrap();
        checked = check(&engine);
    }
    assert!(checked >= 30, "the records form entities: {checked}");
    assert!(verify(&engine).unwrap().is_identical());
}
