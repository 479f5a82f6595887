//! The hub's storage on sled: one tree per concern behind a small API. All writes of a
//! batch go through a [`Batch`] and land all or nothing (in one sled transaction, or
//! written through behind a redo record), so the log, the projections, the outbox and
//! the consumed offsets never disagree after a crash, and readers holding the read gate
//! never see part of a batch.

pub mod crypto;
mod filter;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use serde::Serialize;
use serde::de::DeserializeOwned;
use sled::Transactional;
use thiserror::Error;

use filter::KeyFilter;

/// Errors of the storage layer.
#[derive(Debug, Error)]
pub enum StoreError {
    #[error("storage: {0}")]
    Sled(#[from] sled::Error),
    #[error("corrupt value in tree `{tree}`: {reason}")]
    Corrupt { tree: &'static str, reason: String },
    #[error("cannot encode a value for tree `{tree}`: {reason}")]
    Encode { tree: &'static str, reason: String },
    #[error("data key: {0}")]
    Crypto(String),
}

/// Result alias of this crate.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// The trees of the store. Projections are rebuildable from `Log` (and `Keys`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TreeName {
    /// Every accepted event and every decision, in segments: one per committed batch,
    /// keyed by the sequence number of its last entry (u64 BE). See [`Store::log`].
    Log,
    /// `source\0event id` → seq: idempotency of inbound events.
    Dedup,
    /// source key → data key sealing that record's personal data in the log.
    Keys,
    /// source key → source record, with the golden id of its entity and its prepared
    /// form for matching (the engine's encoding).
    Records,
    /// Written by stores of projection format 5 and before (source key → golden id of
    /// its entity); empty since. Kept so that a rebuild empties it and a redo record of
    /// an older version still names its trees by their position.
    Membership,
    /// golden id (u64 BE) → golden record.
    Entities,
    /// merged golden id (u64 BE) → surviving golden id (u64 BE).
    Redirects,
    /// seq of a batch's last log entry (u64 BE) → the changes it publishes on the golden topic.
    Outbox,
    /// `topic\0partition` → next offset to consume (i64 BE).
    Offsets,
    /// Written by stores of projection format 5 and before (source key → the record
    /// prepared for matching); empty since, kept as `Membership` is.
    Features,
    /// task id (u64 BE) → steward review task.
    Reviews,
    /// `record\0other record` → seq of the steward decision: pairs of source records a
    /// steward declared different people (both orders), never matched together again.
    Apart,
    /// Facts about the store itself, such as the encoding version of its projections.
    Meta,
    /// `email:…` or `phone:…` (normalised) → what was declared about that contact point.
    ContactPoints,
    /// source key → seq of the erasure of the person whose record it was.
    Erased,
}

impl TreeName {
    /// Every tree, in a fixed order.
    pub const ALL: [TreeName; 15] = [
        TreeName::Log,
        TreeName::Dedup,
        TreeName::Keys,
        TreeName::Records,
        TreeName::Membership,
        TreeName::Entities,
        TreeName::Redirects,
        TreeName::Outbox,
        TreeName::Offsets,
        TreeName::Features,
        TreeName::Reviews,
        TreeName::Apart,
        TreeName::Meta,
        TreeName::ContactPoints,
        TreeName::Erased,
    ];

    /// The projections: everything a replay of the log must reproduce exactly.
    pub const PROJECTIONS: [TreeName; 10] = [
        TreeName::Dedup,
        TreeName::Records,
        TreeName::Membership,
        TreeName::Entities,
        TreeName::Redirects,
        TreeName::Features,
        TreeName::Reviews,
        TreeName::Apart,
        TreeName::ContactPoints,
        TreeName::Erased,
    ];

    /// The trees a batch mostly asks for keys they do not hold (a new event's dedup key,
    /// a new record's key and data key, whether it was erased): a filter in memory of
    /// the keys each may hold answers those reads without sled ([`Store::build_filters`]).
    pub const FILTERED: [TreeName; 4] = [
        TreeName::Dedup,
        TreeName::Keys,
        TreeName::Records,
        TreeName::Erased,
    ];

    /// The tree's name in sled.
    pub fn as_str(self) -> &'static str {
        match self {
            TreeName::Log => "log",
            TreeName::Dedup => "dedup",
            TreeName::Keys => "keys",
            TreeName::Records => "records",
            TreeName::Membership => "membership",
            TreeName::Entities => "entities",
            TreeName::Redirects => "redirects",
            TreeName::Outbox => "outbox",
            TreeName::Offsets => "offsets",
            TreeName::Features => "features",
            TreeName::Reviews => "reviews",
            TreeName::Apart => "apart",
            TreeName::Meta => "meta",
            TreeName::ContactPoints => "contact_points",
            TreeName::Erased => "erased",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// sled's page cache unless configured otherwise.
pub const DEFAULT_CACHE_BYTES: u64 = 256 * 1024 * 1024;

/// The sled database and its trees. Cloning shares it.
///
/// A store on disk lives in a generation directory: its root itself (as first created),
/// or `gen-N` named by the root's `CURRENT` file. [`Store::purge`] copies the live data
/// into the next generation and deletes the previous one, so that what was deleted (an
/// erased person) is gone from every file, not only unreachable in sled's log-structured
/// segments.
#[derive(Clone)]
pub struct Store {
    shared: Arc<Shared>,
}

struct Shared {
    current: RwLock<Arc<Generation>>,
    /// Held shared by every write, exclusively by a purge while it copies: a write landing
    /// in the old generation after its tree was copied would be lost.
    writes: RwLock<()>,
    /// Held shared by readers of several keys ([`Store::read_gate`]), exclusively while a
    /// batch's writes land (written through or in a transaction): such readers never see
    /// part of a batch.
    reads: RwLock<()>,
    /// Every log sequence number below this was written by a batch; every one below
    /// `durable_before` was also flushed to disk since ([`Store::durable_before`]).
    written_before: AtomicU64,
    durable_before: AtomicU64,
    /// `None` for a temporary store.
    root: Option<PathBuf>,
    cache_bytes: u64,
    /// By tree position: the filter of the keys a tree in [`TreeName::FILTERED`] may hold.
    filters: Vec<Option<Mutex<KeyFilter>>>,
}

struct Generation {
    db: sled::Db,
    trees: Vec<sled::Tree>,
    /// The generation's directory name under the root; `None` when it is the root itself.
    name: Option<String>,
}

/// What a purge did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PurgeReport {
    /// Bytes of the store's files before and after.
    pub bytes_before: u64,
    pub bytes_after: u64,
    pub keys_copied: u64,
}

/// The file naming the current generation directory.
const CURRENT: &str = "CURRENT";
/// What sled keeps in its directory.
fn is_sled_file(name: &str) -> bool {
    matches!(name, "db" | "conf" | "blobs") || name.starts_with("snap.")
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (or creates) the store in a directory. sled releases its file lock from a
    /// background thread once the last handle is dropped, so a reopen in the same process
    /// may find it still held for a moment: the lock is retried for up to two seconds.
    pub fn open(dir: &Path) -> Result<Self> {
        Self::open_with_cache(dir, DEFAULT_CACHE_BYTES)
    }

    /// Opens the store with a page cache of `cache_bytes` (sled's own, besides the OS's).
    pub fn open_with_cache(dir: &Path, cache_bytes: u64) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(sled::Error::from)?;
        let name = match std::fs::read_to_string(dir.join(CURRENT)) {
            Ok(text) => Some(text.trim().to_owned()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(sled::Error::from(e).into()),
        };
        // A purge that stopped half-way leaves a generation nobody names: remove it.
        remove_stale_generations(dir, name.as_deref())?;
        let path = match &name {
            Some(name) => dir.join(name),
            None => dir.to_path_buf(),
        };
        // Opening a missing generation would silently start an empty store.
        if name.is_some() && !path.join("db").exists() {
            return Err(StoreError::Corrupt {
                tree: "CURRENT",
                reason: format!(
                    "{} names {}, which holds no store",
                    dir.join(CURRENT).display(),
                    path.display()
                ),
            });
        }
        let generation = Generation::open_retrying(&path, cache_bytes, name)?;
        generation.replay_redo()?;
        let store = Store {
            shared: Arc::new(Shared {
                current: RwLock::new(Arc::new(generation)),
                writes: RwLock::new(()),
                reads: RwLock::new(()),
                written_before: AtomicU64::new(0),
                durable_before: AtomicU64::new(0),
                root: Some(dir.to_path_buf()),
                cache_bytes,
                filters: new_filters(),
            }),
        };
        store.count_all_durable()?;
        Ok(store)
    }

    /// A store that lives only as long as the process, for replays and tests.
    pub fn temporary() -> Result<Self> {
        let generation = Generation::from_config(
            sled::Config::new()
                .temporary(true)
                .cache_capacity(DEFAULT_CACHE_BYTES),
            None,
        )?;
        let store = Store {
            shared: Arc::new(Shared {
                current: RwLock::new(Arc::new(generation)),
                writes: RwLock::new(()),
                reads: RwLock::new(()),
                written_before: AtomicU64::new(0),
                durable_before: AtomicU64::new(0),
                root: None,
                cache_bytes: DEFAULT_CACHE_BYTES,
                filters: new_filters(),
            }),
        };
        store.count_all_durable()?;
        Ok(store)
    }

    fn generation(&self) -> Arc<Generation> {
        self.shared
            .current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// The raw sled tree (a shared handle); for scans by readers and for verification.
    /// Keys are written through batches or [`Store::refill`] only: the filters of
    /// [`TreeName::FILTERED`] learn them there.
    pub fn tree(&self, name: TreeName) -> sled::Tree {
        self.generation().trees[name.index()].clone()
    }

    /// Replaces a tree's content with another store's, key by key (not atomically).
    pub fn refill(&self, name: TreeName, from: &Store) -> Result<()> {
        let live = self.tree(name);
        live.clear()?;
        for item in from.tree(name).iter() {
            let (key, value) = item?;
            self.learn(name, &key);
            live.insert(key, value)?;
        }
        Ok(())
    }

    fn filter(&self, tree: TreeName) -> Option<std::sync::MutexGuard<'_, KeyFilter>> {
        self.shared.filters[tree.index()].as_ref().map(|filter| {
            filter
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
        })
    }

    /// Notes that a tree may hold a key from now on.
    fn learn(&self, tree: TreeName, key: &[u8]) {
        if let Some(mut filter) = self.filter(tree) {
            filter.insert(filter::hash(key));
        }
    }

    /// Whether the tree surely holds no such key, by its filter (built, and filtered).
    fn surely_absent(&self, tree: TreeName, key: &[u8]) -> bool {
        self.filter(tree)
            .is_some_and(|filter| filter.surely_absent(filter::hash(key)))
    }

    /// Builds the filters of the keys the trees in [`TreeName::FILTERED`] but `except`
    /// may hold, from one scan of each tree's keys (a tree's filter is built once; later
    /// calls scan nothing for it). Until then batches read every key from sled. Batches
    /// may be written meanwhile: the filters learn what they put from the moment the
    /// store opens. A caller that reads a tree's keys anyway builds its filter with
    /// [`Store::build_filter`] instead.
    pub fn build_filters(&self, except: &[TreeName]) -> Result<()> {
        for tree in TreeName::FILTERED {
            if except.contains(&tree) || !self.filter(tree).is_some_and(|f| f.is_recording()) {
                continue;
            }
            let stored = self
                .tree(tree)
                .iter()
                .keys()
                .map(|key| key.map(|key| filter::hash(&key)))
                .collect::<Result<Vec<u64>, _>>()?;
            self.build_filter(tree, &stored);
        }
        Ok(())
    }

    /// Builds a tree's filter from the hashes ([`filter_hash`]) of every key the tree
    /// held when it was read, after the store opened (nothing if it is built already).
    pub fn build_filter(&self, tree: TreeName, stored: &[u64]) {
        if let Some(mut filter) = self.filter(tree) {
            filter.build(stored);
        }
    }

    /// What a store holds when it opens is on disk.
    fn count_all_durable(&self) -> Result<()> {
        let next = self.next_seq()?;
        self.shared.written_before.store(next, Ordering::SeqCst);
        self.shared.durable_before.store(next, Ordering::SeqCst);
        Ok(())
    }

    /// Every log sequence number below this belongs to a batch flushed to disk: what a
    /// crash cannot take back. The change feed publishes only such batches' changes, so
    /// that nothing a restart would decide differently is ever published.
    pub fn durable_before(&self) -> u64 {
        self.shared.durable_before.load(Ordering::SeqCst)
    }

    /// Flushes a generation and counts what was written before the flush as durable.
    fn flush_generation(&self, generation: &Generation) -> Result<()> {
        let written = self.shared.written_before.load(Ordering::SeqCst);
        generation.db.flush()?;
        self.shared
            .durable_before
            .fetch_max(written, Ordering::SeqCst);
        Ok(())
    }

    /// Keeps batches being written through ([`Sealed::write_through`]) out while it is
    /// held, so that a reader of several keys sees each batch whole or not at all (a
    /// single `get` needs no gate). Taken again on a thread that holds it, it only counts.
    /// A thread holding it must not wait for a batch to be written: that batch waits for
    /// the gate.
    pub fn read_gate(&self) -> ReadGate<'_> {
        let id = Arc::as_ptr(&self.shared) as usize;
        let held = READ_GATES.with(|gates| {
            let mut gates = gates.borrow_mut();
            let held = gates.contains(&id);
            gates.push(id);
            held
        });
        let guard = (!held).then(|| {
            self.shared
                .reads
                .read()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
        });
        ReadGate { id, _guard: guard }
    }

    /// Whether this thread holds the read gate of this store.
    pub fn holds_read_gate(&self) -> bool {
        let id = Arc::as_ptr(&self.shared) as usize;
        READ_GATES.with(|gates| gates.borrow().contains(&id))
    }

    /// Copies the live data into a fresh generation directory, switches to it and deletes
    /// the previous one: afterwards no file of the store holds a deleted value. The caller
    /// must hold off writers (the engine calls it under its writer lock); readers go on,
    /// on the old generation until the switch.
    pub fn purge(&self) -> Result<PurgeReport> {
        let Some(root) = &self.shared.root else {
            return Ok(PurgeReport {
                bytes_before: 0,
                bytes_after: 0,
                keys_copied: 0,
            });
        };
        let _writes = self
            .shared
            .writes
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let old = self.generation();
        old.db.flush()?;
        let bytes_before = dir_size(&generation_path(root, old.name.as_deref()));
        let number = old
            .name
            .as_deref()
            .and_then(|n| n.strip_prefix("gen-"))
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0)
            + 1;
        let name = format!("gen-{number}");
        let path = root.join(&name);
        if path.exists() {
            std::fs::remove_dir_all(&path).map_err(sled::Error::from)?;
        }
        let fresh = Generation::open_retrying(&path, self.shared.cache_bytes, Some(name.clone()))?;
        let mut keys_copied = 0u64;
        for tree in TreeName::ALL {
            let mut batch = sled::Batch::default();
            let mut pending = 0;
            for item in old.trees[tree.index()].iter() {
                let (key, value) = item?;
                batch.insert(key, value);
                pending += 1;
                keys_copied += 1;
                if pending == 10_000 {
                    fresh.trees[tree.index()].apply_batch(std::mem::take(&mut batch))?;
                    pending = 0;
                }
            }
            fresh.trees[tree.index()].apply_batch(batch)?;
        }
        fresh.db.flush()?;
        let io = |e: std::io::Error| StoreError::Sled(sled::Error::from(e));
        let temp = root.join(format!("{CURRENT}.tmp"));
        {
            use std::io::Write;
            let mut file = std::fs::File::create(&temp).map_err(io)?;
            file.write_all(name.as_bytes()).map_err(io)?;
            file.sync_all().map_err(io)?;
        }
        std::fs::rename(&temp, root.join(CURRENT)).map_err(io)?;
        std::fs::File::open(root)
            .and_then(|d| d.sync_all())
            .map_err(io)?;
        let old_name = old.name.clone();
        *self
            .shared
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(fresh);
        // Readers that started on the old generation finish before its files go.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while Arc::strong_count(&old) > 1 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        drop(old);
        remove_generation(root, old_name.as_deref())?;
        Ok(PurgeReport {
            bytes_before,
            bytes_after: dir_size(&root.join(&name)),
            keys_copied,
        })
    }

    /// The directory holding the current generation's files, if the store is on disk.
    pub fn current_dir(&self) -> Option<PathBuf> {
        let root = self.shared.root.as_ref()?;
        Some(generation_path(root, self.generation().name.as_deref()))
    }

    /// Reads one raw value.
    pub fn get(&self, tree: TreeName, key: &[u8]) -> Result<Option<sled::IVec>> {
        Ok(self.tree(tree).get(key)?)
    }

    /// Reads and decodes one JSON value.
    pub fn get_json<T: DeserializeOwned>(&self, tree: TreeName, key: &[u8]) -> Result<Option<T>> {
        self.get(tree, key)?.map(|v| decode(tree, &v)).transpose()
    }

    /// Reads and decodes one value written in the binary encoding.
    pub fn get_bin<T: DeserializeOwned>(&self, tree: TreeName, key: &[u8]) -> Result<Option<T>> {
        self.get(tree, key)?
            .map(|v| decode_bin(tree, &v))
            .transpose()
    }

    /// The sequence number the next log entry will get.
    pub fn next_seq(&self) -> Result<u64> {
        Ok(match self.tree(TreeName::Log).last()? {
            Some((key, _)) => seq_from_key(&key)? + 1,
            None => 1,
        })
    }

    /// Every log entry in order, as its sequence number and encoded bytes.
    pub fn log(&self) -> impl Iterator<Item = Result<(u64, Vec<u8>)>> + '_ {
        self.tree(TreeName::Log).iter().flat_map(|item| {
            let segment = item
                .map_err(StoreError::from)
                .and_then(|(key, value)| Ok((seq_from_key(&key)?, split_segment(&value)?)));
            let entries: Vec<Result<(u64, Vec<u8>)>> = match segment {
                Ok((last, entries)) => {
                    let first = last + 1 - entries.len() as u64;
                    (first..).zip(entries).map(Ok).collect()
                }
                Err(e) => vec![Err(e)],
            };
            entries
        })
    }

