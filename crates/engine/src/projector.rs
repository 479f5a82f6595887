//! Projection of log entries into the read models. Deterministic: the live path and a
//! replay call exactly these functions with the same entries in the same order, and the
//! result does not depend on where batches begin and end.

use std::collections::{BTreeMap, BTreeSet};

use crate::{FastMap, FastSet};

use cmdm_domain::record::RecordChange;
use cmdm_domain::{
    ContactPointState, Decision, GoldenId, GoldenRecord, LoggedEvent, Payload, Resolution,
    ReviewStatus, ReviewTask, SourceKey, SourceRecord, Stamp, StewardNote, Timestamp,
};
use cmdm_matching::survive::Survived;
use cmdm_matching::{BlockKey, Matcher, Prepared, Survivorship, survive, survive_onto};
use cmdm_store::{Batch, TreeName};

use crate::Result;
use crate::held::{Held, encode_features};

/// The rule projection depends on besides survivorship: the matcher's preparation.
pub(crate) struct Projector<'a> {
    pub matcher: &'a dyn Matcher,
}

/// What projecting touched, for the outbox.
#[derive(Debug, Default)]
pub(crate) struct Touched {
    pub entities: BTreeSet<GoldenId>,
    pub merged: Vec<(GoldenId, GoldenId)>,
    /// Entities a steward split a record into, with the entity it left.
    pub split: Vec<(GoldenId, GoldenId)>,
    /// Entities a steward kept apart, with the decision's sequence number.
    pub kept_apart: Vec<(GoldenId, GoldenId, u64)>,
    /// Values of the events' records that did not parse.
    pub findings: usize,
    /// Golden ids of erased persons (the entity and the ids merged into it).
    pub erased: Vec<GoldenId>,
}

/// The projections as one batch changes them, typed: each source record and golden
/// record is decoded at most once per batch and encoded once when the batch ends, and
/// golden values are recomputed once per entity, from its final members.
pub(crate) struct Working<'s> {
    batch: Batch<'s>,
    rules: &'s Survivorship,
    matcher: &'s dyn Matcher,
    /// Source records with their entity and prepared form, as stored together.
    records: FastMap<SourceKey, Worked>,
    /// Keys the store was asked for and holds no record under: asked once per batch.
    unstored: FastSet<SourceKey>,
    /// `None`: the entity is gone (merged away or left without members).
    entities: FastMap<GoldenId, Option<GoldenRecord>>,
    changed_entities: BTreeSet<GoldenId>,
    /// Entities whose golden values are out of date, and why.
    stale: BTreeMap<GoldenId, Stale>,
    /// Records' prepared forms and blocking keys the batch is done with.
    spent_forms: Vec<(Prepared, Vec<BlockKey>)>,
    pub touched: Touched,
}

impl<'s> Working<'s> {
    pub fn new(batch: Batch<'s>, rules: &'s Survivorship, matcher: &'s dyn Matcher) -> Self {
        Working {
            batch,
            rules,
            matcher,
            records: FastMap::default(),
            unstored: FastSet::default(),
            entities: FastMap::default(),
            changed_entities: BTreeSet::new(),
            stale: BTreeMap::new(),
            spent_forms: Vec::new(),
            touched: Touched::default(),
        }
    }

