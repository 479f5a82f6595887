//! Matching a batch's new records on every core. Before a batch is applied in order, the
//! records it brings that the store does not hold yet are matched against the index as
//! the batch began, on all cores at once. Applied in order, an event takes its record's
//! outcome from there only if nothing that outcome read has changed since: no earlier
//! event of the batch touched its blocking keys, the records it compared or their
//! entities. Otherwise it is matched again, so the decisions are exactly those of one
//! record after the other.

use std::collections::HashSet;

use cmdm_domain::{Decision, GoldenId, InboundEvent, Payload, SourceKey, SourceRecord, Stamp};
use cmdm_matching::{MatchOutcome, Prepared};
use cmdm_store::TreeName;

use crate::engine::{Engine, Found};
use crate::index::{MatchIndex, block_hash};

/// Fewest events for which matching ahead on several cores pays for its threads.
const MIN_EVENTS: usize = 16;

/// A new record's outcome against the index as the batch began, and what it read.
pub(crate) struct Speculation {
    pub prepared: Prepared,
    pub outcome: MatchOutcome,
    pub generic: Vec<String>,
    /// Hashes of the blocking keys looked up.
    blocks: Vec<u64>,
    /// Records found and members of the entities compared.
    slots: Vec<u32>,
    entities: Vec<GoldenId>,
}

/// What the events applied so far in a batch changed in the index.
#[derive(Default)]
pub(crate) struct Touched {
    blocks: HashSet<u64>,
    slots: HashSet<u32>,
    entities: HashSet<GoldenId>,
    /// A decision this module does not follow: no speculation stands after it.
    everything: bool,
}

impl Touched {
    /// Whether a speculation read nothing changed since the batch began.
    pub fn untouched(&self, s: &Speculation) -> bool {
        !self.everything
            && s.blocks.iter().all(|b| !self.blocks.contains(b))
            && s.slots.iter().all(|r| !self.slots.contains(r))
            && s.entities.iter().all(|e| !self.entities.contains(e))
    }

    /// A record's prepared form and blocking keys moved.
    pub fn features(&mut self, slot: Option<u32>, blocks: Vec<u64>) {
        self.slots.extend(slot);
        self.blocks.extend(blocks);
    }

    /// A decision changed membership.
    pub fn decision(&mut self, decision: &Decision, index: &MatchIndex) {
        let mut record = |key: &SourceKey| self.slots.extend(index.find(key));
        match decision {
            Decision::EntityCreated { entity, record: r }
            | Decision::RecordLinked {
                entity, record: r, ..
            }
            | Decision::RecordUnlinked {
                entity, record: r, ..
            }
            | Decision::ReviewOpened {
                entity, record: r, ..
            } => {
                record(r);
                self.entities.insert(*entity);
            }
            Decision::EntitiesMerged {
                survivor, merged, ..
            } => {
                self.entities.insert(*survivor);
                self.entities.insert(*merged);
            }
            _ => self.everything = true,
        }
    }
}

impl Engine {
    /// Matches ahead, on every core, the batch's records that are new to the store and
    /// appear once in it; `None` for the other events.
    pub(crate) fn speculate(
        &self,
        index: &MatchIndex,
        events: &[InboundEvent],
    ) -> Vec<Option<Speculation>> {
        let workers = match self.config().match_ahead_threads {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            n => n,
        };
        if workers < 2 || events.len() < MIN_EVENTS {
            return Vec::new();
        }
        let keys: Vec<SourceKey> = events.iter().map(InboundEvent::key).collect();
        let mut seen: std::collections::HashMap<&SourceKey, usize> = Default::default();
        for key in &keys {
            *seen.entry(key).or_default() += 1;
        }
        let once: Vec<bool> = keys.iter().map(|k| seen[k] == 1).collect();
        let mut out: Vec<Option<Speculation>> = std::thread::scope(|scope| {
            let parts: Vec<_> = (0..workers)
                .map(|w| {
                    let (keys, once) = (&keys, &once);
                    scope.spawn(move || {
                        (w..events.len())
                            .step_by(workers)
                            .map(|i| {
                                let ahead = once[i]
                                    .then(|| self.speculate_one(index, &events[i], &keys[i]))
                                    .flatten();
                                (i, ahead)
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            let mut out: Vec<Option<Speculation>> = (0..events.len()).map(|_| None).collect();
            for part in parts {
                // A worker that failed only loses its speculations: the batch then
                // matches those records in order.
                for (i, ahead) in part.join().unwrap_or_default() {
                    out[i] = ahead;
                }
            }
            out
        });
        out.shrink_to_fit();
        out
    }

    fn speculate_one(
        &self,
        index: &MatchIndex,
        event: &InboundEvent,
        key: &SourceKey,
    ) -> Option<Speculation> {
        let Payload::Profile(_) = &event.payload else {
            return None;
        };
        if index.find(key).is_some()
            || self
                .store()
                .get(TreeName::Records, key.encode().as_bytes())
                .ok()?
                .is_some()
        {
            return None;
        }
        let mut record = SourceRecord::new(key.clone());
        record.apply(
            &event.payload,
            Stamp {
                time: event.time,
                seq: 0,
            },
        );
        let prepared = self.matcher().prepare(&record);
        if prepared.values.is_empty() {
            return None;
        }
        let (outcome, found) = self.match_outcome(index, &prepared, None);
        let Found {
            entities,
            slots,
            generic,
        } = found;
        let mut read = slots;
        for &entity in &entities {
            read.extend_from_slice(index.members(entity));
        }
        Some(Speculation {
            blocks: self
                .matcher()
                .block_keys(&prepared)
                .iter()
                .map(|k| block_hash(&k.0))
                .collect(),
            prepared,
            outcome,
            generic,
            slots: read,
            entities: entities.into_iter().collect(),
        })
    }
}