    /// One log entry by its sequence number: the segment holding it is the first whose
    /// key (its last sequence number) is not below `seq`.
    pub fn log_entry(&self, seq: u64) -> Result<Option<Vec<u8>>> {
        let Some(item) = self.tree(TreeName::Log).range(seq_key(seq)..).next() else {
            return Ok(None);
        };
        let (key, value) = item?;
        let last = seq_from_key(&key)?;
        let mut entries = split_segment(&value)?;
        let first = last + 1 - entries.len() as u64;
        Ok(seq
            .checked_sub(first)
            .and_then(|i| usize::try_from(i).ok())
            .filter(|&i| i < entries.len())
            .map(|i| entries.swap_remove(i)))
    }

    /// Number of log entries.
    pub fn log_len(&self) -> Result<u64> {
        self.log().try_fold(0, |n, entry| entry.map(|_| n + 1))
    }

    /// Starts a batch of writes that read their own writes until committed.
    pub fn begin(&self) -> Result<Batch<'_>> {
        let next_seq = self.next_seq()?;
        Ok(Batch {
            store: self,
            generation: self.generation(),
            writes: vec![Pending::default(); TreeName::ALL.len()],
            before: None,
            first_seq: next_seq,
            next_seq,
            log: Vec::new(),
        })
    }

    /// Starts a batch that follows `before`, which may still be committing: the new batch
    /// reads `before`'s writes as if they were committed. It must be committed after
    /// `before`, and only if `before` committed.
    pub fn begin_after(&self, before: &Sealed) -> Batch<'_> {
        Batch {
            store: self,
            generation: before.generation.clone(),
            writes: vec![Pending::default(); TreeName::ALL.len()],
            before: (!before.is_empty()).then(|| before.writes.clone()),
            first_seq: before.next_seq,
            next_seq: before.next_seq,
            log: Vec::new(),
        }
    }

    /// Makes everything committed so far durable on disk.
    pub async fn flush(&self) -> Result<()> {
        let written = self.shared.written_before.load(Ordering::SeqCst);
        self.generation().db.flush_async().await?;
        self.shared
            .durable_before
            .fetch_max(written, Ordering::SeqCst);
        Ok(())
    }

    /// Makes everything committed so far durable on disk, blocking.
    pub fn flush_blocking(&self) -> Result<()> {
        self.flush_generation(&self.generation())
    }

    /// Removes keys from one tree atomically (housekeeping outside a batch: the outbox).
    pub fn remove_keys(&self, tree: TreeName, keys: &[Vec<u8>]) -> Result<()> {
        let mut batch = sled::Batch::default();
        for key in keys {
            batch.remove(key.as_slice());
        }
        let _writes = self
            .shared
            .writes
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        self.tree(tree).apply_batch(batch)?;
        Ok(())
    }
}