    /// The raw batch, for the trees written directly (log, dedup, keys, outbox, offsets).
    pub fn batch(&mut self) -> &mut Batch<'s> {
        &mut self.batch
    }

    /// The raw batch, read only.
    pub fn view(&self) -> &Batch<'s> {
        &self.batch
    }

    /// Decodes a stored source record into the working set, once.
    fn load(&mut self, key: &SourceKey) -> Result<()> {
        if self.records.contains_key(key) || self.unstored.contains(key) {
            return Ok(());
        }
        match self
            .batch
            .get_with(TreeName::Records, key.encode().as_bytes(), Held::decode)?
        {
            Some(held) => {
                self.records.insert(key.clone(), Worked::unchanged(held));
            }
            None => {
                self.unstored.insert(key.clone());
            }
        }
        Ok(())
    }

    /// Whether neither the store nor the batch so far holds a record under `key`.
    fn is_unheld(&mut self, key: &SourceKey) -> Result<bool> {
        self.load(key)?;
        Ok(!self.records.contains_key(key))
    }

    /// A source record with what is stored beside it, new if the store has none; the
    /// batch writes it when it ends.
    fn held(&mut self, key: &SourceKey) -> Result<&mut Held> {
        self.load(key)?;
        // Looked up before inserting: the entry API would copy the key every time.
        if !self.records.contains_key(key) {
            let held = Held::new(SourceRecord::new(key.clone()));
            self.records.insert(key.clone(), Worked::unchanged(held));
        }
        let worked = self.records.get_mut(key).expect("inserted above");
        worked.changed = true;
        Ok(&mut worked.held)
    }

    /// Takes in a record neither the store nor the batch holds, built elsewhere; the
    /// batch writes it when it ends.
    fn adopt(&mut self, record: SourceRecord) {
        let held = Worked {
            held: Held::new(record),
            changed: true,
        };
        self.records.insert(held.held.record.key.clone(), held);
    }

    /// A source record, new if the store has none.
    fn record(&mut self, key: &SourceKey) -> Result<&mut SourceRecord> {
        Ok(&mut self.held(key)?.record)
    }

    /// A source record as the batch leaves it so far.
    pub fn source(&mut self, key: &SourceKey) -> Result<Option<&SourceRecord>> {
        self.load(key)?;
        Ok(self.records.get(key).map(|w| &w.held.record))
    }

    /// The entity a source record belongs to, as the batch leaves it so far.
    pub fn membership(&mut self, key: &SourceKey) -> Result<Option<GoldenId>> {
        self.load(key)?;
        Ok(self.records.get(key).and_then(|w| w.held.entity))
    }

    /// Puts a source record into an entity, or out of any.
    fn set_membership(&mut self, key: &SourceKey, entity: Option<GoldenId>) -> Result<()> {
        self.held(key)?.entity = entity;
        Ok(())
    }

    /// A source record's prepared form, as the batch leaves it so far.
    pub fn features(&mut self, key: &SourceKey) -> Result<Option<Prepared>> {
        self.load(key)?;
        match self.records.get(key) {
            Some(w) => w.held.prepared(),
            None => Ok(None),
        }
    }

    /// Replaces a source record's prepared form (none: nothing to match on).
    fn set_features(&mut self, key: &SourceKey, prepared: Option<&Prepared>) -> Result<()> {
        let features = prepared.map(encode_features).transpose()?;
        self.held(key)?.features = features;
        Ok(())
    }

    /// Replaces a source record's prepared form with one encoded already.
    fn set_encoded_features(&mut self, key: &SourceKey, features: Vec<u8>) -> Result<()> {
        self.held(key)?.features = Some(features);
        Ok(())
    }

    /// Drops a source record and its projections (an erasure).
    fn forget_record(&mut self, key: &SourceKey) {
        self.records.remove(key);
        self.unstored.insert(key.clone());
        self.batch.delete(TreeName::Records, key.encode());
    }

    /// Notes a log entry in the history of a stored record.
    fn note(&mut self, key: &SourceKey, seq: u64) -> Result<()> {
        self.load(key)?;
        if let Some(worked) = self.records.get_mut(key) {
            worked.held.record.note(seq);
            worked.changed = true;
        }
        Ok(())
    }

    /// Notes a log entry in the history of every member of an entity.
    fn note_members(&mut self, id: GoldenId, seq: u64) -> Result<()> {
        let members = self
            .entity(id)?
            .map(|g| g.members.clone())
            .unwrap_or_default();
        for member in &members {
            self.note(member, seq)?;
        }
        Ok(())
    }

    /// A golden record as the batch leaves it so far.
    pub fn entity(&mut self, id: GoldenId) -> Result<Option<&GoldenRecord>> {
        Ok(self.entity_slot(id)?.as_ref())
    }

    /// A golden record loaded before (by `entity`), as the batch leaves it so far.
    pub fn loaded_entity(&self, id: GoldenId) -> Option<&GoldenRecord> {
        self.entities.get(&id).and_then(Option::as_ref)
    }

    fn entity_slot(&mut self, id: GoldenId) -> Result<&mut Option<GoldenRecord>> {
        if !self.entities.contains_key(&id) {
            let stored = self
                .batch
                .get_bin::<GoldenRecord>(TreeName::Entities, &id_key(id))?;
            self.entities.insert(id, stored);
        }
        Ok(self.entities.get_mut(&id).expect("inserted above"))
    }

    fn entity_mut(&mut self, id: GoldenId) -> Result<&mut GoldenRecord> {
        self.changed_entities.insert(id);
        self.entity_slot(id)?.as_mut().ok_or_else(|| {
            crate::EngineError::Inconsistent(format!("entity {id} is referenced but absent"))
        })
    }

    fn put_entity(&mut self, golden: GoldenRecord) {
        self.changed_entities.insert(golden.id);
        self.entities.insert(golden.id, Some(golden));
    }

    fn remove_entity(&mut self, id: GoldenId) {
        self.changed_entities.insert(id);
        self.entities.insert(id, None);
        self.stale.remove(&id);
    }

    /// Marks an entity's golden values out of date as of `seq`, to be recomputed from
    /// all its members.
    fn stale(&mut self, id: GoldenId, seq: u64) {
        self.touched.entities.insert(id);
        let stale = self.stale.entry(id).or_insert(Stale { seq, joined: None });
        stale.seq = stale.seq.max(seq);
        stale.joined = None;
    }

    /// Marks an entity's golden values out of date as of `seq` because `record` joined
    /// its members: where nothing else changed them in the batch, they are worked out
    /// from the stored golden record and the records that joined.
    fn joined(&mut self, id: GoldenId, record: &SourceKey, seq: u64) {
        self.touched.entities.insert(id);
        let stale = self.stale.entry(id).or_insert(Stale {
            seq,
            joined: Some(Vec::new()),
        });
        stale.seq = stale.seq.max(seq);
        if let Some(joined) = &mut stale.joined {
            joined.push(record.clone());
        }
    }

    /// Recomputes the golden values of every entity marked stale; an entity left with
    /// no member is removed.
    pub fn settle(&mut self) -> Result<()> {
        for (id, Stale { seq, joined }) in std::mem::take(&mut self.stale) {
            if let Some(joined) = joined
                && self.settle_joined(id, &joined, seq)
            {
                continue;
            }
            // Taken out while its records are loaded, and put back below.
            let Some(members) = self
                .entity_slot(id)?
                .as_mut()
                .map(|g| std::mem::take(&mut g.members))
            else {
                continue;
            };
            if members.is_empty() {
                self.remove_entity(id);
                continue;
            }
            for member in &members {
                self.load(member)?;
            }
            let records = members
                .iter()
                .filter_map(|m| self.records.get(m).map(|w| &w.held.record));
            let survived = survive(records.clone(), self.rules);
            let contact_points = held_contact_points(self.matcher, records);
            let golden = self.entity_mut(id)?;
            golden.members = members;
            golden.contact_points = contact_points;
            golden.attributes = survived.attributes;
            golden.consents = survived.consents;
            golden.preferences = survived.preferences;
            golden.version = seq;
        }
        Ok(())
    }

    /// Works out the golden values of an entity whose only change in the batch is that
    /// the records `joined` joined it, from its stored values and those records, without
    /// reading its other members: the members' values were all set at the stored
    /// golden record's version or before. False where survivorship needs every member
    /// after all; the golden values are then left to be recomputed.
    fn settle_joined(&mut self, id: GoldenId, joined: &[SourceKey], seq: u64) -> bool {
        let Some(Some(golden)) = self.entities.get_mut(&id) else {
            return false;
        };
        let Some(records) = joined
            .iter()
            .map(|key| self.records.get(key).map(|w| &w.held.record))
            .collect::<Option<Vec<_>>>()
        else {
            return false;
        };
        let held = Survived {
            attributes: std::mem::take(&mut golden.attributes),
            consents: std::mem::take(&mut golden.consents),
            preferences: std::mem::take(&mut golden.preferences),
        };
        let Some(survived) =
            survive_onto(held, golden.version, records.iter().copied(), self.rules)
        else {
            return false;
        };
        golden
            .contact_points
            .extend(held_contact_points(self.matcher, records.into_iter()));
        golden.contact_points.sort();
        golden.contact_points.dedup();
        golden.attributes = survived.attributes;
        golden.consents = survived.consents;
        golden.preferences = survived.preferences;
        golden.version = seq;
        self.changed_entities.insert(id);
        true
    }

    /// Settles and writes every golden record changed so far into the batch.
    pub fn write_entities(&mut self) -> Result<()> {
        self.settle()?;
        for id in std::mem::take(&mut self.changed_entities) {
            match &self.entities[&id] {
                Some(golden) => self.batch.put_bin(TreeName::Entities, id_key(id), golden)?,
                None => self.batch.delete(TreeName::Entities, id_key(id)),
            }
        }
        Ok(())
    }

    /// Settles and writes every changed value into the batch.
    pub fn finish(self) -> Result<Batch<'s>> {
        Ok(self.finish_leaving()?.0)
    }

    /// Keeps a record's prepared form and blocking keys, once matched, to be dropped with
    /// the rest of the working set.
    pub fn spend(&mut self, features: Option<(Prepared, Vec<BlockKey>)>) {
        self.spent_forms.extend(features);
    }

    /// Settles and writes every changed value into the batch, and gives back the typed
    /// working set, so that the caller may drop it where it costs least.
    pub fn finish_leaving(mut self) -> Result<(Batch<'s>, Spent)> {
        self.write_entities()?;
        for (key, worked) in &self.records {
            if worked.changed {
                let value = worked.held.encode()?;
                self.batch.put(TreeName::Records, key.encode(), value);
            }
        }
        let spent = Spent {
            _records: std::mem::take(&mut self.records),
            _entities: std::mem::take(&mut self.entities),
            _forms: std::mem::take(&mut self.spent_forms),
        };
        Ok((self.batch, spent))
    }
}

