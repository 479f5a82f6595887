//! Projection of log entries into the read models. Deterministic: the live path and a
//! replay call exactly these functions with the same entries in the same order.

use std::collections::BTreeSet;

use cmdm_domain::record::RecordChange;
use cmdm_domain::{
    Decision, GoldenId, GoldenRecord, LoggedEvent, Payload, ReviewStatus, ReviewTask, SourceKey,
    SourceRecord, Stamp,
};
use cmdm_matching::{Matcher, Prepared, Survivorship, survive};
use cmdm_store::{Batch, TreeName};

use crate::Result;

/// The rules projection depends on: the matcher's block keys and survivorship.
pub(crate) struct Projector<'a> {
    pub matcher: &'a dyn Matcher,
    pub rules: &'a Survivorship,
}

/// What projecting one entry touched, for the outbox.
#[derive(Debug, Default)]
pub(crate) struct Touched {
    pub entities: BTreeSet<GoldenId>,
    pub merged: Vec<(GoldenId, GoldenId)>,
    /// Values of the event's record that did not parse.
    pub findings: usize,
}

pub(crate) fn dedup_key(source: &str, id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(source.len() + id.len() + 1);
    key.extend_from_slice(source.as_bytes());
    key.push(0);
    key.extend_from_slice(id.as_bytes());
    key
}

pub(crate) fn id_key(id: GoldenId) -> [u8; 8] {
    id.0.to_be_bytes()
}

pub(crate) fn membership(batch: &Batch<'_>, record: &SourceKey) -> Result<Option<GoldenId>> {
    Ok(batch
        .get(TreeName::Membership, record.encode().as_bytes())?
        .and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok())
        .map(|b| GoldenId(u64::from_be_bytes(b))))
}

