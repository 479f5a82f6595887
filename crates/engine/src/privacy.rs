//! The rights of the person: erasure (crypto-shredding of the log plus a purge of every
//! projection and of the files that held them) and subject access (export).

use std::collections::BTreeMap;

use cmdm_domain::{
    ContactPointState, Decision, GoldenId, LoggedEvent, Payload, SourceKey, StewardNote, Timestamp,
};
use cmdm_matching::Prepared;
use cmdm_store::{PurgeReport, Store, TreeName};
use serde::Serialize;
use tracing::info;

use crate::keys::KeyEntry;
use crate::projector::{Working, dedup_key};
use crate::{Engine, EngineError, Result};

/// What happens to an event about a source record whose person was erased.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AfterErasure {
    /// Refused (to the dead letter topic): the spoke must stop sending about that record.
    #[default]
    Reject,
    /// Accepted as the start of a new person's record, with a new data key.
    AcceptAsNew,
}

/// What an erasure did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErasureReport {
    /// The sequence number of the `erased` log entry.
    pub seq: u64,
    pub entity: GoldenId,
    pub merged_ids: Vec<GoldenId>,
    pub records: Vec<SourceKey>,
    pub contact_points: usize,
    /// The rewrite of the store's files, if it was done now; otherwise it is due by
    /// `purge_due` (see `EngineConfig::purge_delay`).
    pub purge: Option<PurgeReport>,
    pub purge_due: Option<Timestamp>,
}

/// Everything held about a person, for a subject access request.
#[derive(Debug, Clone, Serialize)]
pub struct SubjectExport {
    pub golden_id: GoldenId,
    pub exported_at: Timestamp,
    pub golden_record: cmdm_domain::GoldenRecord,
    /// Each source record as the hub holds it: values with their event time, consents with
    /// their evidence, preferences and recorded contacts.
    pub source_records: Vec<cmdm_domain::SourceRecord>,
    /// Declarations made about the person's e-mail addresses and phone numbers.
    pub contact_points: BTreeMap<String, ContactPointState>,
    /// Every event and decision about the person, payloads included.
    pub history: Vec<crate::HistoryEntry>,
    pub review_tasks: Vec<cmdm_domain::ReviewTask>,
}

impl Engine {
    /// How many spoke events the store has applied: one entry each in the dedup tree, or
    /// for a record's first event beside the record's data key ([`crate::keys`]). Walks
    /// both trees, under the read gate (a batch being written counts whole or not at all).
    pub fn events_applied(&self) -> Result<u64> {
        let store = self.store();
        let _gate = store.read_gate();
        let mut applied = store.tree(TreeName::Dedup).len() as u64;
        for item in store.tree(TreeName::Keys).iter() {
            let (_, value) = item.map_err(cmdm_store::StoreError::from)?;
            if KeyEntry::decode(&value)?.first.is_some() {
                applied += 1;
            }
        }
        Ok(applied)
    }
}

/// A logged event opened with its data key: its payload, or `None` when the key was
/// erased (crypto-shredded), and whether the event made its record's key, which counts
/// it for dedup in its stead ([`crate::keys`]).
pub(crate) struct Opened {
    pub payload: Option<Payload>,
    pub counted: bool,
}

/// Opens a logged event (numbered `seq`), reading its key entry once.
pub(crate) fn open_event(store: &Store, event: &LoggedEvent, seq: u64) -> Result<Opened> {
    let key_name = event
        .key_ref
        .clone()
        .unwrap_or_else(|| event.key().encode());
    let Some(bytes) = store.get(TreeName::Keys, key_name.as_bytes())? else {
        return Ok(Opened {
            payload: None,
            counted: false,
        });
    };
    let entry = KeyEntry::decode(&bytes)?;
    let counted = event.key_ref.is_none()
        && entry
            .first
            .as_ref()
            .is_some_and(|(first, id)| *first == seq && *id == event.id);
    let payload = match entry.key.open(&event.sealed) {
        Ok(plain) => Some(serde_json::from_slice(&plain)?),
        // The record was erased after this event and has since started again under a
        // new key: this older event belongs to the erased person.
        Err(_) if event.key_ref.is_none() && erased_after(store, &key_name, seq)? => None,
        Err(e) => return Err(e.into()),
    };
    Ok(Opened { payload, counted })
}

/// The payload of a logged event, or `None` when its data key was erased (crypto-shredded).
pub(crate) fn open_payload(
    store: &Store,
    event: &LoggedEvent,
    seq: u64,
) -> Result<Option<Payload>> {
    Ok(open_event(store, event, seq)?.payload)
}

fn erased_after(store: &Store, record: &str, seq: u64) -> Result<bool> {
    Ok(store
        .get(TreeName::Erased, record.as_bytes())?
        .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
        .is_some_and(|b| u64::from_be_bytes(b) > seq))
}

