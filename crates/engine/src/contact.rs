//! The contact decision over what the hub holds (golden consents and preferences, the
//! declarations of contact points, recorded contacts) and the consent reports.

use std::collections::BTreeMap;

use cmdm_domain::consent::{DO_NOT_CONTACT, consent_key};
use cmdm_domain::{
    ConsentStatus, ContactDecision, ContactFacts, ContactPointState, ContactQuestion,
    DeclaredConsent, GoldenId, GoldenRecord, LogEntry, Payload, Timestamp, decide_contact,
};
use cmdm_store::TreeName;
use serde::Serialize;

use crate::index::Found;
use crate::privacy::{contact_points_of, open_payload};
use crate::{Engine, EngineError, Result};

/// Whom a contact decision is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContactTarget {
    /// A golden id (merged ids resolve to their survivor).
    Entity(GoldenId),
    /// An e-mail address or phone number, as a campaign list holds it.
    ContactPoint(String),
}

/// Consent declarations in one period for one purpose and channel.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PeriodCounts {
    /// `YYYY-MM` of the declarations' event time.
    pub period: String,
    pub purpose: String,
    pub channel: String,
    /// Opt-ins.
    pub granted: u64,
    /// Opt-outs: denied and withdrawn.
    pub denied: u64,
    pub withdrawn: u64,
}

/// Customers who left one channel for another for the same purpose.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Migration {
    pub purpose: String,
    pub from: String,
    pub to: String,
    pub customers: u64,
}

/// Opt-in and opt-out counts over time, channel migration and the opt-outs that stayed
/// narrow.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ConsentReport {
    pub periods: Vec<PeriodCounts>,
    pub migrations: Vec<Migration>,
    /// Golden records now.
    pub customers: u64,
    /// Customers with at least one opt-out (a consent denied or withdrawn, a topic left).
    pub customers_with_opt_out: u64,
    /// Of those, customers still reachable for something: an all-or-nothing opt-out would
    /// have lost them (atomic opt-outs avoided).
    pub atomic_opt_outs_avoided: u64,
}

/// At least this many ids per thread before a batch check is split over threads.
const PARALLEL_CHUNK: usize = 2_048;

impl Engine {
    /// May the target be contacted on the question's channel, for its purpose (and topic),
    /// at its time? Every reason weighed is in the answer.
    pub fn check_contact(
        &self,
        target: &ContactTarget,
        question: &ContactQuestion,
    ) -> Result<ContactDecision> {
        let (goldens, points) = match target {
            ContactTarget::Entity(id) => {
                let golden = self
                    .golden(*id)?
                    .ok_or_else(|| EngineError::NotFound(format!("no golden record {id}")))?
                    .record;
                (vec![golden], Vec::new())
            }
            ContactTarget::ContactPoint(raw) => {
                let point = self.matcher().contact_point(raw).ok_or_else(|| {
                    EngineError::Refused(format!(
                        "`{raw}` is neither an e-mail address nor a phone number"
                    ))
                })?;
                let mut goldens = Vec::new();
                for id in self.holders(&point)? {
                    if let Some(found) = self.golden(id)? {
                        goldens.push(found.record);
                    }
                }
                (goldens, vec![point])
            }
        };
        let facts = self.contact_facts(&goldens, points, question)?;
        Ok(decide_contact(question, &facts, &self.config().contact))
    }

    /// The contact decision for each of a campaign list's golden ids, in order.
    pub fn check_contacts(
        &self,
        ids: &[GoldenId],
        question: &ContactQuestion,
    ) -> Vec<Result<ContactDecision>> {
        let check = |chunk: &[GoldenId]| -> Vec<Result<ContactDecision>> {
            chunk
                .iter()
                .map(|id| self.check_contact(&ContactTarget::Entity(*id), question))
                .collect()
        };
        let threads = std::thread::available_parallelism().map_or(1, usize::from);
        if ids.len() < 2 * PARALLEL_CHUNK || threads < 2 {
            return check(ids);
        }
        let size = ids.len().div_ceil(threads);
        std::thread::scope(|scope| {
            let workers: Vec<_> = ids
                .chunks(size)
                .map(|chunk| scope.spawn(move || check(chunk)))
                .collect();
            workers
                .into_iter()
                .flat_map(|w| w.join().expect("a contact check panicked"))
                .collect()
        })
    }

    /// The entities holding a contact point, found through the match index.
    fn holders(&self, point: &str) -> Result<Vec<GoldenId>> {
        let Some(block) = cmdm_matching::contact_point_block(point) else {
            return Ok(Vec::new());
        };
        let mut guard = self.lock_index()?;
        if guard.is_none() {
            *guard = Some(self.load_index()?);
        }
        let index = guard.as_ref().expect("loaded above");
        let mut ids = Vec::new();
        if let Found::Records(slots) = index.lookup(&block) {
            for &slot in slots {
                // A hash collision can only add a record: check it holds the point.
                let holds = self
                    .stored_form(index.key(slot))?
                    .is_some_and(|p| contact_points_of(&p).iter().any(|c| c == point));
                if holds && let Some(id) = index.entity_of(slot) {
                    ids.push(id);
                }
            }
        }
        ids.sort();
        ids.dedup();
        Ok(ids)
    }

