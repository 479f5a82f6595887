//! Reads beyond a golden record by id: history, as-of reads, explanations and fuzzy
//! search. History and as-of reads come from the log itself, through each source
//! record's trail of log entries, so they show exactly what the hub did and when.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use cmdm_domain::{
    Decision, FieldWeight, GoldenId, GoldenRecord, LogEntry, Payload, SourceKey, SourceRecord,
    Stamp, Stamped, Timestamp,
};
use cmdm_matching::{PairVerdict, Prepared, survive};
use cmdm_store::TreeName;

use crate::index::{Found, pair_key};
use crate::{Engine, EngineError, Result};

/// One step in the history of an entity or a record.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct HistoryEntry {
    /// The entry's sequence number in the log.
    pub seq: u64,
    /// When the hub received the event or the steward decided; a matcher decision
    /// carries the time of the event that caused it.
    pub time: Timestamp,
    /// `event` or `decision`.
    pub kind: &'static str,
    /// The event type (`profile.upserted`) or the decision (`record_linked`).
    pub name: String,
    /// The spoke system, `matcher`, or the steward.
    pub by: String,
    /// The event's id and time at the spoke, the steward's comment, or the matcher's score.
    pub why: String,
    /// The event's payload or the decision, as JSON (`"erased"` once the data key is gone).
    pub detail: serde_json::Value,
}

/// Which moment an as-of read asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AsOf {
    /// Everything up to and including this log entry.
    Seq(u64),
    /// Everything the hub had received or decided by this time.
    Time(Timestamp),
}

/// Why a record belongs to its entity.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordExplanation {
    pub record: SourceKey,
    pub entity: Option<GoldenId>,
    /// The decision that put the record where it is.
    pub placed_by: Option<HistoryEntry>,
    /// The record against each other member of its entity (at most 20).
    pub members: Vec<(SourceKey, PairVerdict)>,
}

/// How two records compare and what the hub made of it.
#[derive(Debug, Clone, PartialEq)]
pub struct PairExplanation {
    pub a: SourceKey,
    pub b: SourceKey,
    pub entity_a: Option<GoldenId>,
    pub entity_b: Option<GoldenId>,
    pub verdict: PairVerdict,
    /// Sequence number of the steward decision that keeps them apart.
    pub kept_apart: Option<u64>,
    /// The outcome in words.
    pub summary: String,
}

/// What the call centre knows about a caller; any mix, at least one value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SearchQuery {
    /// Attribute name (`given_name`, `family_name`, `full_name`, `email`, `phone`,
    /// `postcode`, `date_of_birth`, …) → value.
    pub attributes: BTreeMap<String, String>,
}

/// One ranked answer of a search.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchHit {
    pub record: GoldenRecord,
    /// Match probability of the best member against the query.
    pub probability: f64,
    /// Total weight (log2 odds) of that member.
    pub weight: f64,
    /// The member that matched best.
    pub member: SourceKey,
    /// The fields that agreed (positive weight), with their levels.
    pub matched: Vec<FieldWeight>,
}

/// Entities scored per search at most, before paging.
const SEARCH_CANDIDATES: usize = 500;

impl Engine {
    /// The history of the entity an id resolves to: every event of its records and every
    /// decision about them, in log order.
    pub fn history(&self, id: GoldenId) -> Result<(GoldenId, Vec<HistoryEntry>)> {
        let _gate = self.store().read_gate();
        let golden = self
            .golden(id)?
            .ok_or_else(|| EngineError::NotFound(format!("no golden record {id}")))?
            .record;
        let mut seqs = BTreeSet::new();
        for member in &golden.members {
            if let Some(record) = self.source_record(member)? {
                seqs.extend(record.trail);
            }
        }
        Ok((golden.id, self.entries(&seqs)?))
    }

