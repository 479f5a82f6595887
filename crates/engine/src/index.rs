//! The in-memory match index: which records share a blocking key, each record's prepared
//! form and entity, and each entity's members. Everything in it is derived from the
//! stored source records' prepared forms and entities, so it is loaded from them at start and kept
//! in step by the write path; it is never written to disk itself.

use std::hash::BuildHasher;
use std::sync::Arc;

use crate::{FastMap, FastSet};

use cmdm_domain::{Decision, GoldenId, ReviewStatus, ReviewTask, SourceKey};
use cmdm_matching::{BlockKey, Compact, Matcher, Prepared, Sketch};
use cmdm_store::{Store, TreeName};

use crate::held::Parts;
use crate::{EngineError, Result};

/// A record's place in the index.
type Slot = u32;

/// Records in four bytes: one record's slot; or, with the top bit set, the position of a
/// list of slots in a `Lists`. Most blocking keys and most entities have one record.
type Held = u32;

/// The records under one blocking key: `Held`, or `GENERIC`.
type Postings = Held;

/// Marks a list position in `Held`.
const LIST: u32 = 1 << 31;

/// A key shared by more records than the generic limit: never a candidate.
const GENERIC: u32 = u32::MAX;

/// A record's entry. Screening a candidate reads the first cache line only (the sketch,
/// the entity and whether the record is alone in it), and most candidates go no further:
/// hence the fixed layout, and the alignment that keeps that line whole. The form, read
/// for the few whose sketch passes, starts the second line with the key.
#[derive(Debug)]
#[repr(C, align(64))]
struct Record {
    /// The form's sketch, which rules out most candidates without reading the form;
    /// meaningless without a form.
    sketch: Sketch,
    /// The record's entity's id, or `NO_ENTITY`: eight bytes where an `Option` takes 16,
    /// so that the first line holds it with the sketch.
    entity: u64,
    /// Whether the record is its entity's only member: most candidates are, and then
    /// screening the entity reads nothing but this record.
    alone: bool,
    /// The form the matcher compares, present while the record has stored features (its
    /// prepared form, which the index does not keep: readers take it from the store).
    form: Option<Compact>,
    key: SourceKey,
}

// The screened fields fill the first line, the form starts the second.
const _: () = assert!(std::mem::offset_of!(Record, form) == 64);
const _: () = assert!(std::mem::size_of::<Record>() == 128);

/// `Record::entity` of a record in no entity (golden ids are sequence numbers, far below).
const NO_ENTITY: u64 = u64::MAX;

impl Record {
    fn entity(&self) -> Option<GoldenId> {
        (self.entity != NO_ENTITY).then_some(GoldenId(self.entity))
    }
}

/// Lists of slots, for the keys and entities that hold more than one record, by position;
/// the positions of lists given back are reused.
#[derive(Debug, Default)]
struct Lists {
    lists: Vec<Vec<Slot>>,
    free: Vec<u32>,
}

impl Lists {
    /// Keeps `slots` in a list: the `Held` that names it.
    fn hold(&mut self, slots: Vec<Slot>) -> Held {
        let at = match self.free.pop() {
            Some(at) => {
                self.lists[at as usize] = slots;
                at
            }
            None => {
                self.lists.push(slots);
                u32::try_from(self.lists.len() - 1)
                    .ok()
                    .filter(|at| at | LIST != GENERIC)
                    .expect("fewer than 2^31 - 1 lists")
            }
        };
        at | LIST
    }

    /// The slots `held` names (itself, or its list).
    fn slots<'a>(&'a self, held: &'a Held) -> &'a [Slot] {
        if held & LIST == 0 {
            std::slice::from_ref(held)
        } else {
            &self.lists[(held & !LIST) as usize]
        }
    }

    fn get_mut(&mut self, list: Held) -> &mut Vec<Slot> {
        &mut self.lists[(list & !LIST) as usize]
    }

    /// Gives a list back, returning what it held.
    fn release(&mut self, list: Held) -> Vec<Slot> {
        let at = list & !LIST;
        self.free.push(at);
        std::mem::take(&mut self.lists[at as usize])
    }

    /// Lists in use.
    fn len(&self) -> usize {
        self.lists.len() - self.free.len()
    }
}

