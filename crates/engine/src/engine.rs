use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;

use cmdm_domain::MatchExplanation;
use cmdm_domain::record::RecordChange;
use cmdm_domain::{
    Decision, GoldenId, GoldenRecord, InboundEvent, LoggedEvent, OutboundChange, OutboundKind,
    SourceKey, SourceRecord, Timestamp,
};
use cmdm_matching::{BlockKey, Compact, EntityCandidate, Matcher, Member, Prepared, Survivorship};
use cmdm_store::crypto::DataKey;
use cmdm_store::{Batch, Sealed, Store, TreeName};
use tracing::{debug, info};

use crate::held::Parts;
use crate::index::{Found, MatchIndex};
use crate::keys::{KeyEntry, first_event_hash};
use crate::projector::{Built, Projector, Spent, Working, dedup_key, id_key};
use crate::{EngineError, Result};

/// Rules the engine applies; the same rules must be used to rebuild.
#[derive(Debug, Clone, Default)]
pub struct EngineConfig {
    pub survivorship: Survivorship,
    /// The operator's contact rules (quiet hours, default caps, …).
    pub contact: cmdm_domain::ContactPolicy,
    /// What to do with events about an erased person's records.
    pub after_erasure: crate::AfterErasure,
    /// How long an erasure may wait for the rewrite of the store's files, so that one
    /// rewrite serves many erasures (zero: each erasure rewrites at once).
    pub purge_delay: std::time::Duration,
}

/// The consumed position of one Kafka partition, stored with the batch it ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceOffset {
    pub topic: String,
    pub partition: i32,
    /// The next offset to consume.
    pub next: i64,
}

/// What one batch did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchReport {
    pub applied: usize,
    pub duplicates: usize,
    pub decisions: usize,
    /// Records that started a new entity.
    pub created: usize,
    /// Records linked to an existing entity.
    pub linked: usize,
    /// Entities merged into another.
    pub merged: usize,
    pub review_tasks: usize,
    /// Values kept raw because they did not parse.
    pub findings: usize,
    pub outbox: usize,
    /// Blocking keys found shared by more records than the generic limit.
    pub generic_keys: BTreeSet<String>,
    /// Events refused by the engine (an erased record, an unreadable contact point), by
    /// their position in the batch, with the reason: nothing of them was stored.
    pub refused: Vec<(usize, String)>,
}

impl BatchReport {
    /// Adds another batch's counts to these.
    pub fn add(&mut self, other: BatchReport) {
        self.applied += other.applied;
        self.duplicates += other.duplicates;
        self.decisions += other.decisions;
        self.created += other.created;
        self.linked += other.linked;
        self.merged += other.merged;
        self.review_tasks += other.review_tasks;
        self.findings += other.findings;
        self.outbox += other.outbox;
        self.generic_keys.extend(other.generic_keys);
        self.refused.extend(other.refused);
    }
}

/// A change waiting in the outbox, with its storage key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEntry {
    pub key: Vec<u8>,
    pub change: OutboundChange,
}

/// The answer to a golden record read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lookup {
    pub record: GoldenRecord,
    /// The id asked for, when it was merged into `record.id`.
    pub redirected_from: Option<GoldenId>,
}

/// The hub's write path and its reads of the projections.
pub struct Engine {
    store: Store,
    matcher: Arc<dyn Matcher>,
    config: EngineConfig,
    /// The match index and the batch being written behind the next one. Its lock admits
    /// one writer at a time: batches are decided against each other's results.
    writer: Mutex<Writer>,
}

/// What the writers share.
struct Writer {
    /// The in-memory match index, loaded on first use and dropped when a batch fails
    /// (it may then hold the failed batch's changes).
    index: Option<MatchIndex>,
    /// The thread that writes batches behind, started on first use and kept for all of
    /// them: a thread started per batch began each time with no memory of its own, and
    /// left what it had allocated to be reclaimed by other threads.
    thread: Option<WriteThread>,
    /// Why a batch written behind failed: no batch is applied after it until a restart,
    /// which finishes or drops it ([`Store::open`] replays its redo record).
    failed: Option<String>,
}

/// A batch for the writing thread: written through, flushed if `durable`; the working set
/// it leaves is dropped there too.
struct WriteJob {
    sealed: Arc<Sealed>,
    spent: Spent,
    durable: bool,
}

/// The writing thread, its queue (one batch at a time) and its answers.
struct WriteThread {
    jobs: std::sync::mpsc::SyncSender<WriteJob>,
    written: std::sync::mpsc::Receiver<cmdm_store::Result<()>>,
    handle: JoinHandle<()>,
    /// The last batch applied by [`Engine::apply_behind`], being written here.
    in_flight: Option<Arc<Sealed>>,
}

impl WriteThread {
    fn start() -> Result<Self> {
        let (jobs, queue) = std::sync::mpsc::sync_channel::<WriteJob>(1);
        let (answer, written) = std::sync::mpsc::sync_channel(1);
        let handle = std::thread::Builder::new()
            .name("cmdm-write".into())
            .spawn(move || {
                for job in queue {
                    drop(job.spent);
                    let mut result = job.sealed.write_through();
                    if result.is_ok() && job.durable {
                        result = job.sealed.flush();
                    }
                    drop(job.sealed);
                    if answer.send(result).is_err() {
                        return;
                    }
                }
            })
            .map_err(|e| EngineError::Inconsistent(format!("cannot start writing batches: {e}")))?;
        Ok(WriteThread {
            jobs,
            written,
            handle,
            in_flight: None,
        })
    }