/// Why an entity's golden values are out of date.
struct Stale {
    /// The latest sequence number that changed them: their next version.
    seq: u64,
    /// The records that joined the entity, where nothing else changed it in the batch
    /// (`None`: recomputed from every member).
    joined: Option<Vec<SourceKey>>,
}

/// A record the store does not hold, built on another thread from its first event
/// (every stamp with sequence number 0, for the event's number was not known yet): what
/// applying the event to a new record gives, what it changed, and the prepared form.
pub(crate) struct Built {
    pub record: SourceRecord,
    pub change: RecordChange,
    pub prepared: Prepared,
    /// The prepared form in the store's encoding, where it has values to match on (and
    /// encoded: otherwise the batch encodes it again, and reports why).
    pub features: Option<Vec<u8>>,
}

impl Built {
    /// What applying `payload` at `time` makes of a record the store does not hold.
    pub fn new(matcher: &dyn Matcher, key: SourceKey, payload: &Payload, time: Timestamp) -> Self {
        let mut record = SourceRecord::new(key);
        let change = record.apply(payload, Stamp { time, seq: 0 });
        let prepared = matcher.prepare(&record);
        let features = (!prepared.values.is_empty())
            .then(|| encode_features(&prepared).ok())
            .flatten();
        Built {
            record,
            change,
            prepared,
            features,
        }
    }
}

