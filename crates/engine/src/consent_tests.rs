//! Consent through merge and split, contact points, the contact decision, erasure and
//! export, on a store on disk.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use cmdm_domain::{Channel, ConsentStatus, ContactQuestion, GoldenId, OutboundKind, Timestamp};
use cmdm_store::Store;
use serde_json::json;

use crate::rebuild::verify;
use crate::tests::{engine, event, key, matcher, profile, steward};
use crate::{AfterErasure, ContactTarget, Engine, EngineConfig, EngineError, StewardAction};

fn consent(id: &str, record: &str, time: &str, status: &str) -> cmdm_domain::InboundEvent {
    let (source, subject) = record.split_once('/').unwrap();
    event(
        id,
        source,
        subject,
        "consent.changed",
        time,
        json!({"purpose": "marketing", "channel": "email", "status": status,
               "evidence": {"collection_point": "web-footer", "text_version": "v3"}}),
    )
}

fn question(channel: Channel, purpose: &str, at: &str) -> ContactQuestion {
    ContactQuestion {
        channel,
        purpose: purpose.into(),
        topic: None,
        at: Timestamp::parse_rfc3339("at", at).unwrap(),
    }
}

fn entity(engine: &Engine, record: &str) -> GoldenId {
    engine.lookup(&key(record)).unwrap().unwrap().id
}

fn status(engine: &Engine, record: &str) -> Option<ConsentStatus> {
    engine
        .lookup(&key(record))
        .unwrap()
        .unwrap()
        .consents
        .get("marketing/email")
        .map(|c| c.status)
}

#[test]
fn consent_follows_event_time_per_record_and_is_most_restrictive_across_a_merge() {
    let engine = engine(Store::temporary().unwrap());
    let ann = json!({"given_name": "Ann", "family_name": "Lee", "email": "ann.lee@example.org"});
    let bob = json!({"given_name": "Bob", "family_name": "Ray", "phone": "+44 1632 960009"});
    // Out of order from several sources: each record keeps its latest declaration.
    engine
        .apply_batch(
            &[
                profile("1", "web", "w1", "2026-01-01T00:00:00Z", ann.clone()),
                profile("2", "callcenter", "k1", "2026-01-01T00:00:00Z", bob.clone()),
                consent("3", "web/w1", "2026-03-01T00:00:00Z", "withdrawn"),
                consent("4", "web/w1", "2026-02-01T00:00:00Z", "granted"),
                consent("5", "callcenter/k1", "2026-02-01T00:00:00Z", "granted"),
                consent("6", "callcenter/k1", "2026-01-15T00:00:00Z", "denied"),
            ],
            &[],
        )
        .unwrap();
    assert_eq!(status(&engine, "web/w1"), Some(ConsentStatus::Withdrawn));
    assert_eq!(
        status(&engine, "callcenter/k1"),
        Some(ConsentStatus::Granted)
    );
    let golden = engine.lookup(&key("web/w1")).unwrap().unwrap();
    let evidence = golden.consents["marketing/email"].evidence.clone().unwrap();
    assert_eq!(evidence.text_version.as_deref(), Some("v3"));

    // A steward merges the two: the most restrictive holds for the entity.
    let (a, b) = (entity(&engine, "web/w1"), entity(&engine, "callcenter/k1"));
    engine
        .steward(steward(
            StewardAction::Merge {
                entity: a,
                other: b,
            },
            None,
        ))
        .unwrap();
    assert_eq!(entity(&engine, "callcenter/k1"), a);
    assert_eq!(
        status(&engine, "callcenter/k1"),
        Some(ConsentStatus::Withdrawn)
    );
    let q = question(Channel::Email, "marketing", "2026-06-01T12:00:00Z");
    let decision = engine.check_contact(&ContactTarget::Entity(b), &q).unwrap();
    assert!(!decision.allowed);
    assert_eq!(decision.reasons[0].code, "consent_withdrawn");
    assert!(
        decision.reasons[0].detail.contains("web/w1"),
        "{decision:?}"
    );

    // Split: each side gets back its own.
    engine
        .steward(steward(
            StewardAction::Split {
                record: key("callcenter/k1"),
            },
            None,
        ))
        .unwrap();
    assert_eq!(status(&engine, "web/w1"), Some(ConsentStatus::Withdrawn));
    assert_eq!(
        status(&engine, "callcenter/k1"),
        Some(ConsentStatus::Granted)
    );
    let split = entity(&engine, "callcenter/k1");
    assert!(
        engine
            .check_contact(&ContactTarget::Entity(split), &q)
            .unwrap()
            .allowed
    );
    assert!(verify(&engine).unwrap().is_identical());
}