    /// What the hub holds that bears on a contact question, most restrictive first.
    fn contact_facts(
        &self,
        goldens: &[GoldenRecord],
        mut points: Vec<String>,
        question: &ContactQuestion,
    ) -> Result<ContactFacts> {
        let _gate = self.store().read_gate();
        let store = self.store();
        let key = consent_key(&question.purpose, question.channel);
        let topic_item = question.topic.as_ref().map(|t| format!("topic.{t}"));
        let frequency_item = format!("frequency.{}", question.channel.as_str());
        let mut facts = ContactFacts::default();
        for golden in goldens {
            if let Some(c) = golden.consents.get(&key) {
                restrict(
                    &mut facts.consent,
                    declared(
                        c.status,
                        c.expires_at.as_deref(),
                        &c.legal_basis,
                        c.source.to_string(),
                        c.time,
                    ),
                );
            }
            if let Some(v) = golden.preferences.get(DO_NOT_CONTACT)
                && v.value == "true"
            {
                facts
                    .do_not_contact
                    .get_or_insert_with(|| v.source.to_string());
            }
            if let Some(item) = &topic_item
                && let Some(v) = golden.preferences.get(item)
            {
                declare_topic(&mut facts.topic, v.value == "true", v.source.to_string());
            }
            if let Some(v) = golden.preferences.get(&frequency_item) {
                facts
                    .frequency
                    .get_or_insert_with(|| (v.value.clone(), v.source.to_string()));
            }
            if let Some(v) = golden.preferences.get("preferred_channel") {
                facts
                    .preferred_channel
                    .get_or_insert_with(|| (v.value.clone(), v.source.to_string()));
            }
            if facts.time_zone.is_none() {
                facts.time_zone = ["timezone", "time_zone"]
                    .iter()
                    .find_map(|name| golden.attributes.get(*name))
                    .map(|v| v.value.clone());
            }
            points.extend(golden.contact_points.iter().cloned());
        }
        points.sort();
        points.dedup();
        for point in &points {
            let Some(state) =
                store.get_bin::<ContactPointState>(TreeName::ContactPoints, point.as_bytes())?
            else {
                continue;
            };
            let by = format!("contact point {point}");
            if let Some(stamped) = state.consents.get(&key) {
                let c = &stamped.value;
                restrict(
                    &mut facts.consent,
                    declared(
                        c.status,
                        c.expires_at.as_deref(),
                        &c.legal_basis,
                        by.clone(),
                        stamped.stamp.time,
                    ),
                );
            }
            if state
                .preferences
                .get(DO_NOT_CONTACT)
                .is_some_and(|v| v.value == "true")
            {
                facts.do_not_contact.get_or_insert_with(|| by.clone());
            }
            if let Some(item) = &topic_item
                && let Some(v) = state.preferences.get(item)
            {
                declare_topic(&mut facts.topic, v.value == "true", by.clone());
            }
            if let Some(v) = state.preferences.get(&frequency_item) {
                facts
                    .frequency
                    .get_or_insert_with(|| (v.value.clone(), by.clone()));
            }
        }
        // Recorded contacts matter only under a frequency cap: read the records then only.
        let capped = facts.frequency.is_some()
            || self
                .config()
                .contact
                .default_caps
                .contains_key(&question.channel);
        if capped {
            for member in goldens.iter().flat_map(|g| &g.members) {
                if let Some(bytes) = store.get(TreeName::Records, member.encode().as_bytes())? {
                    let record = crate::held::Parts::of(&bytes)?.record()?;
                    facts.contacts.extend(
                        record
                            .contacts
                            .iter()
                            .filter(|c| c.value.channel == question.channel)
                            .map(|c| c.stamp.time),
                    );
                }
            }
        }
        Ok(facts)
    }

