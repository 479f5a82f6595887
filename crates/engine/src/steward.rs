//! Steward commands: merge, keep apart, split, link, and the review tasks they resolve.
//! Each is one decision in the log, with the steward's identity and comment, projected
//! and published exactly like the matcher's own decisions.

use cmdm_domain::{Decision, GoldenId, LogEntry, ReviewStatus, ReviewTask, SourceKey, StewardNote};
use cmdm_store::TreeName;
use tracing::info;

use crate::engine::write_outbox;
use crate::index::MatchIndex;
use crate::projector::Working;
use crate::{Engine, EngineError, Result};

/// What a steward asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StewardAction {
    /// The two entities are one person; the older id survives.
    Merge { entity: GoldenId, other: GoldenId },
    /// The two entities are different people, now and after any re-match.
    KeepApart { entity: GoldenId, other: GoldenId },
    /// The record is not the person of its entity.
    Split { record: SourceKey },
    /// The record belongs to this entity.
    Link { record: SourceKey, entity: GoldenId },
}

/// How a steward resolves a review task ("does this record belong to that entity?").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskAnswer {
    /// Yes: the record's entity and the proposed entity merge.
    Merge,
    /// No: they are kept apart for good.
    KeepApart,
}

/// A steward's request: the action, who asks and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StewardRequest {
    pub action: StewardAction,
    pub by: String,
    pub comment: String,
    pub task: Option<u64>,
}

/// What a steward decision did.
#[derive(Debug, Clone, PartialEq)]
pub struct StewardOutcome {
    /// The decision's sequence number in the log.
    pub seq: u64,
    pub decision: Decision,
    /// Ids given by the steward that had been merged, with the id they resolved to.
    pub redirected: Vec<(GoldenId, GoldenId)>,
}

impl Engine {
    /// Applies a steward's decision: validated against the current state, logged with
    /// the steward's note, projected, published, and flushed before it returns.
    pub fn steward(&self, request: StewardRequest) -> Result<StewardOutcome> {
        let mut guard = self.lock_index()?;
        let mut index = self.take_index(&mut guard)?;
        let result = self.steward_in(&mut index, request);
        // A refusal happens before anything changed; any other error may leave the index
        // ahead of the store, so it is reloaded.
        if matches!(
            &result,
            Ok(_) | Err(EngineError::Refused(_) | EngineError::NotFound(_))
        ) {
            *guard = Some(index);
        }
        let outcome = result?;
        self.store().flush_blocking()?;
        info!(
            seq = outcome.seq,
            decision = outcome.decision.name(),
            "steward decision"
        );
        Ok(outcome)
    }

    /// Resolves an open review task: merge its record's entity with the proposed one,
    /// or keep them apart.
    pub fn resolve_task(
        &self,
        task: u64,
        answer: TaskAnswer,
        by: &str,
        comment: &str,
    ) -> Result<StewardOutcome> {
        let review = self
            .task(task)?
            .ok_or_else(|| EngineError::NotFound(format!("no review task {task}")))?;
        let record_entity = self.entity_of(&review.record)?.ok_or_else(|| {
            EngineError::Refused(format!(
                "task {task}: its record {} belongs to no entity any more",
                review.record
            ))
        })?;
        let (entity, other) = (record_entity, review.entity);
        let action = match answer {
            TaskAnswer::Merge => StewardAction::Merge { entity, other },
            TaskAnswer::KeepApart => StewardAction::KeepApart { entity, other },
        };
        self.steward(StewardRequest {
            action,
            by: by.to_owned(),
            comment: comment.to_owned(),
            task: Some(task),
        })
    }

    /// A review task by id.
    pub fn task(&self, task: u64) -> Result<Option<ReviewTask>> {
        Ok(self
            .store()
            .get_json(TreeName::Reviews, &task.to_be_bytes())?)
    }

    /// Review tasks, in id order (oldest first).
    pub fn tasks(&self) -> Result<Vec<ReviewTask>> {
        let _gate = self.store().read_gate();
        self.store()
            .tree(TreeName::Reviews)
            .iter()
            .map(|item| {
                let (_, value) = item.map_err(cmdm_store::StoreError::from)?;
                Ok(cmdm_store::decode(TreeName::Reviews, &value)?)
            })
            .collect()
    }

    /// The entity a source record belongs to.
    pub fn entity_of(&self, key: &SourceKey) -> Result<Option<GoldenId>> {
        let _gate = self.store().read_gate();
        match self
            .store()
            .get(TreeName::Records, key.encode().as_bytes())?
        {
            Some(bytes) => Ok(crate::held::Parts::of(&bytes)?.entity),
            None => Ok(None),
        }
    }