    /// The history of one source record.
    pub fn record_history(&self, key: &SourceKey) -> Result<Vec<HistoryEntry>> {
        let _gate = self.store().read_gate();
        let record = self
            .source_record(key)?
            .ok_or_else(|| EngineError::NotFound(format!("no source record {key}")))?;
        self.entries(&record.trail.into_iter().collect())
    }

    pub(crate) fn entries(&self, seqs: &BTreeSet<u64>) -> Result<Vec<HistoryEntry>> {
        let mut out = Vec::with_capacity(seqs.len());
        let mut clock = Timestamp(0);
        for &seq in seqs {
            let entry = self.log_entry(seq)?;
            out.push(self.describe(seq, &entry, &mut clock)?);
        }
        Ok(out)
    }

    fn log_entry(&self, seq: u64) -> Result<LogEntry> {
        let bytes = self
            .store()
            .log_entry(seq)?
            .ok_or_else(|| EngineError::Inconsistent(format!("log entry {seq} is missing")))?;
        crate::decode_log(&bytes)
    }

    /// The payload of a logged event, unless its data key was erased.
    fn payload(&self, event: &cmdm_domain::LoggedEvent, seq: u64) -> Result<Option<Payload>> {
        crate::privacy::open_payload(self.store(), event, seq)
    }

    /// A history entry for a log entry; `clock` carries the last event's time forward
    /// to the matcher's decisions that follow it.
    fn describe(&self, seq: u64, entry: &LogEntry, clock: &mut Timestamp) -> Result<HistoryEntry> {
        Ok(match entry {
            LogEntry::Event(event) => {
                *clock = event.received_at;
                HistoryEntry {
                    seq,
                    time: event.received_at,
                    kind: "event",
                    name: event.event_type.as_str().to_owned(),
                    by: event.source.clone(),
                    why: format!(
                        "event {} about {}, at the spoke {}",
                        event.id,
                        event.key(),
                        event.time.to_rfc3339()
                    ),
                    detail: match self.payload(event, seq)? {
                        Some(payload) => serde_json::to_value(payload)?,
                        None => serde_json::Value::String("erased".into()),
                    },
                }
            }
            LogEntry::Decision(decision) => {
                let (time, by, why) = match decision.steward() {
                    Some(note) => (note.at, note.by.clone(), note.comment.clone()),
                    None => (*clock, "matcher".to_owned(), matcher_reason(decision)),
                };
                HistoryEntry {
                    seq,
                    time,
                    kind: "decision",
                    name: decision.name().to_owned(),
                    by,
                    why,
                    detail: serde_json::to_value(decision)?,
                }
            }
        })
    }