thread_local! {
    /// The stores whose read gate this thread holds, once per holding.
    static READ_GATES: std::cell::RefCell<Vec<usize>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A held read gate ([`Store::read_gate`]).
pub struct ReadGate<'s> {
    id: usize,
    _guard: Option<std::sync::RwLockReadGuard<'s, ()>>,
}

impl Drop for ReadGate<'_> {
    fn drop(&mut self) {
        READ_GATES.with(|gates| {
            let mut gates = gates.borrow_mut();
            if let Some(at) = gates.iter().rposition(|&id| id == self.id) {
                gates.remove(at);
            }
        });
    }
}

/// A batch's writes per tree: a value, or `None` for a removal.
type Writes = Vec<Pending>;

/// One tree's pending writes: key → value, `None` for a removal. Looked up by hash, as
/// the batch reads its own writes for every event; put in key order where a prefix scan
/// needs it, and for writing them, once per batch (in the order the sorted map they
/// replace wrote them in).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Pending(HashMap<Vec<u8>, Option<Vec<u8>>, foldhash::fast::RandomState>);

impl Pending {
    fn get(&self, key: &[u8]) -> Option<&Option<Vec<u8>>> {
        self.0.get(key)
    }

    fn insert(&mut self, key: Vec<u8>, value: Option<Vec<u8>>) {
        self.0.insert(key, value);
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    /// The writes under a prefix, in key order.
    fn under(&self, prefix: &[u8]) -> Sorted<'_> {
        let mut writes: Vec<_> = self
            .0
            .iter()
            .filter(|(key, _)| key.starts_with(prefix))
            .collect();
        writes.sort_unstable_by(|a, b| a.0.cmp(b.0));
        writes
    }

    /// Every write, in key order.
    fn sorted(&self) -> Sorted<'_> {
        self.under(&[])
    }
}

/// One tree's pending writes in key order.
type Sorted<'a> = Vec<(&'a Vec<u8>, &'a Option<Vec<u8>>)>;

/// Every tree's pending writes in key order, sorted once for all that writes them.
fn in_order(writes: &Writes) -> Vec<Sorted<'_>> {
    writes.iter().map(Pending::sorted).collect()
}

/// Pending writes of one batch, applied to sled in one transaction by [`Batch::commit`].
pub struct Batch<'s> {
    store: &'s Store,
    /// The generation the batch reads and commits to (a purge waits for writers).
    generation: Arc<Generation>,
    writes: Writes,
    /// The writes of the batch this one follows, while they may not be committed yet.
    before: Option<Arc<Writes>>,
    first_seq: u64,
    next_seq: u64,
    /// Log entries appended, encoded as one segment when the batch is written.
    log: Vec<LogRecord>,
}

/// A log entry waiting to be encoded: by the thread that writes the batch, which is not
/// always the one that applies it ([`Sealed::write_through`]).
type LogRecord = Box<dyn Fn() -> Result<Vec<u8>> + Send + Sync>;