    /// Follows redirects to the live entity; an unknown id is not found.
    fn live_entity(
        &self,
        id: GoldenId,
        redirected: &mut Vec<(GoldenId, GoldenId)>,
    ) -> Result<GoldenId> {
        let found = self
            .golden(id)?
            .ok_or_else(|| EngineError::NotFound(format!("no golden record {id}")))?;
        if found.record.id != id {
            redirected.push((id, found.record.id));
        }
        Ok(found.record.id)
    }

    fn steward_in(
        &self,
        index: &mut MatchIndex,
        request: StewardRequest,
    ) -> Result<StewardOutcome> {
        if request.by.trim().is_empty() {
            return Err(EngineError::Refused(
                "a steward decision needs the steward's identity".into(),
            ));
        }
        if let Some(task) = request.task {
            let review = self
                .task(task)?
                .ok_or_else(|| EngineError::NotFound(format!("no review task {task}")))?;
            if let Some(done) = &review.resolution {
                return Err(EngineError::Refused(format!(
                    "task {task} is already resolved: {} by {} (log entry {})",
                    done.action, done.by, done.seq
                )));
            }
            debug_assert_eq!(review.status, ReviewStatus::Open);
        }
        let mut work = Working::new(
            self.store().begin()?,
            &self.config().survivorship,
            self.matcher().as_ref(),
        );
        let seq = work.view().next_seq();
        let note = StewardNote {
            by: request.by.clone(),
            comment: request.comment.clone(),
            at: cmdm_domain::Timestamp::now(),
            task: request.task,
        };
        let mut redirected = Vec::new();
        let decision = match &request.action {
            StewardAction::Merge { entity, other } | StewardAction::KeepApart { entity, other } => {
                let a = self.live_entity(*entity, &mut redirected)?;
                let b = self.live_entity(*other, &mut redirected)?;
                if a == b {
                    return Err(EngineError::Refused(format!(
                        "{entity} and {other} are already one entity, {a}"
                    )));
                }
                match request.action {
                    StewardAction::Merge { .. } => Decision::StewardMerged {
                        survivor: a.min(b),
                        merged: a.max(b),
                        note,
                    },
                    _ => Decision::KeptApart {
                        entity: a.min(b),
                        other: a.max(b),
                        note,
                    },
                }
            }
            StewardAction::Split { record } => {
                let from = self.entity_of(record)?.ok_or_else(|| {
                    EngineError::NotFound(format!("source record {record} belongs to no entity"))
                })?;
                let golden = self
                    .golden(from)?
                    .ok_or_else(|| EngineError::Inconsistent(format!("entity {from} is absent")))?
                    .record;
                if golden.members.len() < 2 {
                    return Err(EngineError::Refused(format!(
                        "{record} is the only record of {from}: there is nothing to split it from"
                    )));
                }
                // The id the record once created comes back if it was merged into `from`.
                let revived = golden
                    .merged_ids
                    .iter()
                    .copied()
                    .find(|id| self.created_by(*id).ok().flatten().as_ref() == Some(record));
                Decision::RecordSplit {
                    record: record.clone(),
                    from,
                    to: revived.unwrap_or(GoldenId(seq)),
                    revived: revived.is_some(),
                    note,
                }
            }
            StewardAction::Link { record, entity } => {
                let entity = self.live_entity(*entity, &mut redirected)?;
                if self
                    .store()
                    .get(TreeName::Records, record.encode().as_bytes())?
                    .is_none()
                {
                    return Err(EngineError::NotFound(format!("no source record {record}")));
                }
                if self.entity_of(record)? == Some(entity) {
                    return Err(EngineError::Refused(format!(
                        "{record} already belongs to {entity}"
                    )));
                }
                Decision::StewardLinked {
                    record: record.clone(),
                    entity,
                    note,
                }
            }
        };
        let logged = crate::log_decision(work.batch(), decision.clone());
        debug_assert_eq!(logged, seq);
        self.projector().decision(&mut work, &decision, seq)?;
        index.apply(&decision);
        work.settle()?;
        write_outbox(&mut work)?;
        work.finish()?.commit()?;
        Ok(StewardOutcome {
            seq,
            decision,
            redirected,
        })
    }

    /// The source record whose arrival created an entity (its id is that decision's
    /// sequence number).
    pub fn created_by(&self, id: GoldenId) -> Result<Option<SourceKey>> {
        let _gate = self.store().read_gate();
        let Some(bytes) = self.store().log_entry(id.0)? else {
            return Ok(None);
        };
        Ok(match crate::decode_log(&bytes)? {
            LogEntry::Decision(Decision::EntityCreated { entity, record }) if entity == id => {
                Some(record)
            }
            _ => None,
        })
    }
}