    /// Stops the thread once its queue is empty.
    fn stop(self) {
        drop(self.jobs);
        let _ = self.handle.join();
    }
}

impl Writer {
    fn refuse_after_failure(&self) -> Result<()> {
        match &self.failed {
            Some(reason) => Err(EngineError::Inconsistent(reason.clone())),
            None => Ok(()),
        }
    }

    /// The batch being written behind, if one is.
    fn in_flight(&self) -> Option<&Arc<Sealed>> {
        self.thread.as_ref()?.in_flight.as_ref()
    }

    /// Hands a batch to the writing thread (started if need be); [`Writer::settle`]
    /// waits for it.
    fn write_behind(&mut self, sealed: Arc<Sealed>, spent: Spent, durable: bool) -> Result<()> {
        let thread = match &mut self.thread {
            Some(thread) => thread,
            None => self.thread.insert(WriteThread::start()?),
        };
        let job = WriteJob {
            sealed: sealed.clone(),
            spent,
            durable,
        };
        if thread.jobs.send(job).is_err() {
            // The thread is gone (it panicked): the batch was not handed over.
            self.stop_thread();
            return Err(EngineError::Inconsistent(
                "the thread writing batches stopped".into(),
            ));
        }
        thread.in_flight = Some(sealed);
        Ok(())
    }

    /// Waits until the batch being written behind is written.
    fn settle(&mut self) -> Result<()> {
        self.refuse_after_failure()?;
        let Some(thread) = &mut self.thread else {
            return Ok(());
        };
        if thread.in_flight.take().is_none() {
            return Ok(());
        }
        let written = match thread.written.recv() {
            Ok(written) => written.map_err(EngineError::from),
            Err(_) => {
                self.stop_thread();
                Err(EngineError::Inconsistent("writing a batch panicked".into()))
            }
        };
        if let Err(e) = &written {
            // The index has followed the batch; the store may hold part of it.
            self.index = None;
            self.failed = Some(format!(
                "a batch could not be written ({e}); restart to finish or drop it"
            ));
        }
        written
    }

    /// Stops the writing thread, if there is one, once its queue is empty.
    fn stop_thread(&mut self) {
        if let Some(thread) = self.thread.take() {
            thread.stop();
        }
    }
}

/// The writers' lock, taken once the batch written behind is written: the match index
/// is then in step with the store.
pub(crate) struct WriterGuard<'e>(MutexGuard<'e, Writer>);

impl std::ops::Deref for WriterGuard<'_> {
    type Target = Option<MatchIndex>;

    fn deref(&self) -> &Self::Target {
        &self.0.index
    }
}

impl std::ops::DerefMut for WriterGuard<'_> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0.index
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        // A batch handed to its writing thread is finished, not abandoned half-way.
        let writer = self.writer.get_mut().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = writer.settle() {
            tracing::error!(error = %e, "the last batch could not be written");
        }
        writer.stop_thread();
    }
}

impl Engine {
    /// An engine over an opened store.
    pub fn new(store: Store, matcher: Arc<dyn Matcher>, config: EngineConfig) -> Self {
        Engine {
            store,
            matcher,
            config,
            writer: Mutex::new(Writer {
                index: None,
                thread: None,
                failed: None,
            }),
        }
    }

    /// The underlying store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The matcher in use.
    pub fn matcher(&self) -> &Arc<dyn Matcher> {
        &self.matcher
    }