impl Batch<'_> {
    /// The store the batch writes to.
    pub fn store(&self) -> &Store {
        self.store
    }

    /// The value this batch or the one it follows wrote under a key, if either did.
    fn pending(&self, tree: TreeName, key: &[u8]) -> Option<&Option<Vec<u8>>> {
        self.writes[tree.index()].get(key).or_else(|| {
            self.before
                .as_ref()
                .and_then(|before| before[tree.index()].get(key))
        })
    }

    /// The value stored under a key, before this batch and the one it follows: not
    /// looked for in sled when the tree's filter tells it holds no such key.
    fn stored(&self, tree: TreeName, key: &[u8]) -> Result<Option<sled::IVec>> {
        if self.store.surely_absent(tree, key) {
            return Ok(None);
        }
        Ok(self.generation.trees[tree.index()].get(key)?)
    }

    /// Reads a value as the batch would leave it.
    pub fn get(&self, tree: TreeName, key: &[u8]) -> Result<Option<Vec<u8>>> {
        match self.pending(tree, key) {
            Some(pending) => Ok(pending.clone()),
            None => Ok(self.stored(tree, key)?.map(|v| v.to_vec())),
        }
    }

    /// Reads a value as the batch would leave it, handing its bytes to `decode` without
    /// copying them.
    pub fn get_with<T, E: From<StoreError>>(
        &self,
        tree: TreeName,
        key: &[u8],
        decode: impl FnOnce(&[u8]) -> std::result::Result<T, E>,
    ) -> std::result::Result<Option<T>, E> {
        match self.pending(tree, key) {
            Some(Some(bytes)) => decode(bytes).map(Some),
            Some(None) => Ok(None),
            None => match self.stored(tree, key)? {
                Some(bytes) => decode(&bytes).map(Some),
                None => Ok(None),
            },
        }
    }

    /// The value this batch itself put under a key, if it did.
    pub fn put_value(&self, tree: TreeName, key: &[u8]) -> Option<&[u8]> {
        self.writes[tree.index()]
            .get(key)
            .and_then(|value| value.as_deref())
    }

    /// Reads and decodes a JSON value as the batch would leave it.
    pub fn get_json<T: DeserializeOwned>(&self, tree: TreeName, key: &[u8]) -> Result<Option<T>> {
        self.get(tree, key)?.map(|v| decode(tree, &v)).transpose()
    }

    /// Reads and decodes a binary value as the batch would leave it.
    pub fn get_bin<T: DeserializeOwned>(&self, tree: TreeName, key: &[u8]) -> Result<Option<T>> {
        match self.pending(tree, key) {
            Some(Some(bytes)) => decode_bin(tree, bytes).map(Some),
            Some(None) => Ok(None),
            None => self
                .stored(tree, key)?
                .map(|v| decode_bin(tree, &v))
                .transpose(),
        }
    }

    /// Writes a raw value.
    pub fn put(&mut self, tree: TreeName, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        let key = key.into();
        self.store.learn(tree, &key);
        self.writes[tree.index()].insert(key, Some(value.into()));
    }

    /// Writes a value in the compact binary encoding (for values read on the hot path).
    pub fn put_bin<T: Serialize>(
        &mut self,
        tree: TreeName,
        key: impl Into<Vec<u8>>,
        value: &T,
    ) -> Result<()> {
        let bytes = encode_bin(tree, value)?;
        self.put(tree, key, bytes);
        Ok(())
    }

    /// Writes a value as JSON.
    pub fn put_json<T: Serialize>(
        &mut self,
        tree: TreeName,
        key: impl Into<Vec<u8>>,
        value: &T,
    ) -> Result<()> {
        let bytes = encode(tree, value)?;
        self.put(tree, key, bytes);
        Ok(())
    }

    /// Removes a key.
    pub fn delete(&mut self, tree: TreeName, key: impl Into<Vec<u8>>) {
        self.writes[tree.index()].insert(key.into(), None);
    }

    /// Every key under a prefix, as the batch would leave the tree, in key order.
    pub fn scan_prefix(&self, tree: TreeName, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.scan_prefix_limit(tree, prefix, usize::MAX)
    }

    /// At most `limit` keys under a prefix, as the batch would leave the tree, in key order.
    pub fn scan_prefix_limit(
        &self,
        tree: TreeName,
        prefix: &[u8],
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        // Oldest first: the batch this one follows, then this one.
        let layers: Vec<Sorted<'_>> = self
            .before
            .iter()
            .map(|before| &before[tree.index()])
            .chain([&self.writes[tree.index()]])
            .map(|pending| pending.under(prefix))
            .collect();
        let in_range = || layers.iter().flatten().copied();
        // Pending deletions may hide stored keys: read enough to still fill the limit.
        let hidden = in_range().filter(|(_, v)| v.is_none()).count();
        let mut merged: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        for item in self.generation.trees[tree.index()]
            .scan_prefix(prefix)
            .take(limit.saturating_add(hidden))
        {
            let (k, v) = item?;
            merged.insert(k.to_vec(), v.to_vec());
        }
        for (k, v) in in_range() {
            match v {
                Some(v) => merged.insert(k.clone(), v.clone()),
                None => merged.remove(k),
            };
        }
        Ok(merged.into_iter().take(limit).collect())
    }

    /// The sequence number the next appended log entry gets.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Appends an entry, as JSON, to the log and returns its sequence number. The entry
    /// is encoded when the batch is written; an entry that cannot be encoded fails that
    /// write. For this crate's tests: the hub's entries are binary, encoded by their own
    /// types ([`Batch::append_log_with`]).
    #[cfg(test)]
    pub fn append_log<T: Serialize + Send + Sync + 'static>(&mut self, entry: T) -> u64 {
        self.append_log_with(move || serde_json::to_vec(&entry).map_err(|e| e.to_string()))
    }

    /// Appends an entry that `encode` encodes, when the batch is written, and returns its
    /// sequence number; an entry that cannot be encoded fails that write.
    pub fn append_log_with(
        &mut self,
        encode: impl Fn() -> std::result::Result<Vec<u8>, String> + Send + Sync + 'static,
    ) -> u64 {
        let seq = self.next_seq;
        self.log.push(Box::new(move || {
            encode().map_err(|reason| StoreError::Encode {
                tree: TreeName::Log.as_str(),
                reason,
            })
        }));
        self.next_seq += 1;
        seq
    }

    /// Applies every write in one sled transaction: all or nothing.
    pub fn commit(self) -> Result<()> {
        self.seal().commit()
    }

    /// Closes the batch to further writes, to be committed by [`Sealed::commit`], perhaps
    /// on another thread while the next batch (see [`Store::begin_after`]) is worked on.
    pub fn seal(mut self) -> Sealed {
        debug_assert_eq!(self.next_seq - self.first_seq, self.log.len() as u64);
        if !self.log.is_empty() {
            // Lands with the projections: the log below it is applied.
            self.writes[TreeName::Meta.index()]
                .insert(APPLIED.to_vec(), Some(self.next_seq.to_be_bytes().to_vec()));
        }
        Sealed {
            store: self.store.clone(),
            generation: self.generation,
            writes: Arc::new(self.writes),
            log: self.log,
            first_seq: self.first_seq,
            next_seq: self.next_seq,
        }
    }
}

/// The writes of a batch closed by [`Batch::seal`], not yet committed.
pub struct Sealed {
    store: Store,
    generation: Arc<Generation>,
    /// Every write but the log's (read by the batch that follows while this one is
    /// written).
    writes: Arc<Writes>,
    /// The batch's log entries, the last numbered `next_seq - 1`.
    log: Vec<LogRecord>,
    first_seq: u64,
    next_seq: u64,
}

impl Sealed {
    /// Whether the batch writes anything.
    fn is_empty(&self) -> bool {
        self.log.is_empty() && self.writes.iter().all(Pending::is_empty)
    }

    /// The log segment of the batch's entries, with its key, if it has entries.
    fn log_segment(&self) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
        if self.log.is_empty() {
            return Ok(None);
        }
        let entries = self
            .log
            .iter()
            .map(|encode| encode())
            .collect::<Result<Vec<_>>>()?;
        Ok(Some((
            seq_key(self.next_seq - 1).to_vec(),
            join_segment(&entries),
        )))
    }

    /// Keeps purges off while the batch is written. A batch begun before a purge switched
    /// generations must not be written to the old one.
    fn hold_off_purges(&self) -> Result<std::sync::RwLockReadGuard<'_, ()>> {
        let writes = self
            .store
            .shared
            .writes
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if !Arc::ptr_eq(&self.generation, &self.store.generation()) {
            return Err(StoreError::Sled(sled::Error::Unsupported(
                "the store was purged while this batch was open; apply it again".into(),
            )));
        }
        Ok(writes)
    }

    /// Keeps readers of several keys out while the batch's writes land.
    fn hold_off_readers(&self) -> Result<std::sync::RwLockWriteGuard<'_, ()>> {
        if self.store.holds_read_gate() {
            // It would wait for itself.
            return Err(StoreError::Sled(sled::Error::Unsupported(
                "a batch cannot be written by a thread holding the store's read gate".into(),
            )));
        }
        Ok(self
            .store
            .shared
            .reads
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()))
    }

    /// Applies every write in one sled transaction: all or nothing, for readers too
    /// (those holding the read gate see all of it or none).
    pub fn commit(&self) -> Result<()> {
        if self.is_empty() {
            return Ok(());
        }
        let segment = self.log_segment()?;
        let _writes = self.hold_off_purges()?;
        let _readers = self.hold_off_readers()?;
        let log = TreeName::Log.index();
        let touched: Vec<usize> = (0..self.writes.len())
            .filter(|&i| !self.writes[i].is_empty() || (i == log && segment.is_some()))
            .collect();
        let trees: Vec<&sled::Tree> = touched.iter().map(|&i| &self.generation.trees[i]).collect();
        trees
            .as_slice()
            .transaction(|views| {
                for (view, &i) in views.iter().zip(&touched) {
                    for (key, value) in self.writes[i].sorted() {
                        match value {
                            Some(value) => view.insert(key.as_slice(), value.as_slice())?,
                            None => view.remove(key.as_slice())?,
                        };
                    }
                    if let (true, Some((key, value))) = (i == log, &segment) {
                        view.insert(key.as_slice(), value.as_slice())?;
                    }
                }
                Ok::<_, sled::transaction::ConflictableTransactionError<()>>(())
            })
            .map_err(|e| match e {
                sled::transaction::TransactionError::Storage(e) => StoreError::Sled(e),
                sled::transaction::TransactionError::Abort(()) => {
                    StoreError::Sled(sled::Error::Unsupported("transaction aborted".into()))
                }
            })?;
        self.written();
        Ok(())
    }

    fn written(&self) {
        self.store
            .shared
            .written_before
            .fetch_max(self.next_seq, Ordering::SeqCst);
    }

    /// Applies the writes key by key rather than in a sled transaction, so that reads on
    /// other threads go on meanwhile (sled's transactions hold a lock every read waits
    /// for). All or nothing after a crash all the same: the log segment and the batch's
    /// own outbox entry are written first, then every other write whole as one redo
    /// record, removed after the last of them. sled recovers a prefix of its log, so a
    /// write that survives a crash implies the redo record does, and the redo record
    /// implies what was written before it. Opening the store finishes a redo record it
    /// finds, and removes a segment or an outbox entry written without one (its key is
    /// past the `applied` mark the projections carry): [`Store::open`]. The redo record
    /// copies neither, the two largest of the batch's writes. Readers holding the read
    /// gate ([`Store::read_gate`]) wait while the writes land; single reads do not.
    pub fn write_through(&self) -> Result<()> {
        if self.is_empty() {
            return Ok(());
        }
        let segment = self.log_segment()?;
        let _writes = self.hold_off_purges()?;
        let _readers = self.hold_off_readers()?;
        if let Some((key, value)) = &segment {
            self.generation.trees[TreeName::Log.index()]
                .insert(key.as_slice(), value.as_slice())?;
        }
        let ahead = |tree: usize, key: &[u8]| self.written_ahead(tree, key);
        let writes = in_order(&self.writes);
        apply_writes(&self.generation, &writes, |tree, key| !ahead(tree, key))?;
        let meta = &self.generation.trees[TreeName::Meta.index()];
        meta.insert(REDO, encode_redo(&writes, ahead))?;
        apply_writes(&self.generation, &writes, ahead)?;
        meta.remove(REDO)?;
        self.written();
        Ok(())
    }

    /// Whether a write is one [`Sealed::write_through`] makes before the redo record: an
    /// entry of the outbox keyed by one of the batch's own sequence numbers (as the log
    /// segment is), which a crash before the redo record leaves past the `applied` mark.
    /// The batch's changes to older entries (an erasure rewrites them) are not.
    fn written_ahead(&self, tree: usize, key: &[u8]) -> bool {
        tree == TreeName::Outbox.index()
            && <[u8; 8]>::try_from(key)
                .is_ok_and(|seq| (self.first_seq..self.next_seq).contains(&u64::from_be_bytes(seq)))
    }

    /// Makes the generation the batch was written to durable on disk (with every batch
    /// written before it).
    pub fn flush(&self) -> Result<()> {
        self.store.flush_generation(&self.generation)
    }
}