/// A blocking key's entry: its hash (in two halves, so that the entry takes 12 bytes
/// rather than 16) and its postings.
#[derive(Debug, Clone, Copy)]
struct Block {
    hash: [u32; 2],
    postings: Postings,
}

impl Block {
    fn new(hash: u64, postings: Postings) -> Self {
        Block {
            hash: [(hash >> 32) as u32, hash as u32],
            postings,
        }
    }

    fn hash(&self) -> u64 {
        u64::from(self.hash[0]) << 32 | u64::from(self.hash[1])
    }
}

/// What a lookup of one blocking key found.
pub(crate) enum Found<'a> {
    Records(&'a [Slot]),
    Generic,
}

/// Candidate lookup without touching the store.
#[derive(Debug)]
pub(crate) struct MatchIndex {
    /// Each record's slot, found by its key's hash and compared with `records`, where
    /// the key is kept once.
    slots: hashbrown::HashTable<Slot>,
    key_hasher: foldhash::fast::RandomState,
    records: Vec<Record>,
    /// Each source's name once, shared by the keys of all its records.
    sources: FastSet<Arc<str>>,
    /// Blocking keys by a 64-bit hash of their text, found by that hash itself: a
    /// collision can only add a candidate, which scoring then rejects.
    blocks: hashbrown::HashTable<Block>,
    /// The slots of keys shared by several records (most keys have one).
    lists: Lists,
    /// Each entity's members, in slot order.
    entities: FastMap<GoldenId, Held>,
    /// The members of entities with more than one (most have one).
    groups: Lists,
    /// Records a steward declared different people from each record (both directions).
    apart: FastMap<Slot, Vec<Slot>>,
    /// Open review tasks by (record, proposed entity), so a pair is reviewed once.
    open_reviews: FastMap<(Slot, GoldenId), u64>,
    open_tasks: FastMap<u64, (Slot, GoldenId)>,
    /// Records whose first event counts for dedup with their data key ([`crate::keys`]),
    /// by 32 bits of a hash of that event's source and id ([`first_event_tag`]): how a
    /// redelivery of such an event, which has no entry in the dedup tree, is told apart.
    /// Eight bytes an entry. Two events sharing the 32 bits only make the check read both
    /// records' keys (one new event in about 4,000 with a million records held).
    first_events: hashbrown::HashTable<(u32, Slot)>,
    generic_limit: usize,
}

/// The part of a first event's hash ([`crate::keys::first_event_hash`]) the match index
/// keeps.
fn first_event_tag(hash: u64) -> u32 {
    (hash >> 32) as u32
}