impl Projector<'_> {
    /// Applies a spoke event to its source record and its prepared form. `payload` is
    /// `None` when the record's data key was erased: the event then only counts for dedup.
    /// Returns the prepared form when the profile changed.
    pub fn event(
        &self,
        batch: &mut Batch<'_>,
        event: &LoggedEvent,
        payload: Option<&Payload>,
        seq: u64,
        touched: &mut Touched,
    ) -> Result<(SourceRecord, RecordChange, Option<Prepared>)> {
        batch.put(
            TreeName::Dedup,
            dedup_key(&event.source, &event.id),
            seq.to_be_bytes(),
        );
        let key = event.key();
        let mut record = batch
            .get_json::<SourceRecord>(TreeName::Records, key.encode().as_bytes())?
            .unwrap_or_else(|| SourceRecord::new(key.clone()));
        let Some(payload) = payload else {
            return Ok((record, RecordChange::None, None));
        };
        let change = record.apply(
            payload,
            Stamp {
                time: event.time,
                seq,
            },
        );
        if change == RecordChange::None {
            return Ok((record, change, None));
        }
        batch.put_json(TreeName::Records, key.encode(), &record)?;
        let prepared = if change == RecordChange::Profile {
            let prepared = self.matcher.prepare(&record);
            touched.findings += prepared.findings.len();
            if prepared.values.is_empty() {
                batch.delete(TreeName::Features, key.encode());
            } else {
                batch.put_bin(TreeName::Features, key.encode(), &prepared)?;
            }
            Some(prepared)
        } else {
            None
        };
        if let Some(entity) = membership(batch, &key)? {
            self.recompute(batch, entity, seq, touched)?;
        }
        Ok((record, change, prepared))
    }

    /// Applies a hub decision to membership, redirects and golden records.
    pub fn decision(
        &self,
        batch: &mut Batch<'_>,
        decision: &Decision,
        seq: u64,
        touched: &mut Touched,
    ) -> Result<()> {
        match decision {
            Decision::EntityCreated { entity, record } => {
                let golden = GoldenRecord {
                    id: *entity,
                    attributes: Default::default(),
                    consents: Default::default(),
                    preferences: Default::default(),
                    members: vec![record.clone()],
                    merged_ids: Vec::new(),
                    version: seq,
                };
                batch.put_json(TreeName::Entities, id_key(*entity), &golden)?;
                batch.put(TreeName::Membership, record.encode(), id_key(*entity));
                self.recompute(batch, *entity, seq, touched)?;
            }
            Decision::RecordLinked { entity, record, .. } => {
                if let Some(previous) = membership(batch, record)? {
                    self.remove_member(batch, previous, record, seq, touched)?;
                }
                let mut golden = self.entity(batch, *entity)?;
                if let Err(at) = golden.members.binary_search(record) {
                    golden.members.insert(at, record.clone());
                }
                batch.put_json(TreeName::Entities, id_key(*entity), &golden)?;
                batch.put(TreeName::Membership, record.encode(), id_key(*entity));
                self.recompute(batch, *entity, seq, touched)?;
            }
            Decision::EntitiesMerged {
                survivor, merged, ..
            } => {
                let gone = self.entity(batch, *merged)?;
                let mut golden = self.entity(batch, *survivor)?;
                for member in &gone.members {
                    batch.put(TreeName::Membership, member.encode(), id_key(*survivor));
                }
                let members: BTreeSet<_> = golden
                    .members
                    .iter()
                    .chain(&gone.members)
                    .cloned()
                    .collect();
                golden.members = members.into_iter().collect();
                golden.merged_ids.push(*merged);
                golden.merged_ids.extend(&gone.merged_ids);
                golden.merged_ids.sort();
                batch.put_json(TreeName::Entities, id_key(*survivor), &golden)?;
                batch.delete(TreeName::Entities, id_key(*merged));
                // Earlier merges into `merged` now point straight at the survivor.
                for old in gone.merged_ids.iter().chain([merged]) {
                    batch.put(TreeName::Redirects, id_key(*old), id_key(*survivor));
                }
                touched.entities.remove(merged);
                touched.merged.push((*merged, *survivor));
                self.recompute(batch, *survivor, seq, touched)?;
            }
            Decision::RecordUnlinked { entity, record, .. } => {
                batch.delete(TreeName::Membership, record.encode());
                self.remove_member(batch, *entity, record, seq, touched)?;
            }
            Decision::ReviewOpened {
                task,
                record,
                entity,
                explanation,
            } => {
                let review = ReviewTask {
                    id: *task,
                    record: record.clone(),
                    entity: *entity,
                    explanation: explanation.clone(),
                    status: ReviewStatus::Open,
                };
                batch.put_json(TreeName::Reviews, task.to_be_bytes(), &review)?;
            }
        }
        Ok(())
    }

    fn remove_member(
        &self,
        batch: &mut Batch<'_>,
        entity: GoldenId,
        record: &SourceKey,
        seq: u64,
        touched: &mut Touched,
    ) -> Result<()> {
        let mut golden = self.entity(batch, entity)?;
        golden.members.retain(|m| m != record);
        batch.put_json(TreeName::Entities, id_key(entity), &golden)?;
        self.recompute(batch, entity, seq, touched)
    }

    fn entity(&self, batch: &Batch<'_>, id: GoldenId) -> Result<GoldenRecord> {
        batch
            .get_json(TreeName::Entities, &id_key(id))?
            .ok_or_else(|| {
                crate::EngineError::Inconsistent(format!("entity {id} is referenced but absent"))
            })
    }

    /// Recomputes a golden record from its members; an entity left with no active
    /// member is removed.
    fn recompute(
        &self,
        batch: &mut Batch<'_>,
        id: GoldenId,
        seq: u64,
        touched: &mut Touched,
    ) -> Result<()> {
        let mut golden = self.entity(batch, id)?;
        touched.entities.insert(id);
        if golden.members.is_empty() {
            batch.delete(TreeName::Entities, id_key(id));
            return Ok(());
        }
        let mut records = Vec::with_capacity(golden.members.len());
        for member in &golden.members {
            if let Some(r) =
                batch.get_json::<SourceRecord>(TreeName::Records, member.encode().as_bytes())?
            {
                records.push(r);
            }
        }
        let survived = survive(&records, self.rules);
        golden.attributes = survived.attributes;
        golden.consents = survived.consents;
        golden.preferences = survived.preferences;
        golden.version = seq;
        batch.put_json(TreeName::Entities, id_key(id), &golden)?;
        Ok(())
    }
}