/// The contact point keys (`email:…`, `phone:…`) a record's prepared form holds.
pub(crate) fn contact_points_of(prepared: &Prepared) -> Vec<String> {
    ["email", "phone"]
        .into_iter()
        .filter_map(|field| prepared.get(field).map(|v| format!("{field}:{v}")))
        .collect()
}

/// Meta key set while an erasure's rewrite of the store is outstanding; its value is the
/// time of the oldest erasure waiting for it (microseconds, big-endian).
const PURGE_PENDING: &[u8] = b"purge_pending";

fn pending_since(store: &Store) -> Result<Option<Timestamp>> {
    Ok(store
        .get(TreeName::Meta, PURGE_PENDING)?
        .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
        .map(|b| Timestamp(i64::from_be_bytes(b))))
}

/// Rewrites the store's files and clears the pending mark.
fn purge_now(store: &Store) -> Result<PurgeReport> {
    let report = store.purge()?;
    store
        .tree(TreeName::Meta)
        .remove(PURGE_PENDING)
        .map_err(cmdm_store::StoreError::from)?;
    store.flush_blocking()?;
    Ok(report)
}

/// Finishes the rewrite outstanding after erasures (deferred, or interrupted by a crash);
/// returns whether there was one. Called when a data directory is opened.
pub fn finish_pending_purge(engine: &Engine) -> Result<bool> {
    if pending_since(engine.store())?.is_none() {
        return Ok(false);
    }
    let _writer = engine.lock_index()?;
    purge_now(engine.store())?;
    Ok(true)
}

impl Engine {
    /// Whether a source record belongs to an erased person.
    pub fn is_erased(&self, key: &SourceKey) -> Result<bool> {
        Ok(self
            .store()
            .get(TreeName::Erased, key.encode().as_bytes())?
            .is_some())
    }

    /// Erases a person: deletes the data keys of every source record of the entity and of
    /// the contact points it holds (so their events in the log can no longer be read),
    /// purges every projection and index entry, publishes tombstones for the entity and
    /// the ids merged into it, logs an `erased` entry without personal data, and rewrites
    /// the store's files so that nothing erased is left in any of them.
    pub fn erase(&self, id: GoldenId, by: &str, comment: &str) -> Result<ErasureReport> {
        let mut guard = self.lock_index()?;
        let mut index = self.take_index(&mut guard)?;
        let golden = self
            .golden(id)?
            .ok_or_else(|| EngineError::NotFound(format!("no golden record {id}")))?
            .record;
        let store = self.store();
        let mut contact_keys = Vec::new();
        let mut points = Vec::new();
        // Each member's prepared form, whose blocking keys the index gives up below.
        let forms = golden
            .members
            .iter()
            .map(|member| Ok((member, self.stored_form(member)?)))
            .collect::<Result<Vec<_>>>()?;
        for prepared in forms.iter().filter_map(|(_, prepared)| prepared.as_ref()) {
            for point in contact_points_of(prepared) {
                if let Some(state) =
                    store.get_bin::<ContactPointState>(TreeName::ContactPoints, point.as_bytes())?
                    && !contact_keys.contains(&state.key_ref)
                {
                    contact_keys.push(state.key_ref);
                    points.push(point);
                }
            }
        }
        let decision = Decision::Erased {
            entity: golden.id,
            merged_ids: golden.merged_ids.clone(),
            records: golden.members.clone(),
            contact_keys: contact_keys.clone(),
            note: StewardNote {
                by: by.to_owned(),
                comment: comment.to_owned(),
                at: Timestamp::now(),
                task: None,
            },
        };
        let mut work = Working::new(
            store.begin()?,
            &self.config().survivorship,
            self.matcher().as_ref(),
        );
        let seq = crate::log_decision(work.batch(), decision.clone());
        self.projector().decision(&mut work, &decision, seq)?;
        // A record's first event was counted for dedup with its key: it moves to the
        // dedup tree, so that a redelivery of it still changes nothing.
        for member in &golden.members {
            let name = member.encode();
            if let Some(bytes) = work.batch().get(TreeName::Keys, name.as_bytes())?
                && let Some((first, id)) = KeyEntry::decode(&bytes)?.first
            {
                work.batch().put(
                    TreeName::Dedup,
                    dedup_key(&member.source, &id),
                    first.to_be_bytes(),
                );
            }
        }
        for name in golden
            .members
            .iter()
            .map(SourceKey::encode)
            .chain(contact_keys.iter().cloned())
        {
            work.batch().delete(TreeName::Keys, name);
        }
        crate::engine::write_outbox(&mut work)?;
        let mut batch = work.finish()?;
        // Changes not yet published would carry the person's golden record: drop them
        // (the tombstone written above follows them anyway).
        let ids: Vec<GoldenId> = std::iter::once(golden.id)
            .chain(golden.merged_ids.iter().copied())
            .collect();
        for item in store.tree(TreeName::Outbox).iter() {
            let (key, value) = item.map_err(cmdm_store::StoreError::from)?;
            let changes = crate::outbox::decode_changes(&value)?;
            let kept: Vec<_> = changes
                .iter()
                .filter(|c| {
                    !(ids.contains(&c.golden_id) && c.kind != cmdm_domain::OutboundKind::Merged)
                })
                .cloned()
                .collect();
            if kept.len() != changes.len() {
                if kept.is_empty() {
                    batch.delete(TreeName::Outbox, key.to_vec());
                } else {
                    let kept: Vec<crate::outbox::Change<'_>> =
                        kept.iter().map(Into::into).collect();
                    batch.put(
                        TreeName::Outbox,
                        key.to_vec(),
                        crate::outbox::encode(&kept)?,
                    );
                }
            }
        }
        // Until the store is rewritten its old files still hold the person: this mark says
        // since when, for a deferred rewrite and for the next open after a crash.
        let now = Timestamp::now();
        let since = pending_since(store)?.unwrap_or(now);
        batch.put(
            TreeName::Meta,
            PURGE_PENDING.to_vec(),
            since.0.to_be_bytes(),
        );
        batch.commit()?;
        index.apply(&decision);
        for (member, prepared) in &forms {
            index.drop_features(member, prepared.as_ref(), self.matcher().as_ref());
        }
        *guard = Some(index);
        let delay = self.config().purge_delay;
        let due = Timestamp(since.0 + i64::try_from(delay.as_micros()).unwrap_or(i64::MAX));
        let purge = if due <= now {
            Some(purge_now(store)?)
        } else {
            store.flush_blocking()?;
            None
        };
        drop(guard);
        info!(
            seq,
            entity = %golden.id,
            records = golden.members.len(),
            contact_points = points.len(),
            rewritten = purge.is_some(),
            "erased"
        );
        Ok(ErasureReport {
            seq,
            entity: golden.id,
            merged_ids: golden.merged_ids,
            records: golden.members,
            contact_points: points.len(),
            purge_due: purge.is_none().then_some(due),
            purge,
        })
    }