#[test]
fn a_contact_point_declaration_applies_to_whoever_holds_it_now_or_later() {
    let engine = engine(Store::temporary().unwrap());
    // The unsubscribe link knows only the address; nobody holds it yet.
    let unsubscribe = |id: &str, time: &str| {
        event(
            id,
            "esp",
            "unsubscribes",
            "preference.changed",
            time,
            json!({"do_not_contact": true, "contact_point": "Kim.Oh@Example.org"}),
        )
    };
    engine
        .apply_batch(
            &[
                unsubscribe("1", "2026-02-01T00:00:00Z"),
                event(
                    "2",
                    "esp",
                    "unsubscribes",
                    "consent.changed",
                    "2026-02-01T00:00:00Z",
                    json!({"purpose": "marketing", "channel": "sms", "status": "withdrawn",
                           "contact_point": "+44 1632 960555"}),
                ),
            ],
            &[],
        )
        .unwrap();
    let q = question(Channel::Email, "service", "2026-06-01T12:00:00Z");
    let by_point = engine
        .check_contact(
            &ContactTarget::ContactPoint("kim.oh@example.org".into()),
            &q,
        )
        .unwrap();
    assert!(!by_point.allowed);
    assert!(by_point.reasons.iter().any(|r| r.code == "do_not_contact"));

    // Kim signs up later at the shop: the declaration reaches her golden record.
    engine
        .apply_batch(
            &[
                profile(
                    "3",
                    "pos",
                    "p1",
                    "2026-03-01T00:00:00Z",
                    json!({"given_name": "Kim", "family_name": "Oh",
                           "email": "kim.oh@example.org", "phone": "01632 960555"}),
                ),
                consent("4", "pos/p1", "2026-03-01T00:00:00Z", "granted"),
                event(
                    "5",
                    "pos",
                    "p1",
                    "consent.changed",
                    "2026-03-01T00:00:00Z",
                    json!({"purpose": "marketing", "channel": "sms", "status": "granted"}),
                ),
            ],
            &[],
        )
        .unwrap();
    let kim = entity(&engine, "pos/p1");
    let decision = engine
        .check_contact(
            &ContactTarget::Entity(kim),
            &question(Channel::Email, "marketing", "2026-06-01T12:00:00Z"),
        )
        .unwrap();
    assert!(!decision.allowed, "{decision:?}");
    let dnc = decision
        .reasons
        .iter()
        .find(|r| r.code == "do_not_contact")
        .unwrap();
    assert!(dnc.detail.contains("email:kim.oh@example.org"), "{dnc:?}");
    // The SMS withdrawal named the phone number: most restrictive wins over the shop's grant.
    let sms = engine
        .check_contact(
            &ContactTarget::Entity(kim),
            &question(Channel::Sms, "marketing", "2026-06-01T12:00:00Z"),
        )
        .unwrap();
    assert!(sms.reasons.iter().any(|r| r.code == "consent_withdrawn"));
    // Her address's do-not-contact makes her an opt-out that no other grant outweighs.
    let report = engine.consent_report().unwrap();
    assert_eq!(report.customers_with_opt_out, 1);
    assert_eq!(report.atomic_opt_outs_avoided, 0);
    // A text that is no contact point is refused with a reason.
    assert!(matches!(
        engine.check_contact(&ContactTarget::ContactPoint("n/a".into()), &q),
        Err(EngineError::Refused(_))
    ));
    assert!(verify(&engine).unwrap().is_identical());
}