/// The key in `Meta` of the redo record of a batch being written through.
const REDO: &[u8] = b"redo";

/// The key in `Meta` of the sequence number (u64 BE) below which every log entry's
/// projections are written: a log segment at or past it was cut off from its redo
/// record by a crash.
const APPLIED: &[u8] = b"applied";

/// A batch's writes as one value: their number (u64 LE), then per write the tree's
/// position in [`TreeName::ALL`], the key's length (u32 LE) and the key, then 1, the
/// value's length and the value, or 0 for a removal; writes for which `left_out(tree,
/// key)` holds are not in it. (Records written before the log segment was kept out of
/// them hold it as one more write, to the log tree.)
fn encode_redo(writes: &[Sorted<'_>], left_out: impl Fn(usize, &[u8]) -> bool) -> Vec<u8> {
    let all: Vec<_> = writes
        .iter()
        .enumerate()
        .flat_map(|(tree, pending)| pending.iter().map(move |(k, v)| (tree, *k, v.as_ref())))
        .filter(|(tree, k, _)| !left_out(*tree, k))
        .collect();
    let size: usize = all
        .iter()
        .map(|(_, k, v)| 10 + k.len() + v.map_or(0, Vec::len))
        .sum();
    let mut out = Vec::with_capacity(8 + size);
    out.extend_from_slice(&(all.len() as u64).to_le_bytes());
    for (tree, key, value) in all {
        out.push(tree as u8);
        out.extend_from_slice(&(key.len() as u32).to_le_bytes());
        out.extend_from_slice(key);
        match value {
            Some(value) => {
                out.push(1);
                out.extend_from_slice(&(value.len() as u32).to_le_bytes());
                out.extend_from_slice(value);
            }
            None => out.push(0),
        }
    }
    out
}

fn decode_redo(bytes: &[u8]) -> Result<Writes> {
    let corrupt = |reason: &str| StoreError::Corrupt {
        tree: "meta",
        reason: format!("redo record: {reason}"),
    };
    let mut writes: Writes = vec![Pending::default(); TreeName::ALL.len()];
    let mut rest = bytes;
    let take = |n: usize, rest: &mut &[u8]| -> Result<Vec<u8>> {
        if rest.len() < n {
            return Err(corrupt("cut short"));
        }
        let (head, tail) = rest.split_at(n);
        *rest = tail;
        Ok(head.to_vec())
    };
    let length =
        |bytes: Vec<u8>| u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
    let count = take(8, &mut rest)?;
    let count = u64::from_le_bytes(count.try_into().map_err(|_| corrupt("no count"))?);
    let mut read = 0u64;
    while !rest.is_empty() {
        read += 1;
        let tree = usize::from(take(1, &mut rest)?[0]);
        if tree >= writes.len() {
            return Err(corrupt("unknown tree"));
        }
        let n = length(take(4, &mut rest)?);
        let key = take(n, &mut rest)?;
        let value = match take(1, &mut rest)?[0] {
            0 => None,
            1 => {
                let n = length(take(4, &mut rest)?);
                Some(take(n, &mut rest)?)
            }
            _ => return Err(corrupt("bad value flag")),
        };
        writes[tree].insert(key, value);
    }
    if read != count {
        return Err(corrupt(&format!("{read} writes of {count}")));
    }
    Ok(writes)
}

/// Applies writes key by key (puts and removals: applying them twice changes nothing).
/// Writes every write but those for which `left_out(tree, key)` holds.
fn apply_writes(
    generation: &Generation,
    writes: &[Sorted<'_>],
    left_out: impl Fn(usize, &[u8]) -> bool,
) -> Result<()> {
    for (at, (tree, pending)) in generation.trees.iter().zip(writes).enumerate() {
        for &(key, value) in pending.iter().filter(|(key, _)| !left_out(at, key)) {
            match value {
                Some(value) => tree.insert(key.as_slice(), value.as_slice())?,
                None => tree.remove(key.as_slice())?,
            };
        }
    }
    Ok(())
}

impl Generation {
    /// Finishes a batch that was being written through when the process stopped.
    fn replay_redo(&self) -> Result<()> {
        let meta = &self.trees[TreeName::Meta.index()];
        if let Some(redo) = meta.get(REDO)? {
            let writes = decode_redo(&redo)?;
            apply_writes(self, &in_order(&writes), |_, _| false)?;
            tracing::warn!(
                writes = writes.iter().map(Pending::len).sum::<usize>(),
                "finished writing a batch the last process stopped in the middle of"
            );
            meta.remove(REDO)?;
            self.db.flush()?;
        }
        self.drop_unapplied_segments()
    }

    /// Removes the log segment and the outbox entry written by a batch that stopped
    /// before its redo record (its events were not applied, so their offsets were not
    /// stored either: they are consumed again). A store from before the `applied` mark
    /// gets one: everything it logged was written with its projections.
    fn drop_unapplied_segments(&self) -> Result<()> {
        let meta = &self.trees[TreeName::Meta.index()];
        let log = &self.trees[TreeName::Log.index()];
        let Some(applied) = meta.get(APPLIED)? else {
            if let Some((key, _)) = log.last()? {
                let next = seq_from_key(&key)? + 1;
                meta.insert(APPLIED, &next.to_be_bytes())?;
            }
            return Ok(());
        };
        let applied: [u8; 8] = applied
            .as_ref()
            .try_into()
            .map_err(|_| StoreError::Corrupt {
                tree: TreeName::Meta.as_str(),
                reason: "the applied mark is not 8 bytes".into(),
            })?;
        let outbox = &self.trees[TreeName::Outbox.index()];
        let unapplied = log.range(applied..).keys().collect::<Result<Vec<_>, _>>()?;
        let unpublishable = outbox
            .range(applied..)
            .keys()
            .collect::<Result<Vec<_>, _>>()?;
        if unapplied.is_empty() && unpublishable.is_empty() {
            return Ok(());
        }
        for key in &unapplied {
            log.remove(key)?;
        }
        for key in &unpublishable {
            outbox.remove(key)?;
        }
        tracing::warn!(
            segments = unapplied.len(),
            outbox_entries = unpublishable.len(),
            "removed the log and changes of a batch the last process stopped before applying"
        );
        self.db.flush()?;
        Ok(())
    }

    /// Opens a generation's sled directory. sled releases its file lock from a background
    /// thread once the last handle is dropped, so a reopen in the same process may find it
    /// still held for a moment: the lock is retried for up to two seconds.
    fn open_retrying(path: &Path, cache_bytes: u64, name: Option<String>) -> Result<Self> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        loop {
            let config = sled::Config::new().path(path).cache_capacity(cache_bytes);
            match Self::from_config(config, name.clone()) {
                Err(StoreError::Sled(sled::Error::Io(e)))
                    if e.to_string().contains("could not acquire lock")
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                opened => return opened,
            }
        }
    }

    fn from_config(config: sled::Config, name: Option<String>) -> Result<Self> {
        let db = config.mode(sled::Mode::HighThroughput).open()?;
        let trees = TreeName::ALL
            .iter()
            .map(|t| db.open_tree(t.as_str()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Generation { db, trees, name })
    }
}

/// The hash a key filter keeps of a key ([`Store::build_filter`]).
pub fn filter_hash(key: &[u8]) -> u64 {
    filter::hash(key)
}

/// An empty filter for each tree in [`TreeName::FILTERED`], by tree position.
fn new_filters() -> Vec<Option<Mutex<KeyFilter>>> {
    TreeName::ALL
        .iter()
        .map(|tree| TreeName::FILTERED.contains(tree).then(Mutex::default))
        .collect()
}

fn generation_path(root: &Path, name: Option<&str>) -> PathBuf {
    match name {
        Some(name) => root.join(name),
        None => root.to_path_buf(),
    }
}

/// Deletes a generation's files: its directory, or sled's files in the root.
fn remove_generation(root: &Path, name: Option<&str>) -> Result<()> {
    let io = |e: std::io::Error| StoreError::Sled(sled::Error::from(e));
    match name {
        Some(name) => std::fs::remove_dir_all(root.join(name)).map_err(io),
        None => {
            for entry in std::fs::read_dir(root).map_err(io)? {
                let entry = entry.map_err(io)?;
                let file_name = entry.file_name().to_string_lossy().into_owned();
                if !is_sled_file(&file_name) {
                    continue;
                }
                if entry.file_type().map_err(io)?.is_dir() {
                    std::fs::remove_dir_all(entry.path()).map_err(io)?;
                } else {
                    std::fs::remove_file(entry.path()).map_err(io)?;
                }
            }
            Ok(())
        }
    }
}

/// Removes generations other than the current one (left by an interrupted purge).
fn remove_stale_generations(root: &Path, current: Option<&str>) -> Result<()> {
    let io = |e: std::io::Error| StoreError::Sled(sled::Error::from(e));
    if current.is_some() {
        remove_generation(root, None)?;
    }
    for entry in std::fs::read_dir(root).map_err(io)? {
        let name = entry
            .map_err(io)?
            .file_name()
            .to_string_lossy()
            .into_owned();
        if name.starts_with("gen-") && Some(name.as_str()) != current {
            remove_generation(root, Some(&name))?;
        }
    }
    Ok(())
}

/// Total size of the files under a directory.
fn dir_size(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .filter_map(|e| e.ok())
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_size(&e.path()),
            _ => e.metadata().map(|m| m.len()).unwrap_or(0),
        })
        .sum()
}