/// A source record in a batch's working set.
pub(crate) struct Worked {
    held: Held,
    /// Whether the batch changed it, so writes it when it ends.
    changed: bool,
}

impl Worked {
    fn unchanged(held: Held) -> Self {
        Worked {
            held,
            changed: false,
        }
    }
}

/// A finished batch's decoded source and golden records and the prepared forms it
/// matched: thousands of small allocations, which the engine drops on the thread that
/// writes the batch rather than on the one that goes on to apply the next.
pub(crate) struct Spent {
    _records: FastMap<SourceKey, Worked>,
    _entities: FastMap<GoldenId, Option<GoldenRecord>>,
    _forms: Vec<(Prepared, Vec<BlockKey>)>,
}

/// An entity holding one record; its golden values are computed when the batch settles.
fn start_entity(work: &mut Working<'_>, id: GoldenId, record: &SourceKey, seq: u64) -> Result<()> {
    work.put_entity(GoldenRecord {
        id,
        attributes: Default::default(),
        consents: Default::default(),
        preferences: Default::default(),
        members: vec![record.clone()],
        merged_ids: Vec::new(),
        version: seq,
        contact_points: Vec::new(),
    });
    work.set_membership(record, Some(id))?;
    work.stale(id, seq);
    Ok(())
}

/// Records a pair of source records a steward declared different people, both ways.
fn keep_apart(work: &mut Working<'_>, a: &SourceKey, b: &SourceKey, seq: u64) {
    for (x, y) in [(a, b), (b, a)] {
        work.batch().put(
            TreeName::Apart,
            crate::index::pair_key(x, y),
            seq.to_be_bytes(),
        );
    }
}