#[test]
fn recorded_contacts_cap_the_frequency_the_customer_chose() {
    let engine = engine(Store::temporary().unwrap());
    engine
        .apply_batch(
            &[
                profile(
                    "1",
                    "web",
                    "w1",
                    "2026-01-01T00:00:00Z",
                    json!({"given_name": "Lu", "email": "lu@example.org",
                           "timezone": "Asia/Tokyo"}),
                ),
                consent("2", "web/w1", "2026-01-01T00:00:00Z", "granted"),
                event(
                    "3",
                    "web",
                    "w1",
                    "preference.changed",
                    "2026-01-01T00:00:00Z",
                    json!({"frequency": {"email": "weekly"}, "topics": {"offers": false, "news": true}}),
                ),
                event(
                    "4",
                    "web",
                    "w1",
                    "contact.recorded",
                    "2026-05-30T09:00:00Z",
                    json!({"channel": "email", "purpose": "marketing", "campaign": "spring"}),
                ),
            ],
            &[],
        )
        .unwrap();
    let lu = ContactTarget::Entity(entity(&engine, "web/w1"));
    let d = engine
        .check_contact(
            &lu,
            &question(Channel::Email, "marketing", "2026-06-01T12:00:00Z"),
        )
        .unwrap();
    assert!(!d.allowed);
    assert!(d.reasons.iter().any(|r| r.code == "frequency_cap_reached"));
    let d = engine
        .check_contact(
            &lu,
            &question(Channel::Email, "marketing", "2026-06-08T12:00:00Z"),
        )
        .unwrap();
    assert!(d.allowed, "{d:?}");
    // Topics: a partial opt-out, not all or nothing.
    let mut offers = question(Channel::Email, "marketing", "2026-06-08T12:00:00Z");
    offers.topic = Some("offers".into());
    let d = engine.check_contact(&lu, &offers).unwrap();
    assert!(!d.allowed);
    offers.topic = Some("news".into());
    assert!(engine.check_contact(&lu, &offers).unwrap().allowed);
    // The batch form answers in order; an unknown id is an error of its own.
    let ids = [entity(&engine, "web/w1"), GoldenId(999_999)];
    let answers = engine.check_contacts(
        &ids,
        &question(Channel::Email, "marketing", "2026-06-08T12:00:00Z"),
    );
    assert!(answers[0].as_ref().unwrap().allowed);
    assert!(matches!(answers[1], Err(EngineError::NotFound(_))));
    let report = engine.consent_report().unwrap();
    assert_eq!(report.periods.len(), 1);
    assert_eq!(report.periods[0].granted, 1);
    assert_eq!(report.customers_with_opt_out, 1);
    assert_eq!(report.atomic_opt_outs_avoided, 1);
}

/// Files under `dir` whose bytes contain `needle`, compared case-insensitively.
fn files_containing(dir: &Path, needle: &str) -> Vec<PathBuf> {
    let needle = needle.to_ascii_lowercase().into_bytes();
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found.extend(files_containing(
                &path,
                std::str::from_utf8(&needle).unwrap(),
            ));
        } else {
            let bytes = std::fs::read(&path).unwrap().to_ascii_lowercase();
            if bytes.windows(needle.len()).any(|w| w == needle.as_slice()) {
                found.push(path);
            }
        }
    }
    found
}