    /// The configured rules.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    pub(crate) fn projector(&self) -> Projector<'_> {
        Projector {
            matcher: self.matcher.as_ref(),
        }
    }

    /// Applies a batch of accepted events and records the consumed offsets, all in one
    /// storage transaction. Redelivered events (same source and id) change nothing.
    pub fn apply_batch(
        &self,
        events: &[InboundEvent],
        offsets: &[SourceOffset],
    ) -> Result<BatchReport> {
        let mut guard = self.lock_index()?;
        let mut index = self.take_index(&mut guard)?;
        let (report, sealed, _) =
            self.apply_to(&mut index, self.store.begin()?, events, offsets)?;
        sealed.commit()?;
        // Only a committed batch leaves the index in step with the store.
        *guard = Some(index);
        Ok(report)
    }

    /// Applies a batch like [`Engine::apply_batch`], but writes it on a second thread
    /// while the caller goes on, typically to apply the next batch: matching and storage,
    /// the two halves of applying a batch, overlap. Returns once this batch is applied
    /// and the one applied before it is written (and flushed to disk if `durable`), so
    /// the offsets of that earlier batch are the ones now stored; [`Engine::written`]
    /// waits for the last one.
    ///
    /// The batch reads the writes of the one before it while they are being written
    /// ([`Store::begin_after`]) and is written only after it, so the store ends as with
    /// [`Engine::apply_batch`]. It is written through ([`Sealed::write_through`]): all or
    /// nothing after a crash, and readers holding the store's read gate see it whole or
    /// not at all, but no sled transaction, whose lock would stop this thread's reads.
    /// Other writers wait until it is written. If writing fails, no batch is applied
    /// after it until a restart.
    pub fn apply_behind(
        &self,
        events: &[InboundEvent],
        offsets: &[SourceOffset],
        durable: bool,
    ) -> Result<BatchReport> {
        self.refuse_under_read_gate()?;
        let mut writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        writer.refuse_after_failure()?;
        let mut index = match writer.index.take() {
            Some(index) => index,
            None => {
                writer.settle()?;
                self.load_index()?
            }
        };
        let batch = match writer.in_flight() {
            Some(before) => self.store.begin_after(before),
            None => self.store.begin()?,
        };
        let applied = self.apply_to(&mut index, batch, events, offsets);
        // This batch read the previous one's writes: it is written only after them.
        let before = writer.settle();
        let (report, sealed, spent) = match (applied, before) {
            (Ok(applied), Ok(())) => applied,
            // The index has followed a batch that will not be written.
            (Err(e), _) | (_, Err(e)) => return Err(e),
        };
        writer.write_behind(Arc::new(sealed), spent, durable)?;
        writer.index = Some(index);
        Ok(report)
    }

    /// Waits until every batch applied by [`Engine::apply_behind`] is written.
    pub fn written(&self) -> Result<()> {
        self.writer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .settle()
    }

    /// Makes room in the match index for about `records` more source records, as an
    /// import that knows roughly how many rows it brings can: the index then does not
    /// grow by steps, copying its tables at each (the records' entries and keys). Does
    /// nothing while the index is not loaded.
    pub fn reserve(&self, records: usize) {
        let mut writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(index) = writer.index.as_mut() {
            index.reserve(records);
        }
    }

    /// Loads the match index now rather than on the first batch.
    pub fn warm_up(&self) -> Result<()> {
        let mut guard = self.lock_index()?;
        if guard.is_none() {
            *guard = Some(self.load_index()?);
        }
        Ok(())
    }

    /// Drops the match index, so the next batch loads it again from the projections.
    pub(crate) fn forget_index(&self) -> Result<()> {
        *self.lock_index()? = None;
        Ok(())
    }

    /// The writers' lock (with the match index), once any batch written behind is
    /// written.
    pub(crate) fn lock_index(&self) -> Result<WriterGuard<'_>> {
        self.refuse_under_read_gate()?;
        let mut writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        writer.settle()?;
        Ok(WriterGuard(writer))
    }

    /// A thread holding the read gate waiting for a batch to be written would wait for
    /// itself: the batch waits for the gate.
    fn refuse_under_read_gate(&self) -> Result<()> {
        if self.store.holds_read_gate() {
            return Err(EngineError::Inconsistent(
                "a write cannot start on a thread that holds the store's read gate".into(),
            ));
        }
        Ok(())
    }

    /// The match index out of its lock (loaded if it is not there), for a writer to
    /// give back once its batches are committed.
    pub(crate) fn take_index(&self, guard: &mut Option<MatchIndex>) -> Result<MatchIndex> {
        match guard.take() {
            Some(index) => Ok(index),
            None => self.load_index(),
        }
    }

    /// A source record's prepared form as the store holds it (the match index keeps only
    /// its compact form).
    pub(crate) fn stored_form(&self, key: &SourceKey) -> Result<Option<Prepared>> {
        match self.store.get(TreeName::Records, key.encode().as_bytes())? {
            Some(bytes) => Parts::of(&bytes)?.prepared(),
            None => Ok(None),
        }
    }

    /// Loads the match index, which builds the store's filter of the records tree from
    /// the keys it reads, and the store's other key filters beside it on a second thread
    /// (once: [`Store::build_filters`]).
    pub(crate) fn load_index(&self) -> Result<MatchIndex> {
        let started = std::time::Instant::now();
        let others = || self.store.build_filters(&[TreeName::Records]);
        let (index, filters) = std::thread::scope(|scope| {
            let filters = std::thread::Builder::new()
                .name("cmdm-filters".into())
                .spawn_scoped(scope, others);
            let index = MatchIndex::load(&self.store, self.matcher.as_ref());
            let filters = match filters {
                Ok(thread) => thread
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
                // No second thread: built here.
                Err(_) => others(),
            };
            (index, filters)
        });
        let index = index?;
        filters?;
        let (keys, shared_keys) = index.keys();
        info!(
            records = index.len(),
            keys,
            shared_keys,
            ms = started.elapsed().as_millis() as u64,
            "match index loaded"
        );
        Ok(index)
    }

    /// Applies events to `batch` and the index, and seals the batch for its commit; also
    /// gives back the batch's decoded records, for the caller to drop ([`Spent`]).
    fn apply_to(
        &self,
        index: &mut MatchIndex,
        batch: Batch<'_>,
        events: &[InboundEvent],
        offsets: &[SourceOffset],
    ) -> Result<(BatchReport, Sealed, Spent)> {
        if events.len() < AHEAD_FROM {
            let mut none = std::iter::repeat_with(|| None);
            return self.apply_each(index, batch, events, offsets, &mut none);
        }
        let matcher = self.matcher.as_ref();
        std::thread::scope(|scope| {
            let (sender, worked_out) = std::sync::mpsc::channel();
            // Should the thread not start, the sender is dropped with it and every record
            // is prepared in line.
            let _ = std::thread::Builder::new()
                .name("cmdm-prepare".into())
                .spawn_scoped(scope, move || {
                    for event in events {
                        if sender.send(Some(ahead(matcher, event))).is_err() {
                            break;
                        }
                    }
                });
            self.apply_each(index, batch, events, offsets, &mut worked_out.iter())
        })
    }

    /// Applies a batch's events in order; `ahead` yields, for each event in turn, what
    /// the matcher makes of its record were the record new, where that was worked out.
    fn apply_each(
        &self,
        index: &mut MatchIndex,
        batch: Batch<'_>,
        events: &[InboundEvent],
        offsets: &[SourceOffset],
        ahead: &mut dyn Iterator<Item = Option<Ahead>>,
    ) -> Result<(BatchReport, Sealed, Spent)> {
        let mut work = Working::new(batch, &self.config.survivorship, self.matcher.as_ref());
        let mut report = BatchReport::default();
        let received_at = Timestamp::now();
        let projector = self.projector();
        for (position, event) in events.iter().enumerate() {
            let ahead = ahead.next().flatten();
            if work
                .view()
                .get(TreeName::Dedup, &dedup_key(&event.source, &event.id))?
                .is_some()
            {
                report.duplicates += 1;
                continue;
            }
            // A record's first event counts for dedup with the record's data key instead.
            let first_hash = first_event_hash(&event.source, &event.id);
            if self.made_a_key(work.view(), index, first_hash, event)? {
                report.duplicates += 1;
                continue;
            }
            let key = event.key();
            // The number the event's log entry gets.
            let seq = work.batch().next_seq();
            // Where the event makes its record's data key, and so counts for dedup with it:
            // its hash.
            let mut counted = None;
            let (data_key, key_ref) = match event.payload.contact_point() {
                Some(raw) => {
                    let Some(point) = self.matcher.contact_point(raw) else {
                        report.refused.push((
                            position,
                            format!(
                                "contact point `{raw}` is neither an e-mail address nor a phone number"
                            ),
                        ));
                        continue;
                    };
                    let key_ref = match work.view().get_bin::<cmdm_domain::ContactPointState>(
                        TreeName::ContactPoints,
                        point.as_bytes(),
                    )? {
                        Some(state) => state.key_ref,
                        None => new_key_ref(),
                    };
                    (self.data_key(work.batch(), &key_ref)?, Some(key_ref))
                }
                None => {
                    if self.config.after_erasure == crate::AfterErasure::Reject
                        && work
                            .view()
                            .get(TreeName::Erased, key.encode().as_bytes())?
                            .is_some()
                    {
                        report.refused.push((
                            position,
                            format!("record {key} belongs to an erased person"),
                        ));
                        continue;
                    }
                    let name = key.encode();
                    match self.key_entry(work.batch(), &name)? {
                        Some(entry) => (entry.key, None),
                        None => {
                            let entry = KeyEntry::first(seq, &event.id);
                            work.batch().put(TreeName::Keys, name, entry.encode());
                            index.note_first_event(first_hash, &key);
                            counted = Some(first_hash);
                            (entry.key, None)
                        }
                    }
                }
            };
            // The stored prepared form this event may replace, whose blocking keys the
            // index then gives up (the index keeps only the compact form). Only profile
            // changes and deletions replace it.
            let replaces_profile = matches!(
                event.payload,
                cmdm_domain::Payload::Profile(_) | cmdm_domain::Payload::Deleted
            );
            let before = match index.find(&key) {
                Some(slot) if replaces_profile && index.form(slot).is_some() => {
                    work.features(&key)?
                }
                _ => None,
            };
            let logged = LoggedEvent {
                id: event.id.clone(),
                source: event.source.clone(),
                subject: event.subject.clone(),
                event_type: event.event_type(),
                time: event.time,
                received_at,
                // Sealed when the log entry is encoded (SealOnWrite).
                sealed: Vec::new(),
                key_ref,
            };
            debug_assert_eq!(work.batch().next_seq(), seq);
            let (plain, fresh) = match ahead {
                Some(a) => (a.plain, a.fresh),
                None => (None, None),
            };
            // What was worked out ahead holds only for a record the store does not hold.
            let (built, ahead_rest) = match fresh {
                Some(f) if work.source(&key)?.is_none() => (Some(f.built), Some((f.keys, f.form))),
                _ => (None, None),
            };
            let (active, change, prepared) = projector.event(
                &mut work,
                &logged,
                Some(&event.payload),
                seq,
                counted,
                built,
            )?;
            let entry = SealOnWrite {
                logged,
                key: data_key,
                plain: match plain {
                    Some(plain) => Plain::Encoded(plain),
                    None => Plain::Payload(event.payload.clone()),
                },
            };
            let logged_at = work.batch().append_log_with(move || entry.encode());
            debug_assert_eq!(logged_at, seq);
            report.applied += 1;
            let features = prepared.map(|prepared| {
                let (keys, form) = match ahead_rest {
                    Some(rest) => rest,
                    None => (self.matcher.block_keys(&prepared), None),
                };
                index.set_features(
                    &prepared,
                    &keys,
                    form,
                    before.as_ref(),
                    self.matcher.as_ref(),
                );
                (prepared, keys)
            });
            if change == RecordChange::Profile {
                let decisions = self.decide(
                    work.view(),
                    index,
                    &key,
                    active,
                    features.as_ref(),
                    &mut report,
                )?;
                self.record_decisions(&mut work, index, decisions, &mut report)?;
            }
            work.spend(features);
        }
        report.findings = work.touched.findings;
        work.settle()?;
        report.outbox = write_outbox(&mut work)?;
        let (mut batch, spent) = work.finish_leaving()?;
        for offset in offsets {
            batch.put(
                TreeName::Offsets,
                offset_key(&offset.topic, offset.partition),
                offset.next.to_be_bytes(),
            );
        }
        Ok((report, batch.seal(), spent))
    }

    /// Logs, projects and indexes the matcher's decisions about one record.
    fn record_decisions(
        &self,
        work: &mut Working<'_>,
        index: &mut MatchIndex,
        decisions: Vec<Decision>,
        report: &mut BatchReport,
    ) -> Result<()> {
        for decision in decisions {
            let seq = work.batch().next_seq();
            debug!(seq, ?decision, "decided");
            self.projector().decision(work, &decision, seq)?;
            index.apply(&decision);
            report.decisions += 1;
            match decision {
                Decision::EntityCreated { .. } => report.created += 1,
                Decision::RecordLinked { .. } => report.linked += 1,
                Decision::EntitiesMerged { .. } => report.merged += 1,
                Decision::ReviewOpened { .. } => report.review_tasks += 1,
                _ => {}
            }
            let logged_at = crate::log_decision(work.batch(), decision);
            debug_assert_eq!(logged_at, seq);
        }
        Ok(())
    }

    /// Decides again where every active record belongs, as if each had just changed:
    /// the matcher may link, merge and open review tasks, never undo; what stewards
    /// decided holds (kept-apart records stay apart, split records stay out).
    pub fn rematch(&self, batch_size: usize) -> Result<BatchReport> {
        let mut keys = Vec::new();
        for item in self.store.tree(TreeName::Records).iter() {
            let (key, _) = item.map_err(cmdm_store::StoreError::from)?;
            keys.push(key);
        }
        let mut total = BatchReport::default();
        for chunk in keys.chunks(batch_size.max(1)) {
            let mut guard = self.lock_index()?;
            let mut index = self.take_index(&mut guard)?;
            let mut work = Working::new(
                self.store.begin()?,
                &self.config.survivorship,
                self.matcher.as_ref(),
            );
            let mut report = BatchReport::default();
            for key in chunk {
                let key: SourceKey = std::str::from_utf8(key)
                    .ok()
                    .and_then(|k| k.parse().ok())
                    .ok_or_else(|| {
                        EngineError::Inconsistent("a record key does not parse".into())
                    })?;
                let Some(active) = work.source(&key)?.map(SourceRecord::is_active) else {
                    continue;
                };
                let features = work.features(&key)?.map(|prepared| {
                    let keys = self.matcher.block_keys(&prepared);
                    (prepared, keys)
                });
                let decisions = self.decide(
                    work.view(),
                    &index,
                    &key,
                    active,
                    features.as_ref(),
                    &mut report,
                )?;
                self.record_decisions(&mut work, &mut index, decisions, &mut report)?;
            }
            work.settle()?;
            report.outbox = write_outbox(&mut work)?;
            work.finish()?.commit()?;
            *guard = Some(index);
            total.add(report);
        }
        self.store.flush_blocking()?;
        Ok(total)
    }

    /// The data key named `name` (a contact point's key reference), made on first use.
    fn data_key(&self, batch: &mut Batch<'_>, name: &str) -> Result<DataKey> {
        if let Some(entry) = self.key_entry(batch, name)? {
            return Ok(entry.key);
        }
        let entry = KeyEntry::alone();
        batch.put(TreeName::Keys, name.to_owned(), entry.encode());
        Ok(entry.key)
    }

    /// Whether `event`, whose source and id hash to `hash`, is the first event of a
    /// record, counted for dedup with the record's data key: an event with the same
    /// source and id, whatever its subject.
    fn made_a_key(
        &self,
        batch: &Batch<'_>,
        index: &MatchIndex,
        hash: u64,
        event: &InboundEvent,
    ) -> Result<bool> {
        for holder in index.first_event_holders(hash) {
            if *holder.source == *event.source
                && self
                    .key_entry(batch, &holder.encode())?
                    .is_some_and(|entry| entry.made_by(&event.id))
            {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// What the keys tree holds under `name`, if anything.
    fn key_entry(&self, batch: &Batch<'_>, name: &str) -> Result<Option<KeyEntry>> {
        batch
            .get(TreeName::Keys, name.as_bytes())?
            .map(|bytes| KeyEntry::decode(&bytes))
            .transpose()
    }

    /// Decides where a record whose profile changed belongs (`active`: not deleted at
    /// its source), from its prepared form and that form's blocking keys.
    fn decide(
        &self,
        batch: &Batch<'_>,
        index: &MatchIndex,
        record: &SourceKey,
        active: bool,
        features: Option<&(Prepared, Vec<BlockKey>)>,
        report: &mut BatchReport,
    ) -> Result<Vec<Decision>> {
        // The index follows every decision of the batch, so it knows the entity already.
        let current = index.find(record).and_then(|slot| index.entity_of(slot));
        if !active {
            return Ok(current
                .map(|entity| Decision::RecordUnlinked {
                    entity,
                    record: record.clone(),
                    reason: "deleted at source".to_owned(),
                })
                .into_iter()
                .collect());
        }
        let Some((prepared, keys)) = features.filter(|(p, _)| !p.values.is_empty()) else {
            // Nothing to match on (every value unparseable): the record stands alone.
            return Ok(match current {
                Some(_) => Vec::new(),
                None => vec![Decision::EntityCreated {
                    entity: GoldenId(batch.next_seq()),
                    record: record.clone(),
                }],
            });
        };
        let home = current.map(|entity| entity_candidate(index, entity));
        // The index holds the record's compact form since its features were set (a
        // rematch finds it there too).
        let computed;
        let form = match index.find(record).and_then(|slot| index.form(slot)) {
            Some(form) => form,
            None => {
                computed = self.matcher.compact(prepared);
                &computed
            }
        };
        let probe = self.matcher.probe(form);
        // Entities no member of which can reach the review band change nothing in the
        // decision: most candidates, left out before their members are gathered.
        let found = self.candidates(index, record, keys, current, report);
        std::hint::black_box(index.touch_company(found.values().copied()));
        let candidates: Vec<EntityCandidate<'_>> = found
            .into_iter()
            .filter(|&(_, slot)| {
                index.any_member(
                    slot,
                    |sketch| self.matcher.screen_sketch(&probe, sketch),
                    |form| self.matcher.screen(&probe, form),
                )
            })
            .map(|(entity, _)| entity_candidate(index, entity))
            .collect();
        let outcome = self.matcher.decide(&probe, home.as_ref(), &candidates);

        let mut decisions = Vec::new();
        // The entity the record ends in before merges; the oldest id survives merges.
        let base = match (current, &outcome.link) {
            (Some(entity), _) => entity,
            (None, Some((entity, explanation))) => {
                decisions.push(Decision::RecordLinked {
                    entity: *entity,
                    record: record.clone(),
                    explanation: explanation.clone(),
                });
                *entity
            }
            (None, None) => {
                let entity = GoldenId(batch.next_seq());
                decisions.push(Decision::EntityCreated {
                    entity,
                    record: record.clone(),
                });
                entity
            }
        };
        // Two candidates may each fit the record yet have been kept apart from each other.
        let members = index.members(base);
        let mut joined: Vec<u32> = Vec::with_capacity(members.len() + 1);
        joined.extend_from_slice(members);
        joined.extend(index.find(record));
        let mut merge = Vec::new();
        for (entity, explanation) in &outcome.merge {
            if *entity != base && !index.kept_apart(&joined, *entity) {
                joined.extend_from_slice(index.members(*entity));
                merge.push((*entity, explanation.clone()));
            }
        }
        let outcome = cmdm_matching::MatchOutcome { merge, ..outcome };
        let survivor = outcome
            .merge
            .iter()
            .map(|(e, _)| *e)
            .chain([base])
            .min()
            .unwrap_or(base);
        for (entity, explanation) in outcome
            .merge
            .iter()
            .cloned()
            .chain([(base, MatchExplanation::default())])
        {
            if entity != survivor {
                let explanation = if entity == base {
                    outcome
                        .merge
                        .iter()
                        .find(|(e, _)| *e == survivor)
                        .map(|(_, x)| x.clone())
                } else {
                    Some(explanation)
                };
                decisions.push(Decision::EntitiesMerged {
                    survivor,
                    merged: entity,
                    explanation: explanation.unwrap_or_default(),
                });
            }
        }
        let own = index.find(record);
        for (entity, explanation) in outcome.review {
            if own.is_some_and(|slot| index.under_review(slot, entity)) {
                continue;
            }
            // The task id is the sequence number its decision will get.
            let task = batch.next_seq() + decisions.len() as u64;
            decisions.push(Decision::ReviewOpened {
                task,
                record: record.clone(),
                entity,
                explanation,
            });
        }
        Ok(decisions)
    }

    /// Entities other than `home` holding a record that shares a non-generic blocking key,
    /// each with one of those records.
    fn candidates(
        &self,
        index: &MatchIndex,
        record: &SourceKey,
        keys: &[BlockKey],
        home: Option<GoldenId>,
        report: &mut BatchReport,
    ) -> BTreeMap<GoldenId, u32> {
        let own = index.find(record);
        // The record and its entity's members: no candidate a steward kept apart from them.
        let ours: Vec<u32> = match home {
            Some(entity) => index.members(entity).to_vec(),
            None => own.into_iter().collect(),
        };
        // Records found, once per key they share with the record, with the number of
        // records holding that key; counted once sorted.
        // Room for what most records find (about 50 at 1,000,000 records), rather than
        // growing key by key.
        let mut found: Vec<(u32, u32)> = Vec::with_capacity(64);
        for block in keys {
            match index.lookup(&block.0) {
                Found::Generic => {
                    if !report.generic_keys.contains(&block.0) {
                        report.generic_keys.insert(block.0.clone());
                    }
                }
                Found::Records(slots) => {
                    let holders = u32::try_from(slots.len()).unwrap_or(u32::MAX);
                    found.extend(
                        slots
                            .iter()
                            .filter(|&&slot| Some(slot) != own)
                            .map(|&slot| (slot, holders)),
                    );
                }
            }
        }
        let shared = shared_keys(found, self.matcher.weak_key_limit());
        std::hint::black_box(index.touch_entries(shared.iter().map(|&(slot, _)| slot)));
        // Ranked by shared keys, ties by source key: the same records in every process.
        let ranked = shared
            .into_iter()
            .map(|(slot, n)| ((index.key(slot), slot), n));
        let mut entities = BTreeMap::new();
        for (_, slot) in cmdm_matching::closest(ranked, self.matcher.max_candidates()) {
            if let Some(entity) = index.entity_of(slot)
                && Some(entity) != home
                && !index.kept_apart(&ours, entity)
            {
                entities.entry(entity).or_insert(slot);
            }
        }
        entities
    }

    /// The stored next offset of a partition, if any batch recorded one.
    pub fn stored_offset(&self, topic: &str, partition: i32) -> Result<Option<i64>> {
        Ok(self
            .store
            .get(TreeName::Offsets, &offset_key(topic, partition))?
            .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
            .map(i64::from_be_bytes))
    }

    /// A golden record by id, following merge redirects.
    pub fn golden(&self, id: GoldenId) -> Result<Option<Lookup>> {
        // Several keys: the gate keeps a batch being written out (see Store::read_gate).
        let _gate = self.store().read_gate();
        let mut current = id;
        // Redirects are flattened on merge; the bound only guards against corruption.
        for _ in 0..64 {
            if let Some(record) = self
                .store
                .get_bin::<GoldenRecord>(TreeName::Entities, &id_key(current))?
            {
                let redirected_from = (current != id).then_some(id);
                return Ok(Some(Lookup {
                    record,
                    redirected_from,
                }));
            }
            match self.store.get(TreeName::Redirects, &id_key(current))? {
                Some(next) => {
                    let bytes = <[u8; 8]>::try_from(next.as_ref())
                        .map_err(|_| EngineError::Inconsistent("redirect value".into()))?;
                    current = GoldenId(u64::from_be_bytes(bytes));
                }
                None => return Ok(None),
            }
        }
        Err(EngineError::Inconsistent(format!(
            "redirect loop from {id}"
        )))
    }

    /// The golden record a spoke's record belongs to.
    pub fn lookup(&self, key: &SourceKey) -> Result<Option<GoldenRecord>> {
        let _gate = self.store().read_gate();
        let Some(bytes) = self.store.get(TreeName::Records, key.encode().as_bytes())? else {
            return Ok(None);
        };
        let Some(entity) = Parts::of(&bytes)?.entity else {
            return Ok(None);
        };
        Ok(self.golden(entity)?.map(|l| l.record))
    }

    /// A source record as the hub holds it.
    pub fn source_record(&self, key: &SourceKey) -> Result<Option<SourceRecord>> {
        self.store
            .get(TreeName::Records, key.encode().as_bytes())?
            .map(|bytes| Parts::of(&bytes)?.record())
            .transpose()
    }

    /// Outbox entries in order, whole batches at a time, until at least `limit` (or all),
    /// of batches already flushed to disk only: a batch a crash could still take back
    /// may be decided differently after the restart, and its changes must not have been
    /// published. Entries of one batch share their key: publish every entry returned
    /// before calling [`Engine::outbox_done`] with their keys.
    pub fn outbox(&self, limit: usize) -> Result<Vec<OutboxEntry>> {
        let durable_before = self.store.durable_before();
        let mut entries = Vec::new();
        for item in self.store.tree(TreeName::Outbox).iter() {
            if entries.len() >= limit.max(1) {
                break;
            }
            let (key, value) = item.map_err(cmdm_store::StoreError::from)?;
            // Keyed by the batch's last sequence number, in order.
            if cmdm_store::seq_from_key(&key)? >= durable_before {
                break;
            }
            let changes = crate::outbox::decode_changes(&value)?;
            entries.extend(changes.into_iter().map(|change| OutboxEntry {
                key: key.to_vec(),
                change,
            }));
        }
        Ok(entries)
    }

    /// Removes published outbox entries.
    pub fn outbox_done(&self, keys: &[Vec<u8>]) -> Result<()> {
        let mut keys = keys.to_vec();
        keys.dedup();
        Ok(self.store.remove_keys(TreeName::Outbox, &keys)?)
    }
}

/// Batches of at least this many events have their records prepared ahead, on a second
/// thread, while the batch is applied.
const AHEAD_FROM: usize = 32;

/// An event's log entry, its payload sealed with its data key as the entry is encoded:
/// on the thread that writes the batch, when that is not the one applying it.
struct SealOnWrite {
    /// The event as logged but for its sealed payload.
    logged: LoggedEvent,
    key: DataKey,
    plain: Plain,
}

/// The payload a log entry seals.
enum Plain {
    /// Encoded already (JSON), ahead of the batch.
    Encoded(Vec<u8>),
    /// To be encoded with the entry.
    Payload(cmdm_domain::Payload),
}

impl SealOnWrite {
    /// The entry in its stored form ([`LogEntry::to_stored`]).
    fn encode(&self) -> std::result::Result<Vec<u8>, String> {
        let encoded;
        let plain = match &self.plain {
            Plain::Encoded(plain) => plain,
            Plain::Payload(payload) => {
                encoded = serde_json::to_vec(payload).map_err(|e| e.to_string())?;
                &encoded
            }
        };
        let sealed = self.key.seal(plain).map_err(|e| e.to_string())?;
        self.logged.to_stored_with(&sealed)
    }
}

/// What can be worked out about an event before its batch is applied, on another
/// thread while the batch is applied: the payload as its log entry seals it, and for a
/// profile event what the event makes of its record were the record new.
struct Ahead {
    /// The payload encoded for its log entry; `None` if it would not encode (the entry
    /// then encodes it again, and reports why).
    plain: Option<Vec<u8>>,
    fresh: Option<Fresh>,
}

/// A profile event's record were the record new: the record, its prepared form, blocking
/// keys and compact form; used where the record is new, for then it is exactly what
/// applying the event gives (but for the stamps' sequence number, set when it is used).
struct Fresh {
    built: Built,
    keys: Vec<BlockKey>,
    form: Option<Compact>,
}

fn ahead(matcher: &dyn Matcher, event: &InboundEvent) -> Ahead {
    let plain = serde_json::to_vec(&event.payload).ok();
    let fresh = matches!(event.payload, cmdm_domain::Payload::Profile(_)).then(|| {
        let built = Built::new(matcher, event.key(), &event.payload, event.time);
        let keys = matcher.block_keys(&built.prepared);
        let form = (!built.prepared.values.is_empty()).then(|| matcher.compact(&built.prepared));
        Fresh { built, keys, form }
    });
    Ahead { plain, fresh }
}

/// An entity with its members' compact forms borrowed from the index, in source key
/// order.
fn entity_candidate(index: &MatchIndex, entity: GoldenId) -> EntityCandidate<'_> {
    let mut members: Vec<Member<'_>> = index
        .members(entity)
        .iter()
        .filter_map(|&slot| {
            index.form(slot).map(|form| Member {
                key: index.key(slot),
                form,
            })
        })
        .collect();
    members.sort_by(|a, b| a.key.cmp(b.key));
    EntityCandidate { entity, members }
}

fn offset_key(topic: &str, partition: i32) -> Vec<u8> {
    let mut key = topic.as_bytes().to_vec();
    key.push(0);
    key.extend_from_slice(&partition.to_be_bytes());
    key
}

/// Queues the merges of a batch, in order, then the final state of every entity it
/// touched, under one key: the batch's last sequence number, so the outbox publishes in
/// order across batches.
/// A fresh random key reference for a contact point: no personal data in the log.
fn new_key_ref() -> String {
    let bytes = DataKey::generate();
    let hex: String = bytes.as_bytes()[..12]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("cp-{hex}")
}

/// Each record found through the blocking keys (once per key it shares, with the number
/// of records holding that key) with the number of keys it shares, in slot order; a
/// record sharing a single key held by more than `weak_limit` records is left out.
pub(crate) fn shared_keys(mut found: Vec<(u32, u32)>, weak_limit: usize) -> Vec<(u32, usize)> {
    found.sort_unstable();
    // At most one entry per record found: sized once rather than grown as runs are counted.
    let mut shared = Vec::with_capacity(found.len());
    shared.extend(
        found
            .chunk_by(|a, b| a.0 == b.0)
            .filter(|run| run.len() > 1 || run[0].1 as usize <= weak_limit)
            .map(|run| (run[0].0, run.len())),
    );
    shared
}

pub(crate) fn write_outbox(work: &mut Working<'_>) -> Result<usize> {
    use crate::outbox::Stored;
    // The golden records are written first: the changes copy their encoding.
    work.write_entities()?;
    let last_seq = work.view().next_seq() - 1;
    let kept_apart = work.touched.kept_apart.clone();
    let touched: Vec<GoldenId> = work.touched.entities.iter().copied().collect();
    // Every golden record a change carries, loaded first; those the batch leaves as they
    // were (kept apart from another) are encoded here.
    let mut unchanged: HashMap<GoldenId, Vec<u8>> = HashMap::new();
    for id in kept_apart
        .iter()
        .flat_map(|(entity, other, _)| [*entity, *other])
        .chain(touched.iter().copied())
    {
        if work
            .view()
            .put_value(TreeName::Entities, &id_key(id))
            .is_some()
        {
            continue;
        }
        if let Some(golden) = work.entity(id)? {
            let bytes = cmdm_store::encode_bin(TreeName::Entities, golden)?;
            unchanged.insert(id, bytes);
        }
    }
    let loaded = &*work;
    let encoded = |id: GoldenId| -> Option<&[u8]> {
        loaded
            .view()
            .put_value(TreeName::Entities, &id_key(id))
            .or_else(|| unchanged.get(&id).map(Vec::as_slice))
    };
    let mut changes: Vec<Stored<&[u8]>> = Vec::new();
    for (merged, survivor) in &loaded.touched.merged {
        changes.push(Stored {
            kind: OutboundKind::Merged,
            golden_id: *merged,
            survivor_id: Some(*survivor),
            record: None,
            other_id: None,
            seq: last_seq,
        });
    }
    for (entity, other, seq) in kept_apart {
        for (id, other) in [(entity, other), (other, entity)] {
            changes.push(Stored {
                kind: OutboundKind::KeptApart,
                golden_id: id,
                survivor_id: None,
                record: loaded.loaded_entity(id).and_then(|_| encoded(id)),
                other_id: Some(other),
                seq,
            });
        }
    }
    for id in &loaded.touched.erased {
        changes.push(Stored {
            kind: OutboundKind::Erased,
            golden_id: *id,
            survivor_id: None,
            record: None,
            other_id: None,
            seq: last_seq,
        });
    }
    let split: HashMap<GoldenId, GoldenId> = loaded.touched.split.iter().copied().collect();
    for id in &touched {
        let change = match loaded.loaded_entity(*id) {
            Some(record) => Stored {
                kind: if split.contains_key(id) {
                    OutboundKind::Split
                } else {
                    OutboundKind::Upserted
                },
                golden_id: *id,
                survivor_id: split.get(id).copied(),
                other_id: None,
                seq: record.version,
                record: Some(encoded(*id).ok_or_else(|| {
                    EngineError::Inconsistent(format!("golden record {id} was not encoded"))
                })?),
            },
            None => Stored {
                kind: OutboundKind::Deleted,
                golden_id: *id,
                survivor_id: None,
                record: None,
                other_id: None,
                seq: last_seq,
            },
        };
        changes.push(change);
    }
    let count = changes.len();
    if count > 0 {
        let value = crate::outbox::assemble(&changes)?;
        work.batch()
            .put(TreeName::Outbox, last_seq.to_be_bytes(), value);
    }
    Ok(count)
}