    /// A golden record as it was at a moment: its members then, each as its events had
    /// made it by then, under today's survivorship rules. An id merged by then resolves
    /// to the entity it had joined.
    pub fn golden_as_of(&self, id: GoldenId, at: AsOf) -> Result<Option<GoldenRecord>> {
        let _gate = self.store().read_gate();
        let Some(now) = self.golden(id)? else {
            return Ok(None);
        };
        // Collect the trails of every record that was ever part of the lineage.
        let mut seen: BTreeSet<SourceKey> = now.record.members.iter().cloned().collect();
        let mut pending: Vec<SourceKey> = seen.iter().cloned().collect();
        // Each entry is read once, here, and replayed in order below.
        let mut entries: BTreeMap<u64, LogEntry> = BTreeMap::new();
        while let Some(key) = pending.pop() {
            let Some(record) = self.source_record(&key)? else {
                continue;
            };
            for seq in record.trail {
                if entries.contains_key(&seq) {
                    continue;
                }
                let entry = self.log_entry(seq)?;
                if let LogEntry::Decision(decision) = &entry {
                    for other in mentioned_records(decision) {
                        if seen.len() < 10_000 && seen.insert(other.clone()) {
                            pending.push(other);
                        }
                    }
                }
                entries.insert(seq, entry);
            }
        }
        let mut members: HashMap<SourceKey, GoldenId> = HashMap::new();
        let mut redirects: HashMap<GoldenId, GoldenId> = HashMap::new();
        let mut records: HashMap<SourceKey, SourceRecord> = HashMap::new();
        let mut clock = Timestamp(0);
        let mut version = 0;
        for (seq, entry) in entries {
            if let AsOf::Seq(last) = at
                && seq > last
            {
                break;
            }
            let time = match &entry {
                LogEntry::Event(e) => e.received_at,
                LogEntry::Decision(d) => d.steward().map_or(clock, |n| n.at),
            };
            if let AsOf::Time(t) = at
                && time > t
            {
                break;
            }
            clock = time;
            version = seq;
            match entry {
                LogEntry::Event(event) => {
                    // Declarations about a contact point belong to no record.
                    if event.key_ref.is_none()
                        && let Some(payload) = self.payload(&event, seq)?
                    {
                        let key = event.key();
                        records
                            .entry(key.clone())
                            .or_insert_with(|| SourceRecord::new(key))
                            .apply(
                                &payload,
                                Stamp {
                                    time: event.time,
                                    seq,
                                },
                            );
                    }
                }
                LogEntry::Decision(decision) => {
                    replay_membership(&decision, &mut members, &mut redirects);
                }
            }
        }
        let mut target = id;
        for _ in 0..64 {
            match redirects.get(&target) {
                Some(next) => target = *next,
                None => break,
            }
        }
        let mut keys: Vec<SourceKey> = members
            .iter()
            .filter(|(_, e)| **e == target)
            .map(|(k, _)| k.clone())
            .collect();
        if keys.is_empty() {
            return Ok(None);
        }
        keys.sort();
        let survived = survive(
            keys.iter().filter_map(|k| records.get(k)),
            &self.config().survivorship,
        );
        let mut merged_ids: Vec<GoldenId> = redirects
            .iter()
            .filter(|(_, to)| **to == target)
            .map(|(from, _)| *from)
            .collect();
        merged_ids.sort();
        Ok(Some(GoldenRecord {
            id: target,
            attributes: survived.attributes,
            consents: survived.consents,
            preferences: survived.preferences,
            contact_points: crate::projector::held_contact_points(
                self.matcher().as_ref(),
                keys.iter().filter_map(|k| records.get(k)),
            ),
            members: keys,
            merged_ids,
            version,
        }))
    }

    /// Why a record is where it is: the decision that placed it and how it compares
    /// with the other members of its entity.
    pub fn explain_record(&self, key: &SourceKey) -> Result<RecordExplanation> {
        let _gate = self.store().read_gate();
        let record = self
            .source_record(key)?
            .ok_or_else(|| EngineError::NotFound(format!("no source record {key}")))?;
        let entity = self.entity_of(key)?;
        let mut placed_by = None;
        for &seq in record.trail.iter().rev() {
            if let LogEntry::Decision(decision) = self.log_entry(seq)?
                && places(&decision, key)
            {
                let mut clock = Timestamp(0);
                placed_by = Some(self.describe(seq, &LogEntry::Decision(decision), &mut clock)?);
                break;
            }
        }
        let mut members = Vec::new();
        if let Some(entity) = entity
            && let Some(golden) = self.golden(entity)?
        {
            let ours = self.prepared(&record);
            for other in golden.record.members.iter().filter(|m| *m != key).take(20) {
                if let Some(theirs) = self.source_record(other)? {
                    members.push((
                        other.clone(),
                        self.matcher().compare(&ours, &self.prepared(&theirs)),
                    ));
                }
            }
        }
        Ok(RecordExplanation {
            record: key.clone(),
            entity,
            placed_by,
            members,
        })
    }