/// Where a first event's entry goes in its table: worked out from the entry alone (the
/// table moves entries by it when it grows), and spread over all 64 bits, whose top bits
/// the table compares before the entry.
fn tag_hash(tag: u32) -> u64 {
    u64::from(tag).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

fn block_hash(key: &str) -> u64 {
    // A fixed seed: the same text hashes the same in every process.
    foldhash::fast::FixedState::with_seed(0x636d_646d).hash_one(key)
}

impl MatchIndex {
    fn empty(generic_limit: usize) -> Self {
        MatchIndex {
            slots: hashbrown::HashTable::new(),
            key_hasher: foldhash::fast::RandomState::default(),
            records: Vec::new(),
            sources: FastSet::default(),
            blocks: hashbrown::HashTable::new(),
            lists: Lists::default(),
            entities: FastMap::default(),
            groups: Lists::default(),
            apart: FastMap::default(),
            open_reviews: FastMap::default(),
            open_tasks: FastMap::default(),
            first_events: hashbrown::HashTable::new(),
            generic_limit,
        }
    }

    /// Loads the index from the store's projections.
    pub fn load(store: &Store, matcher: &dyn Matcher) -> Result<Self> {
        let mut index = MatchIndex::empty(matcher.generic_limit());
        // Every record's key, for the store's filter of the records tree: read here anyway.
        let mut stored = Vec::new();
        for item in store.tree(TreeName::Records).iter() {
            let (key, value) = item.map_err(cmdm_store::StoreError::from)?;
            stored.push(cmdm_store::filter_hash(&key));
            let parts = Parts::of(&value)?;
            let prepared = parts.prepared()?;
            if prepared.is_none() && parts.entity.is_none() && parts.first_event.is_none() {
                continue;
            }
            let slot = index.slot(&parse_key(&key)?);
            if let Some(hash) = parts.first_event {
                index.note_first_event_at(hash, slot);
            }
            if let Some(prepared) = prepared {
                index.add_blocks(slot, &matcher.block_keys(&prepared));
                index.set_form(slot, Some(matcher.compact(&prepared)), matcher);
            }
            if let Some(entity) = parts.entity {
                index.join(slot, entity);
            }
        }
        store.build_filter(TreeName::Records, &stored);
        drop(stored);
        for item in store.tree(TreeName::Apart).iter() {
            let (key, _) = item.map_err(cmdm_store::StoreError::from)?;
            let (a, b) = parse_pair(&key)?;
            let (a, b) = (index.slot(&a), index.slot(&b));
            index.keep_apart(a, b);
        }
        for item in store.tree(TreeName::Reviews).iter() {
            let (_, value) = item.map_err(cmdm_store::StoreError::from)?;
            let task: ReviewTask = cmdm_store::decode(TreeName::Reviews, &value)?;
            if task.status == ReviewStatus::Open {
                let slot = index.slot(&task.record);
                index.open_review(task.id, slot, task.entity);
            }
        }
        Ok(index)
    }

    /// Notes that `record`'s first event, whose source and id have `hash`
    /// ([`crate::keys::first_event_hash`]), counts for dedup with its data key.
    pub fn note_first_event(&mut self, hash: u64, record: &SourceKey) {
        let slot = self.slot(record);
        self.note_first_event_at(hash, slot);
    }

    fn note_first_event_at(&mut self, hash: u64, slot: Slot) {
        let tag = first_event_tag(hash);
        self.first_events
            .insert_unique(tag_hash(tag), (tag, slot), |&(tag, _)| tag_hash(tag));
    }

    /// The records whose first event's source and id may hash to `hash` (their keys
    /// tell).
    pub fn first_event_holders(&self, hash: u64) -> impl Iterator<Item = &SourceKey> + '_ {
        let tag = first_event_tag(hash);
        self.first_events
            .iter_hash(tag_hash(tag))
            .filter(move |&&(t, _)| t == tag)
            .map(|&(_, slot)| self.key(slot))
    }

    /// Makes room for `records` more records: their entries, keys and first events, one
    /// each. A table grown step by step is copied at every step (hundreds of megabytes
    /// late in an import of a million records). Blocking keys and entities are left to
    /// grow: how many a record brings is not known ahead (about 11.6 keys a record among
    /// the first thousand synthetic people, 5.9 among a million, most keys being shared
    /// by then), and a table reserved too large by that guess takes twice the memory.
    pub fn reserve(&mut self, records: usize) {
        self.records.reserve(records);
        let (held, hasher) = (&self.records, &self.key_hasher);
        self.slots
            .reserve(records, |&slot| hasher.hash_one(&held[slot as usize].key));
        self.first_events
            .reserve(records, |&(tag, _)| tag_hash(tag));
    }

    /// Number of records indexed.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Number of blocking keys, and of those shared by several records.
    pub fn keys(&self) -> (usize, usize) {
        (self.blocks.len(), self.lists.len())
    }

    fn slot(&mut self, key: &SourceKey) -> Slot {
        let hash = self.key_hasher.hash_one(key);
        if let Some(slot) = self.find_hashed(hash, key) {
            return slot;
        }
        let slot = Slot::try_from(self.records.len())
            .ok()
            .filter(|slot| slot & LIST == 0)
            .expect("fewer than 2^31 source records");
        let source = match self.sources.get(&*key.source) {
            Some(source) => source.clone(),
            None => {
                self.sources.insert(key.source.clone());
                key.source.clone()
            }
        };
        self.records.push(Record {
            key: SourceKey {
                source,
                subject: key.subject.clone(),
            },
            form: None,
            sketch: Sketch::default(),
            entity: NO_ENTITY,
            alone: false,
        });
        let (records, hasher) = (&self.records, &self.key_hasher);
        self.slots.insert_unique(hash, slot, |&slot| {
            hasher.hash_one(&records[slot as usize].key)
        });
        slot
    }

    /// Replaces a record's prepared form and moves its blocking keys: `keys` are those of
    /// `prepared` and `form` its compact form where the caller has it already, `before` is
    /// its prepared form until now, as stored (`None` for a record the index has no form
    /// of).
    pub fn set_features(
        &mut self,
        prepared: &Prepared,
        keys: &[BlockKey],
        form: Option<Compact>,
        before: Option<&Prepared>,
        matcher: &dyn Matcher,
    ) {
        let slot = self.slot(&prepared.key);
        self.remove_blocks(slot, before, matcher);
        let form = if prepared.values.is_empty() {
            None
        } else {
            self.add_blocks(slot, keys);
            Some(form.unwrap_or_else(|| matcher.compact(prepared)))
        };
        self.set_form(slot, form, matcher);
    }

    fn set_form(&mut self, slot: Slot, form: Option<Compact>, matcher: &dyn Matcher) {
        let record = &mut self.records[slot as usize];
        record.sketch = form
            .as_ref()
            .map_or_else(Sketch::default, |form| matcher.sketch(form));
        record.form = form;
    }

    fn remove_blocks(&mut self, slot: Slot, before: Option<&Prepared>, matcher: &dyn Matcher) {
        for key in before.map(|p| matcher.block_keys(p)).unwrap_or_default() {
            self.remove_posting(block_hash(&key.0), slot);
        }
    }

    fn add_blocks(&mut self, slot: Slot, keys: &[BlockKey]) {
        let limit = self.generic_limit;
        let mut keys: Vec<u64> = keys.iter().map(|k| block_hash(&k.0)).collect();
        keys.sort_unstable();
        keys.dedup();
        for hash in keys {
            self.add_posting(hash, slot, limit);
        }
    }

    fn find_block(&self, hash: u64) -> Option<&Block> {
        self.blocks.find(hash, |block| block.hash() == hash)
    }

    fn block(&self, hash: u64) -> Option<Postings> {
        self.find_block(hash).map(|block| block.postings)
    }

    fn set_block(&mut self, hash: u64, postings: Postings) {
        match self
            .blocks
            .entry(hash, |block| block.hash() == hash, Block::hash)
        {
            hashbrown::hash_table::Entry::Occupied(mut entry) => {
                entry.get_mut().postings = postings
            }
            hashbrown::hash_table::Entry::Vacant(entry) => {
                entry.insert(Block::new(hash, postings));
            }
        }
    }

    fn remove_block(&mut self, hash: u64) {
        if let Ok(entry) = self.blocks.find_entry(hash, |block| block.hash() == hash) {
            entry.remove();
        }
    }

    fn add_posting(&mut self, hash: u64, slot: Slot, limit: usize) {
        let postings = match self.block(hash) {
            None => slot,
            Some(GENERIC) => return,
            Some(_) if limit < 2 => GENERIC,
            Some(first) if first & LIST == 0 => self.lists.hold(vec![first, slot]),
            Some(list) => {
                let slots = self.lists.get_mut(list);
                slots.push(slot);
                if slots.len() <= limit {
                    return;
                }
                self.lists.release(list);
                GENERIC
            }
        };
        self.set_block(hash, postings);
    }

    fn remove_posting(&mut self, hash: u64, slot: Slot) {
        match self.block(hash) {
            // A key once found generic stays generic while the process runs.
            None | Some(GENERIC) => {}
            Some(only) if only & LIST == 0 => {
                if only == slot {
                    self.remove_block(hash);
                }
            }
            Some(list) => {
                let slots = self.lists.get_mut(list);
                slots.retain(|s| *s != slot);
                match *slots.as_slice() {
                    [] => {
                        self.lists.release(list);
                        self.remove_block(hash);
                    }
                    [last] => {
                        self.lists.release(list);
                        self.set_block(hash, last);
                    }
                    _ => {}
                }
            }
        }
    }

    /// Forgets a record's prepared form and its blocking keys (an erasure); `before` is
    /// its prepared form as stored until now.
    pub fn drop_features(
        &mut self,
        key: &SourceKey,
        before: Option<&Prepared>,
        matcher: &dyn Matcher,
    ) {
        let Some(slot) = self.find(key) else {
            return;
        };
        self.remove_blocks(slot, before, matcher);
        self.set_form(slot, None, matcher);
    }

    /// The records under a blocking key.
    pub fn lookup(&self, block: &str) -> Found<'_> {
        self.lookup_hash(block_hash(block))
    }

    fn lookup_hash(&self, hash: u64) -> Found<'_> {
        match self.find_block(hash) {
            None => Found::Records(&[]),
            Some(Block {
                postings: GENERIC, ..
            }) => Found::Generic,
            Some(block) => Found::Records(self.lists.slots(&block.postings)),
        }
    }

    /// A record's compact form, which the matcher compares.
    pub fn form(&self, slot: Slot) -> Option<&Compact> {
        self.records[slot as usize].form.as_ref()
    }

    /// The slot of a source record, if indexed.
    pub fn find(&self, key: &SourceKey) -> Option<Slot> {
        self.find_hashed(self.key_hasher.hash_one(key), key)
    }

    /// `find` with the key's hash worked out already.
    fn find_hashed(&self, hash: u64, key: &SourceKey) -> Option<Slot> {
        self.slots
            .find(hash, |&slot| self.records[slot as usize].key == *key)
            .copied()
    }

    /// A record's source key.
    pub fn key(&self, slot: Slot) -> &SourceKey {
        &self.records[slot as usize].key
    }

    /// The entity a record belongs to.
    pub fn entity_of(&self, slot: Slot) -> Option<GoldenId> {
        self.records[slot as usize].entity()
    }

    /// An entity's members.
    pub fn members(&self, entity: GoldenId) -> &[Slot] {
        self.entities
            .get(&entity)
            .map_or(&[], |held| self.groups.slots(held))
    }

    /// Reads the entries `any_member` reads besides each record's own (those of its
    /// entity's other members, where it has company), so that the entries of many
    /// candidates are fetched from memory together rather than one after the other as
    /// each is screened. Returns what it read.
    pub fn touch_company(&self, slots: impl Iterator<Item = Slot>) -> u64 {
        slots.fold(0, |acc, slot| {
            let record = &self.records[slot as usize];
            match record.entity() {
                Some(entity) if !record.alone => self
                    .members(entity)
                    .iter()
                    .fold(acc, |acc, &m| acc ^ self.entry_word(m)),
                _ => acc,
            }
        })
    }

    /// Reads each record's entry, so that the entries of many candidates are fetched from
    /// memory together before each is looked at in turn. Returns what it read.
    pub fn touch_entries(&self, slots: impl Iterator<Item = Slot>) -> u64 {
        slots.fold(0, |acc, slot| acc ^ self.entry_word(slot))
    }

    fn entry_word(&self, slot: Slot) -> u64 {
        self.records[slot as usize].entity
    }

    /// Whether any member of `slot`'s entity passes `test`, its compact form read only
    /// where its sketch passes `may`: the record itself first, the other members only
    /// where it has company.
    pub fn any_member(
        &self,
        slot: Slot,
        may: impl Fn(&Sketch) -> bool,
        test: impl Fn(&Compact) -> bool,
    ) -> bool {
        let passes = |record: &Record| {
            record
                .form
                .as_ref()
                .is_some_and(|form| may(&record.sketch) && test(form))
        };
        let record = &self.records[slot as usize];
        if passes(record) {
            return true;
        }
        match record.entity() {
            Some(entity) if !record.alone => self
                .members(entity)
                .iter()
                .any(|&member| member != slot && passes(&self.records[member as usize])),
            _ => false,
        }
    }

    /// Follows a decision's effect on membership.
    pub fn apply(&mut self, decision: &Decision) {
        if let Some(task) = decision.steward().and_then(|note| note.task)
            && let Some(pair) = self.open_tasks.remove(&task)
        {
            self.open_reviews.remove(&pair);
        }
        match decision {
            Decision::EntityCreated { entity, record }
            | Decision::RecordLinked { entity, record, .. } => {
                let slot = self.slot(record);
                self.leave(slot);
                self.join(slot, *entity);
            }
            Decision::EntitiesMerged {
                survivor, merged, ..
            }
            | Decision::StewardMerged {
                survivor, merged, ..
            } => {
                for slot in self.take_members(*merged) {
                    self.join(slot, *survivor);
                }
            }
            Decision::RecordUnlinked { record, .. } => {
                if let Some(slot) = self.find(record) {
                    self.leave(slot);
                }
            }
            Decision::ReviewOpened {
                task,
                record,
                entity,
                ..
            } => {
                let slot = self.slot(record);
                self.open_review(*task, slot, *entity);
            }
            Decision::StewardLinked { entity, record, .. } => {
                let slot = self.slot(record);
                self.leave(slot);
                self.join(slot, *entity);
            }
            Decision::RecordSplit {
                record, from, to, ..
            } => {
                let slot = self.slot(record);
                self.leave(slot);
                for other in self.members(*from).to_vec() {
                    self.keep_apart(slot, other);
                }
                self.join(slot, *to);
            }
            // The engine also drops the erased records' prepared forms (see `erase`).
            Decision::Erased { records, .. } => {
                for record in records {
                    if let Some(slot) = self.find(record) {
                        self.leave(slot);
                        self.open_reviews.retain(|(s, _), _| *s != slot);
                        self.open_tasks.retain(|_, (s, _)| *s != slot);
                        if let Some(others) = self.apart.remove(&slot) {
                            for other in others {
                                if let Some(list) = self.apart.get_mut(&other) {
                                    list.retain(|s| *s != slot);
                                }
                            }
                        }
                    }
                }
            }
            Decision::KeptApart { entity, other, .. } => {
                let ours = self.members(*entity).to_vec();
                let theirs = self.members(*other).to_vec();
                for &a in &ours {
                    for &b in &theirs {
                        self.keep_apart(a, b);
                    }
                }
            }
        }
    }

    fn open_review(&mut self, task: u64, slot: Slot, entity: GoldenId) {
        self.open_reviews.insert((slot, entity), task);
        self.open_tasks.insert(task, (slot, entity));
    }

    /// Whether an open review task already asks whether `record` belongs to `entity`.
    pub fn under_review(&self, record: Slot, entity: GoldenId) -> bool {
        self.open_reviews.contains_key(&(record, entity))
    }

    fn keep_apart(&mut self, a: Slot, b: Slot) {
        for (x, y) in [(a, b), (b, a)] {
            let list = self.apart.entry(x).or_default();
            if !list.contains(&y) {
                list.push(y);
            }
        }
    }

    /// Whether a steward declared any of `records` a different person from any member
    /// of `entity`.
    pub fn kept_apart(&self, records: &[Slot], entity: GoldenId) -> bool {
        if self.apart.is_empty() {
            return false;
        }
        let members = self.members(entity);
        records.iter().any(|r| {
            self.apart
                .get(r)
                .is_some_and(|others| others.iter().any(|o| members.contains(o)))
        })
    }

    fn join(&mut self, slot: Slot, entity: GoldenId) {
        assert_ne!(entity.0, NO_ENTITY, "a golden id below 2^64 - 1");
        self.records[slot as usize].entity = entity.0;
        let held = match self.entities.get(&entity).copied() {
            None => {
                self.records[slot as usize].alone = true;
                slot
            }
            Some(only) if only & LIST == 0 => {
                if only == slot {
                    return;
                }
                // The record joining, and the one it keeps company that was alone.
                self.records[only as usize].alone = false;
                self.records[slot as usize].alone = false;
                self.groups.hold(vec![only.min(slot), only.max(slot)])
            }
            Some(list) => {
                let members = self.groups.get_mut(list);
                if let Err(at) = members.binary_search(&slot) {
                    members.insert(at, slot);
                }
                self.records[slot as usize].alone = false;
                return;
            }
        };
        self.entities.insert(entity, held);
    }

    fn leave(&mut self, slot: Slot) {
        let record = &mut self.records[slot as usize];
        record.alone = false;
        let Some(entity) = record.entity() else {
            return;
        };
        record.entity = NO_ENTITY;
        match self.entities.get(&entity).copied() {
            Some(only) if only == slot => {
                self.entities.remove(&entity);
            }
            None => {}
            Some(other) if other & LIST == 0 => {}
            Some(list) => {
                let members = self.groups.get_mut(list);
                members.retain(|s| *s != slot);
                if let &[last] = members.as_slice() {
                    self.groups.release(list);
                    self.records[last as usize].alone = true;
                    self.entities.insert(entity, last);
                }
            }
        }
    }

    /// Removes an entity, returning its members.
    fn take_members(&mut self, entity: GoldenId) -> Vec<Slot> {
        match self.entities.remove(&entity) {
            None => Vec::new(),
            Some(only) if only & LIST == 0 => vec![only],
            Some(list) => self.groups.release(list),
        }
    }
}