/// Marks a review task resolved by a steward's decision.
fn resolve_task(
    work: &mut Working<'_>,
    task: u64,
    action: &str,
    note: &StewardNote,
    seq: u64,
) -> Result<()> {
    let Some(mut review) = work
        .view()
        .get_json::<ReviewTask>(TreeName::Reviews, &task.to_be_bytes())?
    else {
        return Err(crate::EngineError::Inconsistent(format!(
            "task {task} is resolved but absent"
        )));
    };
    review.status = ReviewStatus::Resolved;
    review.resolution = Some(Resolution {
        action: action.to_owned(),
        by: note.by.clone(),
        comment: note.comment.clone(),
        at: note.at,
        seq,
    });
    work.batch()
        .put_json(TreeName::Reviews, task.to_be_bytes(), &review)?;
    Ok(())
}

/// The normalised e-mail addresses and phone numbers of an entity's active records.
pub(crate) fn held_contact_points<'r>(
    matcher: &dyn Matcher,
    records: impl Iterator<Item = &'r SourceRecord>,
) -> Vec<String> {
    let mut points: Vec<String> = records
        .filter(|r| r.is_active())
        .flat_map(|r| ["email", "phone"].map(|field| r.value(field)))
        .flatten()
        .filter_map(|raw| matcher.contact_point(raw))
        .collect();
    points.sort();
    points.dedup();
    points
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

impl Projector<'_> {
    /// Applies a spoke event to its source record and its prepared form. `payload` is
    /// `None` when the record's data key was erased: the event then only counts for dedup.
    /// `counted` is the hash of the event's source and id where the event made its
    /// record's data key and counts for dedup there ([`crate::keys`]): it then has no
    /// entry in the dedup tree, and the hash is kept with the record. `built` is the
    /// record the event makes where the caller has it already (worked out ahead for a
    /// record the store does not hold yet). Returns whether the record is active after
    /// the event, what the event changed, and the prepared form when the profile changed.
    pub fn event(
        &self,
        work: &mut Working<'_>,
        event: &LoggedEvent,
        payload: Option<&Payload>,
        seq: u64,
        counted: Option<u64>,
        built: Option<Built>,
    ) -> Result<(bool, RecordChange, Option<Prepared>)> {
        if counted.is_none() {
            work.batch().put(
                TreeName::Dedup,
                dedup_key(&event.source, &event.id),
                seq.to_be_bytes(),
            );
        }
        let key = event.key();
        if event.key_ref.is_some() {
            self.contact_point_event(work, event, payload, seq)?;
            return Ok((SourceRecord::new(key).is_active(), RecordChange::None, None));
        }
        let Some(payload) = payload else {
            let active = match work.source(&key)? {
                Some(record) => record.is_active(),
                None => SourceRecord::new(key).is_active(),
            };
            return Ok((active, RecordChange::None, None));
        };
        // A record nobody held yet belongs to no entity: its membership is not looked up.
        let unheld = work.is_unheld(&key)?;
        let (change, prepared, active, encoded) = match built {
            Some(built) if unheld => {
                let mut record = built.record;
                record.note(seq);
                record.renumber(seq);
                let active = record.is_active();
                work.adopt(record);
                let prepared = (built.change == RecordChange::Profile).then_some(built.prepared);
                (built.change, prepared, active, built.features)
            }
            _ => {
                let record = work.record(&key)?;
                record.note(seq);
                let stamp = Stamp {
                    time: event.time,
                    seq,
                };
                let change = record.apply(payload, stamp);
                let prepared =
                    (change == RecordChange::Profile).then(|| self.matcher.prepare(record));
                (change, prepared, record.is_active(), None)
            }
        };
        if counted.is_some() {
            // Kept beside the record too, for the match index to be loaded with.
            work.held(&key)?.first_event = counted;
        }
        if change == RecordChange::None {
            return Ok((active, change, None));
        }
        let prepared = if let Some(prepared) = prepared {
            work.touched.findings += prepared.findings.len();
            match encoded {
                // Encoded ahead from this very form.
                Some(features) => work.set_encoded_features(&key, features)?,
                None => {
                    let kept = (!prepared.values.is_empty()).then_some(&prepared);
                    work.set_features(&key, kept)?;
                }
            }
            Some(prepared)
        } else {
            None
        };
        if !unheld && let Some(entity) = work.membership(&key)? {
            work.stale(entity, seq);
        }
        Ok((active, change, prepared))
    }

    /// Applies a consent or preference about a contact point to that contact point's
    /// declarations. Without a payload (its key was erased) only dedup counts.
    fn contact_point_event(
        &self,
        work: &mut Working<'_>,
        event: &LoggedEvent,
        payload: Option<&Payload>,
        seq: u64,
    ) -> Result<()> {
        let Some(payload) = payload else {
            return Ok(());
        };
        let Some(point) = payload
            .contact_point()
            .and_then(|raw| self.matcher.contact_point(raw))
        else {
            return Err(crate::EngineError::Inconsistent(format!(
                "event {} names no contact point the matcher reads",
                event.id
            )));
        };
        let mut state = work
            .view()
            .get_bin::<ContactPointState>(TreeName::ContactPoints, point.as_bytes())?
            .unwrap_or_else(|| ContactPointState::new(event.key_ref.clone().unwrap_or_default()));
        state.apply(
            payload,
            Stamp {
                time: event.time,
                seq,
            },
        );
        work.batch()
            .put_bin(TreeName::ContactPoints, point.into_bytes(), &state)?;
        Ok(())
    }

    /// Purges every projection of an erased person: their records, prepared forms,
    /// membership, golden record, redirects, kept-apart pairs, review tasks and the
    /// declarations of the contact points they held; remembers the erased record keys.
    fn erase(
        &self,
        work: &mut Working<'_>,
        entity: GoldenId,
        merged_ids: &[GoldenId],
        records: &[SourceKey],
        contact_keys: &[String],
        seq: u64,
    ) -> Result<()> {
        for record in records {
            // Only the live projections know the contact points (a replay could not
            // read the erased events, so it never had them).
            let Some(prepared) = work.features(record)? else {
                continue;
            };
            for field in ["email", "phone"] {
                let Some(value) = prepared.get(field) else {
                    continue;
                };
                let point = format!("{field}:{value}");
                let held = work
                    .view()
                    .get_bin::<ContactPointState>(TreeName::ContactPoints, point.as_bytes())?;
                if held.is_some_and(|state| contact_keys.contains(&state.key_ref)) {
                    work.batch()
                        .delete(TreeName::ContactPoints, point.into_bytes());
                }
            }
        }
        for record in records {
            work.forget_record(record);
            let mut prefix = record.encode().into_bytes();
            prefix.push(0);
            for (pair, _) in work.view().scan_prefix(TreeName::Apart, &prefix)? {
                let other = &pair[prefix.len()..];
                let mut reverse = other.to_vec();
                reverse.push(0);
                reverse.extend_from_slice(&prefix[..prefix.len() - 1]);
                work.batch().delete(TreeName::Apart, pair);
                work.batch().delete(TreeName::Apart, reverse);
            }
            work.batch()
                .put(TreeName::Erased, record.encode(), seq.to_be_bytes());
        }
        let ids: Vec<GoldenId> = std::iter::once(entity)
            .chain(merged_ids.iter().copied())
            .collect();
        for (task, value) in work.view().scan_prefix(TreeName::Reviews, b"")? {
            let review: ReviewTask = cmdm_store::decode(TreeName::Reviews, &value)?;
            if records.contains(&review.record) || ids.contains(&review.entity) {
                work.batch().delete(TreeName::Reviews, task);
            }
        }
        work.remove_entity(entity);
        for id in merged_ids {
            work.batch().delete(TreeName::Redirects, id_key(*id));
        }
        work.touched.entities.retain(|id| !ids.contains(id));
        work.touched.erased.extend(ids);
        Ok(())
    }

    /// Applies a hub decision to membership, redirects and golden records.
    pub fn decision(&self, work: &mut Working<'_>, decision: &Decision, seq: u64) -> Result<()> {
        match decision {
            Decision::EntityCreated { entity, record } => {
                start_entity(work, *entity, record, seq)?;
                work.note(record, seq)?;
            }
            Decision::RecordLinked { entity, record, .. }
            | Decision::StewardLinked { entity, record, .. } => {
                work.note(record, seq)?;
                if let Some(previous) = work.membership(record)? {
                    self.remove_member(work, previous, record, seq)?;
                }
                let golden = work.entity_mut(*entity)?;
                match golden.members.binary_search(record) {
                    Err(at) => {
                        golden.members.insert(at, record.clone());
                        work.joined(*entity, record, seq);
                    }
                    Ok(_) => work.stale(*entity, seq),
                }
                work.set_membership(record, Some(*entity))?;
            }
            Decision::EntitiesMerged {
                survivor, merged, ..
            }
            | Decision::StewardMerged {
                survivor, merged, ..
            } => {
                work.note_members(*survivor, seq)?;
                work.note_members(*merged, seq)?;
                let gone = work.entity_mut(*merged)?.clone();
                for member in &gone.members {
                    work.set_membership(member, Some(*survivor))?;
                }
                let golden = work.entity_mut(*survivor)?;
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
                work.remove_entity(*merged);
                // Earlier merges into `merged` now point straight at the survivor.
                for old in gone.merged_ids.iter().chain([merged]) {
                    work.batch()
                        .put(TreeName::Redirects, id_key(*old), id_key(*survivor));
                }
                work.touched.entities.remove(merged);
                work.touched.merged.push((*merged, *survivor));
                work.stale(*survivor, seq);
            }
            Decision::RecordUnlinked { entity, record, .. } => {
                work.note(record, seq)?;
                work.set_membership(record, None)?;
                self.remove_member(work, *entity, record, seq)?;
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
                    resolution: None,
                };
                work.batch()
                    .put_json(TreeName::Reviews, task.to_be_bytes(), &review)?;
                work.note(record, seq)?;
            }
            Decision::KeptApart { entity, other, .. } => {
                work.touched.kept_apart.push((*entity, *other, seq));
                work.note_members(*entity, seq)?;
                work.note_members(*other, seq)?;
                let ours = work.entity(*entity)?.map(|g| g.members.clone());
                let theirs = work.entity(*other)?.map(|g| g.members.clone());
                for a in ours.iter().flatten() {
                    for b in theirs.iter().flatten() {
                        keep_apart(work, a, b, seq);
                    }
                }
            }
            Decision::RecordSplit {
                record,
                from,
                to,
                revived,
                ..
            } => {
                work.note_members(*from, seq)?;
                self.remove_member(work, *from, record, seq)?;
                let left = work.entity_mut(*from)?;
                left.merged_ids.retain(|id| id != to);
                let left = left.members.clone();
                for other in &left {
                    keep_apart(work, record, other, seq);
                }
                if *revived {
                    work.batch().delete(TreeName::Redirects, id_key(*to));
                }
                start_entity(work, *to, record, seq)?;
                work.touched.split.push((*to, *from));
            }
            Decision::Erased {
                entity,
                merged_ids,
                records,
                contact_keys,
                ..
            } => {
                self.erase(work, *entity, merged_ids, records, contact_keys, seq)?;
            }
        }
        if let Some(note) = decision.steward()
            && let Some(task) = note.task
        {
            resolve_task(work, task, decision.name(), note, seq)?;
        }
        Ok(())
    }

    fn remove_member(
        &self,
        work: &mut Working<'_>,
        entity: GoldenId,
        record: &SourceKey,
        seq: u64,
    ) -> Result<()> {
        work.entity_mut(entity)?.members.retain(|m| m != record);
        work.stale(entity, seq);
        Ok(())
    }
}