/// First byte of a log segment. A segment holds consecutive entries, each as a 4-byte
/// little-endian length and its JSON; a value starting with `{` is a single entry.
const SEGMENT: u8 = 1;

fn join_segment(entries: &[Vec<u8>]) -> Vec<u8> {
    let size = 1 + entries.iter().map(|e| 4 + e.len()).sum::<usize>();
    let mut out = Vec::with_capacity(size);
    out.push(SEGMENT);
    for entry in entries {
        out.extend_from_slice(&(entry.len() as u32).to_le_bytes());
        out.extend_from_slice(entry);
    }
    out
}

fn split_segment(value: &[u8]) -> Result<Vec<Vec<u8>>> {
    let corrupt = |reason: &str| StoreError::Corrupt {
        tree: TreeName::Log.as_str(),
        reason: reason.to_owned(),
    };
    match value.first() {
        Some(b'{') => return Ok(vec![value.to_vec()]),
        Some(&SEGMENT) => {}
        _ => return Err(corrupt("unknown log segment format")),
    }
    let mut rest = &value[1..];
    let mut entries = Vec::new();
    while !rest.is_empty() {
        let (len, tail) = rest
            .split_first_chunk::<4>()
            .ok_or_else(|| corrupt("truncated entry length"))?;
        let len = u32::from_le_bytes(*len) as usize;
        if tail.len() < len {
            return Err(corrupt("truncated entry"));
        }
        entries.push(tail[..len].to_vec());
        rest = &tail[len..];
    }
    if entries.is_empty() {
        return Err(corrupt("empty log segment"));
    }
    Ok(entries)
}

/// The log key of a sequence number.
pub fn seq_key(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

/// The sequence number of a log key.
pub fn seq_from_key(key: &[u8]) -> Result<u64> {
    key.try_into()
        .map(u64::from_be_bytes)
        .map_err(|_| StoreError::Corrupt {
            tree: TreeName::Log.as_str(),
            reason: format!("key of {} bytes is not a sequence number", key.len()),
        })
}

/// Decodes a JSON value read from a tree.
pub fn decode<T: DeserializeOwned>(tree: TreeName, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        tree: tree.as_str(),
        reason: e.to_string(),
    })
}

/// Decodes a value written by [`Batch::put_bin`].
pub fn decode_bin<T: DeserializeOwned>(tree: TreeName, bytes: &[u8]) -> Result<T> {
    postcard::from_bytes(bytes).map_err(|e| StoreError::Corrupt {
        tree: tree.as_str(),
        reason: e.to_string(),
    })
}

/// The compact binary encoding of a value.
pub fn encode_bin<T: Serialize>(tree: TreeName, value: &T) -> Result<Vec<u8>> {
    // Room for a typical record up front (a golden record of the synthetic people takes
    // about 440 bytes), rather than growing the buffer field by field.
    postcard::to_extend(value, Vec::with_capacity(512)).map_err(|e| StoreError::Encode {
        tree: tree.as_str(),
        reason: e.to_string(),
    })
}

/// The compact binary encoding of a value, appended to `out`.
pub fn encode_bin_onto<T: Serialize>(tree: TreeName, value: &T, out: Vec<u8>) -> Result<Vec<u8>> {
    postcard::to_extend(value, out).map_err(|e| StoreError::Encode {
        tree: tree.as_str(),
        reason: e.to_string(),
    })
}