/// The key of a kept-apart pair in the `apart` tree.
pub(crate) fn pair_key(a: &SourceKey, b: &SourceKey) -> Vec<u8> {
    let mut key = a.encode().into_bytes();
    key.push(0);
    key.extend_from_slice(b.encode().as_bytes());
    key
}

fn parse_pair(bytes: &[u8]) -> Result<(SourceKey, SourceKey)> {
    let at = bytes
        .iter()
        .position(|&b| b == 0)
        .ok_or_else(|| EngineError::Inconsistent("a kept-apart pair has no separator".into()))?;
    Ok((parse_key(&bytes[..at])?, parse_key(&bytes[at + 1..])?))
}

fn parse_key(bytes: &[u8]) -> Result<SourceKey> {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| EngineError::Inconsistent("a stored source key does not parse".into()))
}

#[cfg(test)]
mod tests {
    use cmdm_domain::MatchExplanation;

    use super::*;

    fn key(n: u32) -> SourceKey {
        SourceKey::new("crm", &format!("r{n}")).unwrap()
    }

    /// `alone` must say exactly whether a record is its entity's only member.
    fn check_alone(index: &MatchIndex) {
        for (slot, record) in index.records.iter().enumerate() {
            let members = record.entity().map_or(0, |e| index.members(e).len());
            assert_eq!(
                record.alone,
                members == 1,
                "record {} in {:?}",
                record.key,
                record.entity()
            );
            if let Some(entity) = record.entity() {
                assert!(index.members(entity).contains(&(slot as Slot)));
            }
        }
        // Members in slot order, inline while one, in a list while several, and no list
        // held for an entity that has none.
        for (&entity, held) in &index.entities {
            let members = index.members(entity);
            assert!(members.windows(2).all(|w| w[0] < w[1]), "{members:?}");
            assert_eq!(held & LIST != 0, members.len() > 1, "{members:?}");
        }
        let lists = index.entities.values().filter(|h| **h & LIST != 0).count();
        assert_eq!(index.groups.len(), lists);
    }