#[test]
fn erasure_leaves_no_trace_in_any_file_and_the_rest_of_the_log_replays() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let engine = engine(store.clone());
    let quill = json!({"given_name": "Quillon", "family_name": "Vanderzee",
                       "email": "quillon.vanderzee@example.org", "date_of_birth": "1971-04-09"});
    engine
        .apply_batch(
            &[
                profile("1", "web", "w1", "2026-01-01T00:00:00Z", quill.clone()),
                profile(
                    "2",
                    "pos",
                    "p1",
                    "2026-01-02T00:00:00Z",
                    json!({"given_name": "Quillon", "family_name": "Vanderzee",
                           "phone": "01632 960777", "email": "quillon.vanderzee@example.org"}),
                ),
                consent("3", "web/w1", "2026-01-03T00:00:00Z", "granted"),
                event(
                    "4",
                    "esp",
                    "unsubscribes",
                    "preference.changed",
                    "2026-01-04T00:00:00Z",
                    json!({"topics": {"offers": false},
                           "contact_point": "Quillon.Vanderzee@example.org"}),
                ),
                profile(
                    "5",
                    "web",
                    "w2",
                    "2026-01-05T00:00:00Z",
                    json!({"given_name": "Ann", "family_name": "Lee", "email": "ann@example.org"}),
                ),
            ],
            &[],
        )
        .unwrap();
    store.flush_blocking().unwrap();
    assert!(!files_containing(dir.path(), "vanderzee").is_empty());
    let quillon = entity(&engine, "web/w1");
    assert_eq!(entity(&engine, "pos/p1"), quillon);
    let ann_before = engine.lookup(&key("web/w2")).unwrap().unwrap();

    // Subject access first: everything held, with provenance and consent evidence.
    let export = serde_json::to_string(&engine.export(quillon).unwrap()).unwrap();
    for expected in [
        "quillon.vanderzee@example.org",
        "web-footer",
        "pos/p1",
        "topic.offers",
    ] {
        assert!(
            export.contains(expected),
            "export lacks {expected}: {export}"
        );
    }

    let report = engine
        .erase(quillon, "dpo:maria", "request 2026-114")
        .unwrap();
    assert_eq!(report.records.len(), 2);
    assert_eq!(report.contact_points, 1);
    store.flush_blocking().unwrap();
    for needle in ["vanderzee", "quillon", "960777", "1971-04-09"] {
        assert_eq!(
            files_containing(dir.path(), needle),
            Vec::<PathBuf>::new(),
            "`{needle}` is still in a file"
        );
    }
    // Every projection of the person is gone; the other person is untouched.
    assert!(engine.lookup(&key("web/w1")).unwrap().is_none());
    assert!(engine.golden(quillon).unwrap().is_none());
    assert!(matches!(
        engine.export(quillon),
        Err(EngineError::NotFound(_))
    ));
    assert_eq!(engine.lookup(&key("web/w2")).unwrap().unwrap(), ann_before);
    let outbox = engine.outbox(usize::MAX).unwrap();
    assert!(
        outbox
            .iter()
            .any(|e| e.change.kind == OutboundKind::Erased && e.change.golden_id == quillon)
    );
    assert!(
        !outbox
            .iter()
            .any(|e| e.change.golden_id == quillon && e.change.record.is_some()),
        "no unpublished golden record of the person is left"
    );
    // Search no longer finds the person.
    let hits = engine
        .search(
            &crate::SearchQuery {
                attributes: [("family_name".to_owned(), "Vanderzee".to_owned())].into(),
            },
            0,
            10,
        )
        .unwrap();
    assert!(hits.0.is_empty(), "{hits:?}");
    // The log replays into the same projections.
    assert!(verify(&engine).unwrap().is_identical());

    // Later events for an erased record are refused by default ...
    let late = profile("6", "web", "w1", "2026-02-01T00:00:00Z", quill.clone());
    let refused = engine
        .apply_batch(std::slice::from_ref(&late), &[])
        .unwrap();
    assert_eq!(refused.applied, 0);
    assert_eq!(refused.refused.len(), 1);
    assert!(refused.refused[0].1.contains("erased"), "{refused:?}");
    drop(engine);

    // ... or, if so configured, start a new person under a new data key.
    let config = EngineConfig {
        after_erasure: AfterErasure::AcceptAsNew,
        ..EngineConfig::default()
    };
    let engine = Engine::new(store.clone(), Arc::new(matcher()), config);
    let accepted = engine.apply_batch(&[late], &[]).unwrap();
    assert_eq!(accepted.applied, 1);
    let reborn = engine.lookup(&key("web/w1")).unwrap().unwrap();
    assert_ne!(reborn.id, quillon);
    assert!(verify(&engine).unwrap().is_identical());
    // The new person's history starts after the erasure: nothing of the old one.
    let history = engine.record_history(&key("web/w1")).unwrap();
    assert!(history.iter().all(|h| h.seq > report.seq), "{history:?}");
}