    /// Rewrites the store if erasures have waited for it for the configured delay; the
    /// hub calls it periodically. One rewrite serves every erasure before it.
    pub fn purge_if_due(&self) -> Result<Option<PurgeReport>> {
        let Some(since) = pending_since(self.store())? else {
            return Ok(None);
        };
        let delay = i64::try_from(self.config().purge_delay.as_micros()).unwrap_or(i64::MAX);
        if since.0.saturating_add(delay) > Timestamp::now().0 {
            return Ok(None);
        }
        let _writer = self.lock_index()?;
        let report = purge_now(self.store())?;
        info!(
            bytes_before = report.bytes_before,
            bytes_after = report.bytes_after,
            "store rewritten after erasures"
        );
        Ok(Some(report))
    }

    /// Everything the hub holds about a person (subject access), with provenance.
    pub fn export(&self, id: GoldenId) -> Result<SubjectExport> {
        let _gate = self.store().read_gate();
        let golden = self
            .golden(id)?
            .ok_or_else(|| EngineError::NotFound(format!("no golden record {id}")))?
            .record;
        let store = self.store();
        let mut source_records = Vec::new();
        let mut contact_points = BTreeMap::new();
        for member in &golden.members {
            if let Some(record) = self.source_record(member)? {
                source_records.push(record);
            }
        }
        for point in &golden.contact_points {
            if let Some(state) =
                store.get_bin::<ContactPointState>(TreeName::ContactPoints, point.as_bytes())?
            {
                contact_points.insert(point.clone(), state);
            }
        }
        let (_, mut history) = self.history(golden.id)?;
        let mut seqs: Vec<u64> = contact_points
            .values()
            .flat_map(|s| s.trail.iter().copied())
            .collect();
        seqs.sort_unstable();
        seqs.dedup();
        history.extend(self.entries(&seqs.into_iter().collect())?);
        history.sort_by_key(|h| h.seq);
        history.dedup_by_key(|h| h.seq);
        let ids: Vec<GoldenId> = std::iter::once(golden.id)
            .chain(golden.merged_ids.iter().copied())
            .collect();
        let review_tasks = self
            .tasks()?
            .into_iter()
            .filter(|t| golden.members.contains(&t.record) || ids.contains(&t.entity))
            .collect();
        Ok(SubjectExport {
            golden_id: golden.id,
            exported_at: Timestamp::now(),
            golden_record: golden,
            source_records,
            contact_points,
            history,
            review_tasks,
        })
    }
}