    fn found(index: &MatchIndex, hash: u64) -> Option<Vec<Slot>> {
        match index.lookup_hash(hash) {
            Found::Records(slots) => {
                let mut slots = slots.to_vec();
                slots.sort_unstable();
                Some(slots)
            }
            Found::Generic => None,
        }
    }

    #[test]
    fn room_made_for_records_holds_them_without_growing() {
        let mut index = MatchIndex::empty(100);
        let add = |index: &mut MatchIndex, n: u32| {
            let slot = index.slot(&key(n));
            index.note_first_event_at(u64::from(n) << 32, slot);
        };
        for n in 0..10 {
            add(&mut index, n);
        }
        index.reserve(5_000);
        let capacities = |index: &MatchIndex| {
            (
                index.records.capacity(),
                index.slots.capacity(),
                index.first_events.capacity(),
            )
        };
        let before = capacities(&index);
        assert!(before.0 >= 5_010, "{before:?}");
        for n in 10..5_010 {
            add(&mut index, n);
        }
        assert_eq!(capacities(&index), before);
        assert_eq!(index.len(), 5_010);
        assert_eq!(index.first_event_holders(4_321 << 32).count(), 1);
    }

    #[test]
    fn postings_hold_one_record_inline_several_in_a_list_and_too_many_as_generic() {
        let mut index = MatchIndex::empty(3);
        let (a, b) = (11, 22);
        index.add_posting(a, 1, 3);
        assert_eq!(found(&index, a), Some(vec![1]));
        assert_eq!(found(&index, b), Some(vec![]));
        index.add_posting(a, 2, 3);
        index.add_posting(a, 3, 3);
        assert_eq!(found(&index, a), Some(vec![1, 2, 3]));
        // Back to one record, then none: the list is given back and reused.
        index.remove_posting(a, 2);
        index.remove_posting(a, 3);
        assert_eq!(found(&index, a), Some(vec![1]));
        assert_eq!(index.lists.free.len(), 1);
        index.remove_posting(a, 1);
        assert_eq!(found(&index, a), Some(vec![]));
        assert!(index.blocks.is_empty());
        index.add_posting(b, 5, 3);
        index.add_posting(b, 6, 3);
        assert!(index.lists.free.is_empty(), "reused");
        // Past the limit: generic, and generic it stays.
        index.add_posting(b, 7, 3);
        index.add_posting(b, 8, 3);
        assert_eq!(found(&index, b), None);
        index.remove_posting(b, 8);
        index.remove_posting(b, 7);
        assert_eq!(found(&index, b), None);
        index.add_posting(b, 9, 3);
        assert_eq!(found(&index, b), None);
        // A limit of one: a second record makes the key generic at once.
        index.add_posting(a, 1, 1);
        index.add_posting(a, 2, 1);
        assert_eq!(found(&index, a), None);
    }