    /// How two records compare, whether they share an entity, and why (not).
    pub fn explain_pair(&self, a: &SourceKey, b: &SourceKey) -> Result<PairExplanation> {
        let _gate = self.store().read_gate();
        let load = |k: &SourceKey| {
            self.source_record(k)?
                .ok_or_else(|| EngineError::NotFound(format!("no source record {k}")))
        };
        let (ra, rb) = (load(a)?, load(b)?);
        let verdict = self
            .matcher()
            .compare(&self.prepared(&ra), &self.prepared(&rb));
        let (entity_a, entity_b) = (self.entity_of(a)?, self.entity_of(b)?);
        let kept_apart = self
            .store()
            .get(TreeName::Apart, &pair_key(a, b))?
            .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
            .map(u64::from_be_bytes);
        let p = verdict.explanation.probability;
        let summary = if entity_a.is_some() && entity_a == entity_b {
            format!(
                "same entity {}",
                entity_a.map(|e| e.to_string()).unwrap_or_default()
            )
        } else if let Some(seq) = kept_apart {
            let entry = self.log_entry(seq)?;
            match &entry {
                LogEntry::Decision(d) => match d.steward() {
                    Some(note) => format!(
                        "kept apart by {} ({}, log entry {seq}): {}",
                        note.by,
                        d.name(),
                        note.comment
                    ),
                    None => format!("kept apart (log entry {seq})"),
                },
                LogEntry::Event(_) => format!("kept apart (log entry {seq})"),
            }
        } else if verdict.contradict {
            "different entities: they contradict each other on identity fields".to_owned()
        } else if p >= verdict.link {
            format!(
                "different entities although the pair scores {p:.4} ≥ link {:.4}: a record \
                 must fit every member of an entity, or neither record has been matched \
                 since the other arrived",
                verdict.link
            )
        } else if p >= verdict.review {
            format!(
                "in the review band ({:.4} ≤ {p:.4} < {:.4}): a steward decides",
                verdict.review, verdict.link
            )
        } else {
            format!(
                "different entities: {p:.4} is below the review threshold {:.4}",
                verdict.review
            )
        };
        Ok(PairExplanation {
            a: a.clone(),
            b: b.clone(),
            entity_a,
            entity_b,
            verdict,
            kept_apart,
            summary,
        })
    }

    fn prepared(&self, record: &SourceRecord) -> Prepared {
        self.matcher().prepare(record)
    }

    /// Golden records ranked by how well their best member matches what is known of a
    /// person; `offset` and `limit` page through the ranking.
    pub fn search(
        &self,
        query: &SearchQuery,
        offset: usize,
        limit: usize,
    ) -> Result<(Vec<SearchHit>, usize)> {
        let key = SourceKey {
            source: "search".into(),
            subject: "query".into(),
        };
        let mut probe = SourceRecord::new(key);
        for (name, value) in &query.attributes {
            probe.attributes.insert(
                name.clone(),
                Stamped {
                    value: Some(value.clone()),
                    stamp: Stamp {
                        time: Timestamp(0),
                        seq: 0,
                    },
                },
            );
        }
        let prepared = self.prepared(&probe);
        if prepared.values.is_empty() {
            return Err(EngineError::Refused(
                "the query has no value the matcher can use".into(),
            ));
        }
        // Best member per entity, scored while the index is held.
        let mut best: HashMap<GoldenId, (f64, SourceKey, PairVerdict)> = HashMap::new();
        {
            let mut guard = self.lock_index()?;
            if guard.is_none() {
                *guard = Some(self.load_index()?);
            }
            let index = guard.as_ref().expect("loaded above");
            let mut shared: HashMap<u32, usize> = HashMap::new();
            for block in self.matcher().block_keys(&prepared) {
                if let Found::Records(slots) = index.lookup(&block.0) {
                    for &slot in slots {
                        *shared.entry(slot).or_default() += 1;
                    }
                }
            }
            let ranked = shared
                .into_iter()
                .map(|(slot, n)| ((index.key(slot), slot), n));
            for (_, slot) in cmdm_matching::closest(ranked, SEARCH_CANDIDATES) {
                let Some(entity) = index.entity_of(slot) else {
                    continue;
                };
                let Some(features) = self.stored_form(index.key(slot))? else {
                    continue;
                };
                let verdict = self.matcher().compare(&prepared, &features);
                let weight = verdict.explanation.weight;
                if best
                    .get(&entity)
                    .is_none_or(|(w, k, _)| weight > *w || (weight == *w && features.key < *k))
                {
                    best.insert(entity, (weight, features.key.clone(), verdict));
                }
            }
        }
        let mut ranked: Vec<(GoldenId, (f64, SourceKey, PairVerdict))> = best.into_iter().collect();
        ranked.sort_by(|(ea, (wa, _, _)), (eb, (wb, _, _))| wb.total_cmp(wa).then(ea.cmp(eb)));
        let total = ranked.len();
        let mut hits = Vec::new();
        for (entity, (weight, member, verdict)) in ranked.into_iter().skip(offset).take(limit) {
            let Some(found) = self.golden(entity)? else {
                continue;
            };
            hits.push(SearchHit {
                record: found.record,
                probability: verdict.explanation.probability,
                weight,
                member,
                matched: verdict
                    .explanation
                    .fields
                    .into_iter()
                    .filter(|f| f.weight > 0.0)
                    .collect(),
            });
        }
        Ok((hits, total))
    }
}