fn encode<T: Serialize>(tree: TreeName, value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(|e| StoreError::Encode {
        tree: tree.as_str(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The log of a store whose entries are JSON strings, as these tests append them.
    fn logged_strings(store: &Store) -> Vec<String> {
        store
            .log()
            .map(|entry| serde_json::from_slice(&entry.unwrap().1).unwrap())
            .collect()
    }

    #[test]
    fn a_batch_cut_short_while_written_through_is_finished_when_the_store_opens() {
        let dir = tempfile::tempdir().unwrap();
        let records = |store: &Store| -> Vec<(Vec<u8>, Vec<u8>)> {
            store
                .tree(TreeName::Records)
                .iter()
                .map(|item| {
                    let (k, v) = item.unwrap();
                    (k.to_vec(), v.to_vec())
                })
                .collect()
        };
        {
            let store = Store::open(dir.path()).unwrap();
            let mut batch = store.begin().unwrap();
            batch.append_log("first");
            batch.put(TreeName::Records, b"a".to_vec(), b"1".to_vec());
            batch.put(TreeName::Records, b"b".to_vec(), b"1".to_vec());
            batch.seal().write_through().unwrap();
            assert!(store.get(TreeName::Meta, REDO).unwrap().is_none());
            assert_eq!(records(&store).len(), 2);

            let mut batch = store.begin().unwrap();
            batch.append_log("cut short");
            batch.put(TreeName::Records, b"a".to_vec(), b"2".to_vec());
            batch.delete(TreeName::Records, b"b".to_vec());
            batch.put(TreeName::Records, b"c".to_vec(), b"2".to_vec());
            let sealed = batch.seal();
            // The process dies after the log segment, the redo record and the first write.
            let (key, segment) = sealed.log_segment().unwrap().unwrap();
            store.tree(TreeName::Log).insert(key, segment).unwrap();
            let meta = store.tree(TreeName::Meta);
            meta.insert(REDO, encode_redo(&in_order(&sealed.writes), |_, _| false))
                .unwrap();
            store
                .tree(TreeName::Records)
                .insert(b"a", b"2".to_vec())
                .unwrap();
            store.flush_blocking().unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(
            records(&store),
            vec![
                (b"a".to_vec(), b"2".to_vec()),
                (b"c".to_vec(), b"2".to_vec())
            ]
        );
        let log = logged_strings(&store);
        assert_eq!(log, ["first", "cut short"]);
        assert!(store.get(TreeName::Meta, REDO).unwrap().is_none());
        assert_eq!(store.next_seq().unwrap(), 3);
    }

    #[test]
    fn a_log_segment_written_without_its_redo_record_is_removed_when_the_store_opens() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            let mut batch = store.begin().unwrap();
            batch.append_log("first");
            batch.put(TreeName::Records, b"a".to_vec(), b"1".to_vec());
            batch.seal().write_through().unwrap();

            let mut batch = store.begin().unwrap();
            batch.append_log("cut off");
            batch.append_log("cut off too");
            batch.put(TreeName::Records, b"a".to_vec(), b"2".to_vec());
            let sealed = batch.seal();
            // The process dies after the log segment, before the redo record.
            let (key, segment) = sealed.log_segment().unwrap().unwrap();
            store.tree(TreeName::Log).insert(key, segment).unwrap();
            store.flush_blocking().unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        let log = logged_strings(&store);
        assert_eq!(log, ["first"]);
        assert_eq!(store.next_seq().unwrap(), 2);
        assert_eq!(
            store
                .get(TreeName::Records, b"a")
                .unwrap()
                .unwrap()
                .as_ref(),
            b"1"
        );
        // The numbers are given out again, and what is written then stays.
        let mut batch = store.begin().unwrap();
        batch.append_log("again");
        batch.seal().write_through().unwrap();
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.log().count(), 2);
        assert_eq!(store.next_seq().unwrap(), 3);
    }

    #[test]
    fn an_outbox_entry_written_without_its_redo_record_is_removed_when_the_store_opens() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = |store: &Store| -> Vec<Vec<u8>> {
            store
                .tree(TreeName::Outbox)
                .iter()
                .map(|item| item.unwrap().0.to_vec())
                .collect()
        };
        let first = {
            let store = Store::open(dir.path()).unwrap();
            let mut batch = store.begin().unwrap();
            let first = batch.append_log("first");
            batch.put(TreeName::Outbox, first.to_be_bytes(), b"changes 1".to_vec());
            let sealed = batch.seal();
            assert!(sealed.written_ahead(TreeName::Outbox.index(), &first.to_be_bytes()));
            // The entry is written ahead of the redo record, so the record leaves it out.
            let redo = decode_redo(&encode_redo(&in_order(&sealed.writes), |tree, key| {
                sealed.written_ahead(tree, key)
            }))
            .unwrap();
            assert!(redo[TreeName::Outbox.index()].is_empty());
            sealed.write_through().unwrap();

            let mut batch = store.begin().unwrap();
            batch.append_log("cut off");
            let seq = batch.append_log("cut off too");
            batch.put(TreeName::Outbox, seq.to_be_bytes(), b"changes 2".to_vec());
            // An older entry rewritten (as an erasure does) is not the batch's own.
            batch.put(
                TreeName::Outbox,
                first.to_be_bytes(),
                b"changes 1, erased".to_vec(),
            );
            batch.put(TreeName::Records, b"a".to_vec(), b"2".to_vec());
            let sealed = batch.seal();
            assert!(!sealed.written_ahead(TreeName::Outbox.index(), &first.to_be_bytes()));
            // The process dies after the log segment and the outbox entry, before the
            // redo record.
            let (key, segment) = sealed.log_segment().unwrap().unwrap();
            store.tree(TreeName::Log).insert(key, segment).unwrap();
            store
                .tree(TreeName::Outbox)
                .insert(seq.to_be_bytes(), b"changes 2".to_vec())
                .unwrap();
            store.flush_blocking().unwrap();
            assert_eq!(outbox(&store).len(), 2);
            first
        };
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(outbox(&store), [first.to_be_bytes().to_vec()]);
        assert_eq!(
            store
                .get(TreeName::Outbox, &first.to_be_bytes())
                .unwrap()
                .unwrap()
                .as_ref(),
            b"changes 1"
        );
        assert_eq!(logged_strings(&store), ["first"]);
        assert!(store.get(TreeName::Records, b"a").unwrap().is_none());
    }

    #[test]
    fn a_store_logged_before_the_applied_mark_keeps_its_whole_log() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            let mut batch = store.begin().unwrap();
            batch.append_log("first");
            batch.append_log("second");
            batch.seal().commit().unwrap();
            store.tree(TreeName::Meta).remove(APPLIED).unwrap();
            store.flush_blocking().unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.log().count(), 2);
        assert_eq!(
            store
                .get(TreeName::Meta, APPLIED)
                .unwrap()
                .unwrap()
                .as_ref(),
            3u64.to_be_bytes()
        );
    }

    #[test]
    fn a_reader_holding_the_gate_sees_a_batch_written_through_whole_or_not_at_all() {
        let store = Store::temporary().unwrap();
        let keys: Vec<Vec<u8>> = (0..2_000u32).map(|i| i.to_be_bytes().to_vec()).collect();
        let stop = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|scope| {
            let reader = scope.spawn(|| {
                let mut seen = std::collections::BTreeSet::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let _gate = store.read_gate();
                    // Taken again on the same thread, it only counts.
                    let _again = store.read_gate();
                    let first = store.get(TreeName::Records, &keys[0]).unwrap();
                    let last = store.get(TreeName::Records, &keys[keys.len() - 1]).unwrap();
                    assert_eq!(first, last, "a reader saw part of a batch");
                    seen.insert(first.map(|v| v.to_vec()));
                }
                seen
            });
            for round in 0..20u8 {
                let mut batch = store.begin().unwrap();
                for key in &keys {
                    batch.put(TreeName::Records, key.clone(), vec![round]);
                }
                if round % 2 == 0 {
                    batch.seal().write_through().unwrap();
                } else {
                    batch.seal().commit().unwrap();
                }
            }
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            assert!(!reader.join().unwrap().is_empty());
        });
        // Writing from a thread that holds the gate would wait for itself: refused.
        let _gate = store.read_gate();
        assert!(store.holds_read_gate());
        let mut batch = store.begin().unwrap();
        batch.put(TreeName::Records, b"x".to_vec(), b"1".to_vec());
        let sealed = batch.seal();
        assert!(sealed.write_through().is_err());
        assert!(sealed.commit().is_err());
        drop(_gate);
        assert!(!store.holds_read_gate());
        sealed.write_through().unwrap();
    }

    #[test]
    fn a_redo_record_reads_back_as_written_and_a_cut_one_is_refused() {
        let mut writes: Writes = vec![Pending::default(); TreeName::ALL.len()];
        writes[TreeName::Records.index()].insert(b"k".to_vec(), Some(vec![0, 1, 2]));
        writes[TreeName::Records.index()].insert(b"gone".to_vec(), None);
        writes[TreeName::Erased.index()].insert(Vec::new(), Some(Vec::new()));
        let bytes = encode_redo(&in_order(&writes), |_, _| false);
        assert_eq!(decode_redo(&bytes).unwrap(), writes);
        for cut in 0..bytes.len() {
            assert!(decode_redo(&bytes[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn a_batch_finds_every_key_stored_before_or_while_the_filters_were_built() {
        let dir = tempfile::tempdir().unwrap();
        fn keys(prefix: &str) -> impl Iterator<Item = Vec<u8>> + '_ {
            (0..200).map(move |i| format!("{prefix}{i}").into_bytes())
        }
        {
            let store = Store::open(dir.path()).unwrap();
            let mut batch = store.begin().unwrap();
            batch.append_log("before the store opened");
            for key in keys("opened/") {
                batch.put(TreeName::Dedup, key, b"1".to_vec());
            }
            batch.commit().unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        // Put before the build, written through after it, while the next batch reads.
        let mut first = store.begin().unwrap();
        first.append_log("first");
        for key in keys("first/") {
            first.put(TreeName::Dedup, key, b"2".to_vec());
        }
        let first = first.seal();
        store.build_filters(&[]).unwrap();
        let mut second = store.begin_after(&first);
        first.write_through().unwrap();
        second.append_log("second");
        for key in keys("second/") {
            second.put(TreeName::Dedup, key, b"3".to_vec());
        }
        second.seal().write_through().unwrap();
        let third = store.begin().unwrap();
        for key in keys("opened/").chain(keys("first/")).chain(keys("second/")) {
            assert!(third.get(TreeName::Dedup, &key).unwrap().is_some());
        }
        let missing = keys("never/")
            .filter(|key| third.get(TreeName::Dedup, key).unwrap().is_none())
            .count();
        assert_eq!(missing, 200);

        // The filter answers for keys no batch wrote, without sled: a key written around
        // the batches (which only a test does) is not seen in a filtered tree.
        store.tree(TreeName::Dedup).insert(b"around", b"4").unwrap();
        store
            .tree(TreeName::Entities)
            .insert(b"around", b"4")
            .unwrap();
        let fourth = store.begin().unwrap();
        assert_eq!(fourth.get(TreeName::Dedup, b"around").unwrap(), None);
        assert!(fourth.get(TreeName::Entities, b"around").unwrap().is_some());
        // Refilling learns the keys it copies.
        let other = Store::temporary().unwrap();
        other
            .tree(TreeName::Dedup)
            .insert(b"refilled", b"5")
            .unwrap();
        store.refill(TreeName::Dedup, &other).unwrap();
        let fifth = store.begin().unwrap();
        assert!(fifth.get(TreeName::Dedup, b"refilled").unwrap().is_some());
        assert_eq!(fifth.get(TreeName::Dedup, b"opened/1").unwrap(), None);
    }

    #[test]
    fn a_batch_begun_after_a_sealed_one_reads_its_writes_before_they_land() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut batch = store.begin().unwrap();
        batch.append_log("stored");
        batch.put(TreeName::Records, b"a".to_vec(), b"1".to_vec());
        batch.put(TreeName::Records, b"b".to_vec(), b"1".to_vec());
        batch.put(TreeName::Records, b"c".to_vec(), b"1".to_vec());
        batch.commit().unwrap();

        let mut first = store.begin().unwrap();
        assert_eq!(first.append_log("first"), 2);
        first.put(TreeName::Records, b"a".to_vec(), b"2".to_vec());
        first.delete(TreeName::Records, b"b".to_vec());
        first.put(TreeName::Records, b"d".to_vec(), b"2".to_vec());
        let first = first.seal();

        let mut second = store.begin_after(&first);
        assert_eq!(second.next_seq(), 3, "numbered after the sealed batch");
        assert_eq!(
            second.get(TreeName::Records, b"a").unwrap(),
            Some(b"2".to_vec())
        );
        assert_eq!(second.get(TreeName::Records, b"b").unwrap(), None);
        assert_eq!(
            second.get(TreeName::Records, b"c").unwrap(),
            Some(b"1".to_vec())
        );
        second.put(TreeName::Records, b"c".to_vec(), b"3".to_vec());
        second.put(TreeName::Records, b"b".to_vec(), b"3".to_vec());
        second.delete(TreeName::Records, b"d".to_vec());
        let scan = |batch: &Batch<'_>, limit| {
            batch
                .scan_prefix_limit(TreeName::Records, b"", limit)
                .unwrap()
                .into_iter()
                .map(|(k, v)| (String::from_utf8(k).unwrap(), String::from_utf8(v).unwrap()))
                .collect::<Vec<_>>()
        };
        let want = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            scan(&second, 10),
            want(&[("a", "2"), ("b", "3"), ("c", "3")])
        );
        assert_eq!(scan(&second, 2), want(&[("a", "2"), ("b", "3")]));
        assert_eq!(second.append_log("second"), 3);
        // The first commits on another thread; the second reads the same either way.
        let committing = std::thread::spawn(move || first.commit());
        assert_eq!(
            scan(&second, 10),
            want(&[("a", "2"), ("b", "3"), ("c", "3")])
        );
        committing.join().unwrap().unwrap();
        assert_eq!(
            scan(&second, 10),
            want(&[("a", "2"), ("b", "3"), ("c", "3")])
        );
        second.commit().unwrap();

        let stored: Vec<_> = store
            .tree(TreeName::Records)
            .iter()
            .map(|item| {
                let (k, v) = item.unwrap();
                (
                    String::from_utf8(k.to_vec()).unwrap(),
                    String::from_utf8(v.to_vec()).unwrap(),
                )
            })
            .collect();
        assert_eq!(stored, want(&[("a", "2"), ("b", "3"), ("c", "3")]));
        let log = logged_strings(&store);
        assert_eq!(log, ["stored", "first", "second"]);
        assert_eq!(store.next_seq().unwrap(), 4);
    }

    #[test]
    fn batch_reads_its_own_writes_and_commits_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut batch = store.begin().unwrap();
        assert_eq!(batch.append_log("first"), 1);
        assert_eq!(batch.append_log("second"), 2);
        batch.put(TreeName::Features, b"email:a\0web/1".to_vec(), Vec::new());
        batch.put(TreeName::Features, b"email:a\0web/2".to_vec(), Vec::new());
        batch.put(TreeName::Features, b"email:b\0web/3".to_vec(), Vec::new());
        assert_eq!(
            batch
                .scan_prefix(TreeName::Features, b"email:a\0")
                .unwrap()
                .len(),
            2
        );
        assert!(
            store
                .get(TreeName::Features, b"email:a\0web/1")
                .unwrap()
                .is_none()
        );
        batch.commit().unwrap();

        let mut batch = store.begin().unwrap();
        assert_eq!(batch.next_seq(), 3);
        batch.delete(TreeName::Features, b"email:a\0web/1".to_vec());
        let left = batch.scan_prefix(TreeName::Features, b"email:a\0").unwrap();
        assert_eq!(left, vec![(b"email:a\0web/2".to_vec(), Vec::new())]);
        batch.put(TreeName::Features, b"email:a\0web/0".to_vec(), Vec::new());
        let first = batch
            .scan_prefix_limit(TreeName::Features, b"email:a\0", 1)
            .unwrap();
        assert_eq!(first, vec![(b"email:a\0web/0".to_vec(), Vec::new())]);
        drop(batch);
        assert_eq!(
            store.tree(TreeName::Features).len(),
            3,
            "a dropped batch writes nothing"
        );
    }

    /// Whether any file under `dir` contains `needle`.
    fn any_file_contains(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
        let mut found = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                found.extend(any_file_contains(&path, needle));
            } else if std::fs::read(&path)
                .unwrap()
                .windows(needle.len())
                .any(|w| w == needle)
            {
                found.push(path);
            }
        }
        found
    }

    #[test]
    fn purge_leaves_no_deleted_value_in_any_file_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let secret = b"zebulon.quaxley@example.org";
        {
            let store = Store::open(dir.path()).unwrap();
            let mut batch = store.begin().unwrap();
            batch.put(TreeName::Records, b"web/1".to_vec(), secret.to_vec());
            batch.put(TreeName::Records, b"web/2".to_vec(), b"kept".to_vec());
            batch.append_log("entry");
            batch.commit().unwrap();
            store.flush_blocking().unwrap();
            let mut batch = store.begin().unwrap();
            batch.delete(TreeName::Records, b"web/1".to_vec());
            batch.commit().unwrap();
            store.flush_blocking().unwrap();
            assert!(
                !any_file_contains(dir.path(), secret).is_empty(),
                "sled keeps deleted values in its segments until a purge"
            );
            let report = store.purge().unwrap();
            assert!(report.keys_copied >= 2);
            assert_eq!(any_file_contains(dir.path(), secret), Vec::<PathBuf>::new());
            // The store goes on in its new generation.
            let mut batch = store.begin().unwrap();
            assert_eq!(batch.append_log("next"), 2);
            batch.commit().unwrap();
            store.purge().unwrap();
            store.flush_blocking().unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(
            store.get(TreeName::Records, b"web/2").unwrap().unwrap(),
            b"kept"
        );
        assert_eq!(store.next_seq().unwrap(), 3);
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(names.contains(&"gen-2".to_owned()), "{names:?}");
        assert!(
            !names.iter().any(|n| n == "gen-1" || n == "db"),
            "{names:?}"
        );
        drop(store);
        // A generation gone missing is an error, not a silently empty store.
        std::fs::rename(dir.path().join("gen-2"), dir.path().join("elsewhere")).unwrap();
        let err = Store::open(dir.path()).unwrap_err().to_string();
        assert!(err.contains("gen-2"), "{err}");
    }

    #[test]
    fn reopened_store_continues_the_sequence() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            let mut batch = store.begin().unwrap();
            batch.append_log(1);
            batch.commit().unwrap();
            store.flush_blocking().unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.next_seq().unwrap(), 2);
    }

    #[test]
    fn a_log_entry_that_cannot_be_encoded_fails_its_batch_whole() {
        // JSON has no map keys other than strings.
        let unencodable: BTreeMap<(u8, u8), u8> = BTreeMap::from([((1, 2), 3)]);
        let store = Store::temporary().unwrap();
        for write_through in [false, true] {
            let mut batch = store.begin().unwrap();
            batch.append_log("fine");
            batch.append_log(unencodable.clone());
            batch.put(TreeName::Records, b"a".to_vec(), b"1".to_vec());
            let sealed = batch.seal();
            let written = if write_through {
                sealed.write_through()
            } else {
                sealed.commit()
            };
            assert!(
                matches!(written, Err(StoreError::Encode { tree: "log", .. })),
                "{written:?}"
            );
            assert!(store.tree(TreeName::Log).is_empty());
            assert!(store.tree(TreeName::Records).is_empty());
            assert!(store.get(TreeName::Meta, REDO).unwrap().is_none());
        }
    }

    #[test]
    fn the_log_reads_back_entry_by_entry_across_segments() {
        let store = Store::temporary().unwrap();
        let mut batch = store.begin().unwrap();
        batch.append_log("a");
        batch.append_log("b");
        batch.commit().unwrap();
        let mut batch = store.begin().unwrap();
        assert_eq!(batch.append_log("c"), 3);
        batch.commit().unwrap();
        assert_eq!(store.tree(TreeName::Log).len(), 2, "one segment per batch");
        // An entry written alone, as JSON, reads back too.
        store
            .tree(TreeName::Log)
            .insert(seq_key(4), br#"{"entry":"d"}"#.to_vec())
            .unwrap();
        let entries: Vec<(u64, Vec<u8>)> = store.log().map(Result::unwrap).collect();
        let expected: Vec<(u64, Vec<u8>)> = vec![
            (1, br#""a""#.to_vec()),
            (2, br#""b""#.to_vec()),
            (3, br#""c""#.to_vec()),
            (4, br#"{"entry":"d"}"#.to_vec()),
        ];
        assert_eq!(entries, expected);
        assert_eq!(store.log_len().unwrap(), 4);
        assert_eq!(store.next_seq().unwrap(), 5);
        store
            .tree(TreeName::Log)
            .insert(seq_key(9), vec![SEGMENT, 9, 0, 0, 0, b'x'])
            .unwrap();
        assert!(
            store.log().any(|e| e.is_err()),
            "a truncated segment is an error"
        );
    }
}