    /// Opt-ins and opt-outs per month, purpose and channel (from the log: an erased
    /// person's declarations can no longer be read and are not counted), channel
    /// migration and the opt-outs that stayed narrow (from the golden records).
    pub fn consent_report(&self) -> Result<ConsentReport> {
        let _gate = self.store().read_gate();
        let store = self.store();
        let mut periods: BTreeMap<(String, String, String), PeriodCounts> = BTreeMap::new();
        for item in store.log() {
            let (seq, bytes) = item?;
            // Cheap test first on an entry logged as JSON: most are not consent events.
            if bytes.first() == Some(&b'{')
                && !bytes
                    .windows(b"consent.changed".len())
                    .any(|w| w == b"consent.changed")
            {
                continue;
            }
            let LogEntry::Event(event) = crate::decode_log(&bytes)? else {
                continue;
            };
            if event.event_type != cmdm_domain::EventType::ConsentChanged {
                continue;
            }
            let Some(Payload::Consent(consent)) = open_payload(store, &event, seq)? else {
                continue;
            };
            let period = event.time.to_rfc3339()[..7].to_owned();
            let channel = consent.channel.as_str().to_owned();
            let counts = periods
                .entry((period.clone(), consent.purpose.clone(), channel.clone()))
                .or_insert_with(|| PeriodCounts {
                    period,
                    purpose: consent.purpose.clone(),
                    channel,
                    ..PeriodCounts::default()
                });
            match consent.status {
                ConsentStatus::Granted => counts.granted += 1,
                ConsentStatus::Denied => counts.denied += 1,
                ConsentStatus::Withdrawn => counts.withdrawn += 1,
            }
        }
        let mut report = ConsentReport {
            periods: periods.into_values().collect(),
            ..ConsentReport::default()
        };
        let mut migrations: BTreeMap<(String, String, String), u64> = BTreeMap::new();
        for item in store.tree(TreeName::Entities).iter() {
            let (_, bytes) = item.map_err(cmdm_store::StoreError::from)?;
            let golden: GoldenRecord = cmdm_store::decode_bin(TreeName::Entities, &bytes)?;
            report.customers += 1;
            let out: Vec<_> = golden
                .consents
                .values()
                .filter(|c| c.status != ConsentStatus::Granted)
                .collect();
            let granted: Vec<_> = golden
                .consents
                .values()
                .filter(|c| c.status == ConsentStatus::Granted)
                .collect();
            for left in &out {
                for joined in &granted {
                    if left.purpose == joined.purpose
                        && left.channel != joined.channel
                        && joined.time > left.time
                    {
                        *migrations
                            .entry((
                                left.purpose.clone(),
                                left.channel.as_str().to_owned(),
                                joined.channel.as_str().to_owned(),
                            ))
                            .or_default() += 1;
                    }
                }
            }
            let topics = golden
                .preferences
                .iter()
                .filter(|(k, _)| k.starts_with("topic."));
            let (topics_in, topics_out): (Vec<_>, Vec<_>) =
                topics.partition(|(_, v)| v.value == "true");
            let mut dnc = golden
                .preferences
                .get(DO_NOT_CONTACT)
                .is_some_and(|v| v.value == "true");
            // What was declared about the person's addresses counts as theirs.
            let mut point_out = false;
            for point in &golden.contact_points {
                let Some(state) = store
                    .get_bin::<ContactPointState>(TreeName::ContactPoints, point.as_bytes())?
                else {
                    continue;
                };
                point_out |= state
                    .consents
                    .values()
                    .any(|c| c.value.status != ConsentStatus::Granted)
                    || state
                        .preferences
                        .iter()
                        .any(|(k, v)| k.starts_with("topic.") && v.value == "false");
                dnc |= state
                    .preferences
                    .get(DO_NOT_CONTACT)
                    .is_some_and(|v| v.value == "true");
            }
            if !out.is_empty() || !topics_out.is_empty() || point_out || dnc {
                report.customers_with_opt_out += 1;
                if !dnc && (!granted.is_empty() || !topics_in.is_empty()) {
                    report.atomic_opt_outs_avoided += 1;
                }
            }
        }
        report.migrations = migrations
            .into_iter()
            .map(|((purpose, from, to), customers)| Migration {
                purpose,
                from,
                to,
                customers,
            })
            .collect();
        Ok(report)
    }
}

/// A consent as the decision weighs it (an expiry that does not parse was refused at
/// ingest, so it is read as none).
fn declared(
    status: ConsentStatus,
    expires_at: Option<&str>,
    legal_basis: &Option<String>,
    declared_by: String,
    time: Timestamp,
) -> DeclaredConsent {
    DeclaredConsent {
        status,
        expires_at: expires_at.and_then(|e| Timestamp::parse_rfc3339("expires_at", e).ok()),
        legal_basis: legal_basis.clone(),
        declared_by,
        time,
    }
}

/// Keeps the more restrictive consent; among equals, the more recent declaration.
fn restrict(held: &mut Option<DeclaredConsent>, candidate: DeclaredConsent) {
    let wins = held.as_ref().is_none_or(|h| {
        candidate.status < h.status || (candidate.status == h.status && candidate.time > h.time)
    });
    if wins {
        *held = Some(candidate);
    }
}

/// An unsubscribe from a topic anywhere outweighs a subscription elsewhere.
fn declare_topic(held: &mut Option<(bool, String)>, subscribed: bool, by: String) {
    if held.as_ref().is_none_or(|(s, _)| *s && !subscribed) {
        *held = Some((subscribed, by));
    }
}