fn matcher_reason(decision: &Decision) -> String {
    match decision {
        Decision::EntityCreated { .. } => "no existing entity matched".to_owned(),
        Decision::RecordLinked { explanation, .. }
        | Decision::EntitiesMerged { explanation, .. }
        | Decision::ReviewOpened { explanation, .. } => format!(
            "{} weight {:.2}, probability {:.4}",
            explanation.rule, explanation.weight, explanation.probability
        ),
        Decision::RecordUnlinked { reason, .. } => reason.clone(),
        _ => String::new(),
    }
}

/// Whether a decision put `key` into an entity.
fn places(decision: &Decision, key: &SourceKey) -> bool {
    match decision {
        Decision::EntityCreated { record, .. }
        | Decision::RecordLinked { record, .. }
        | Decision::StewardLinked { record, .. }
        | Decision::RecordSplit { record, .. } => record == key,
        _ => false,
    }
}

/// The source records a decision names.
fn mentioned_records(decision: &Decision) -> Vec<SourceKey> {
    match decision {
        Decision::EntityCreated { record, .. }
        | Decision::RecordLinked { record, .. }
        | Decision::RecordUnlinked { record, .. }
        | Decision::ReviewOpened { record, .. }
        | Decision::RecordSplit { record, .. }
        | Decision::StewardLinked { record, .. } => vec![record.clone()],
        Decision::Erased { records, .. } => records.clone(),
        _ => Vec::new(),
    }
}

/// Follows one decision's effect on membership, for as-of reads.
fn replay_membership(
    decision: &Decision,
    members: &mut HashMap<SourceKey, GoldenId>,
    redirects: &mut HashMap<GoldenId, GoldenId>,
) {
    match decision {
        Decision::EntityCreated { entity, record }
        | Decision::RecordLinked { entity, record, .. }
        | Decision::StewardLinked { entity, record, .. } => {
            members.insert(record.clone(), *entity);
        }
        Decision::EntitiesMerged {
            survivor, merged, ..
        }
        | Decision::StewardMerged {
            survivor, merged, ..
        } => {
            for e in members.values_mut() {
                if e == merged {
                    *e = *survivor;
                }
            }
            for to in redirects.values_mut() {
                if to == merged {
                    *to = *survivor;
                }
            }
            redirects.insert(*merged, *survivor);
        }
        Decision::RecordUnlinked { record, .. } => {
            members.remove(record);
        }
        Decision::RecordSplit { record, to, .. } => {
            redirects.remove(to);
            members.insert(record.clone(), *to);
        }
        Decision::Erased {
            records,
            merged_ids,
            ..
        } => {
            for record in records {
                members.remove(record);
            }
            for id in merged_ids {
                redirects.remove(id);
            }
        }
        Decision::ReviewOpened { .. } | Decision::KeptApart { .. } => {}
    }
}