#[test]
fn an_interrupted_erasure_rewrite_is_finished_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let engine = engine(store.clone());
    engine
        .apply_batch(
            &[profile(
                "1",
                "web",
                "w1",
                "2026-01-01T00:00:00Z",
                json!({"given_name": "Quillon", "family_name": "Vanderzee"}),
            )],
            &[],
        )
        .unwrap();
    // As a crash would leave it: the person's data deleted, the files not yet rewritten.
    let id = entity(&engine, "web/w1");
    let mut batch = store.begin().unwrap();
    batch.delete(cmdm_store::TreeName::Entities, id.0.to_be_bytes().to_vec());
    batch.delete(cmdm_store::TreeName::Records, key("web/w1").encode());
    batch.put(
        cmdm_store::TreeName::Meta,
        b"purge_pending".to_vec(),
        7u64.to_be_bytes(),
    );
    batch.commit().unwrap();
    // The unpublished change carrying the golden record, as the erasure drops it.
    store.tree(cmdm_store::TreeName::Outbox).clear().unwrap();
    store.flush_blocking().unwrap();
    drop((engine, store));
    let engine = crate::tests::engine(Store::open(dir.path()).unwrap());
    assert!(crate::finish_pending_purge(&engine).unwrap());
    assert!(!crate::finish_pending_purge(&engine).unwrap(), "done once");
    engine.store().flush_blocking().unwrap();
    assert_eq!(
        files_containing(dir.path(), "quillon"),
        Vec::<PathBuf>::new(),
        "no file holds the deleted values"
    );
}

#[test]
fn deferred_rewrites_serve_every_erasure_of_their_window() {
    let dir = tempfile::tempdir().unwrap();
    let config = EngineConfig {
        purge_delay: std::time::Duration::from_millis(400),
        ..EngineConfig::default()
    };
    let engine = Engine::new(
        Store::open(dir.path()).unwrap(),
        Arc::new(matcher()),
        config,
    );
    engine
        .apply_batch(
            &[
                profile(
                    "1",
                    "web",
                    "w1",
                    "2026-01-01T00:00:00Z",
                    json!({"given_name": "Quillon", "family_name": "Vanderzee"}),
                ),
                profile(
                    "2",
                    "web",
                    "w2",
                    "2026-01-01T00:00:00Z",
                    json!({"given_name": "Ottoline", "family_name": "Brackwater"}),
                ),
            ],
            &[],
        )
        .unwrap();
    let first = engine
        .erase(entity(&engine, "web/w1"), "dpo", "request 1")
        .unwrap();
    let second = engine
        .erase(entity(&engine, "web/w2"), "dpo", "request 2")
        .unwrap();
    assert!(first.purge.is_none() && second.purge.is_none());
    assert_eq!(first.purge_due, second.purge_due, "one rewrite for both");
    assert!(engine.purge_if_due().unwrap().is_none(), "not due yet");
    assert!(!files_containing(dir.path(), "brackwater").is_empty());
    std::thread::sleep(std::time::Duration::from_millis(450));
    assert!(engine.purge_if_due().unwrap().is_some());
    assert!(
        engine.purge_if_due().unwrap().is_none(),
        "nothing left to do"
    );
    engine.store().flush_blocking().unwrap();
    for needle in ["vanderzee", "brackwater"] {
        assert_eq!(files_containing(dir.path(), needle), Vec::<PathBuf>::new());
    }
    assert!(verify(&engine).unwrap().is_identical());
}