    #[test]
    fn a_record_is_alone_exactly_while_its_entity_has_no_other_member() {
        let mut index = MatchIndex::empty(100);
        let (a, b) = (GoldenId(1), GoldenId(2));
        let decisions = [
            Decision::EntityCreated {
                entity: a,
                record: key(1),
            },
            Decision::EntityCreated {
                entity: b,
                record: key(2),
            },
            Decision::RecordLinked {
                entity: a,
                record: key(3),
                explanation: MatchExplanation::default(),
            },
            Decision::EntitiesMerged {
                survivor: a,
                merged: b,
                explanation: MatchExplanation::default(),
            },
            Decision::RecordUnlinked {
                entity: a,
                record: key(1),
                reason: "deleted".into(),
            },
            Decision::RecordUnlinked {
                entity: a,
                record: key(3),
                reason: "deleted".into(),
            },
            Decision::RecordLinked {
                entity: b,
                record: key(3),
                explanation: MatchExplanation::default(),
            },
            Decision::RecordLinked {
                entity: b,
                record: key(2),
                explanation: MatchExplanation::default(),
            },
            // A record alone in its entity, merged into one of two members where it
            // sorts last.
            Decision::EntityCreated {
                entity: GoldenId(4),
                record: key(4),
            },
            Decision::EntitiesMerged {
                survivor: b,
                merged: GoldenId(4),
                explanation: MatchExplanation::default(),
            },
        ];
        let alone = |index: &MatchIndex, n| {
            index
                .find(&key(n))
                .is_some_and(|slot| index.records[slot as usize].alone)
        };
        let mut seen = Vec::new();
        for decision in &decisions {
            index.apply(decision);
            check_alone(&index);
            seen.push((alone(&index, 1), alone(&index, 2), alone(&index, 3)));
        }
        assert!(!alone(&index, 4), "merged into company");
        // Alone, joined, left alone again by the others leaving, joined again.
        assert!(seen[1].1);
        assert!(!seen[3].1);
        assert!(seen[5].1);
        assert_eq!(seen[7], (false, false, false));
    }

    #[test]
    fn first_events_are_found_by_their_hash_and_a_shared_tag_names_both_holders() {
        let mut index = MatchIndex::empty(100);
        // 10 and 11 share the upper 32 bits their tag is made of, 12 does not.
        let (a, b, c) = (
            0x0123_4567_0000_0001,
            0x0123_4567_0000_0002,
            0x7654_3210_0000_0001,
        );
        index.note_first_event(a, &key(10));
        index.note_first_event(b, &key(11));
        index.note_first_event(c, &key(12));
        // Enough more to make the table grow and move its entries.
        for n in 0..10_000u32 {
            index.note_first_event(u64::from(n) << 40 | 0xff, &key(100 + n));
        }
        let holders = |hash| {
            let mut found: Vec<String> = index
                .first_event_holders(hash)
                .map(|k| k.to_string())
                .collect();
            found.sort();
            found
        };
        assert_eq!(holders(a), ["crm/r10", "crm/r11"]);
        assert_eq!(holders(b), ["crm/r10", "crm/r11"]);
        assert_eq!(holders(c), ["crm/r12"]);
        assert_eq!(holders(5u64 << 40 | 0xff), ["crm/r105"]);
        assert!(holders(0x1111_2222_3333_4444).is_empty());
    }
}
