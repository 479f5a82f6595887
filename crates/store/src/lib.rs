//! The hub's storage on sled: one tree per concern behind a small API. All writes of a
//! batch go through a [`Batch`] and land in one sled transaction, so the log, the
//! projections, the outbox and the consumed offsets never disagree after a crash.

pub mod crypto;

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;
use serde::de::DeserializeOwned;
use sled::Transactional;
use thiserror::Error;

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
    /// source key → source record.
    Records,
    /// source key → golden id (u64 BE) of its entity.
    Membership,
    /// golden id (u64 BE) → golden record.
    Entities,
    /// merged golden id (u64 BE) → surviving golden id (u64 BE).
    Redirects,
    /// seq of a batch's last log entry (u64 BE) → the changes it publishes on the golden topic.
    Outbox,
    /// `topic\0partition` → next offset to consume (i64 BE).
    Offsets,
    /// source key → the record prepared for matching (normalised values), binary.
    Features,
    /// task id (u64 BE) → steward review task.
    Reviews,
    /// `record\0other record` → seq of the steward decision: pairs of source records a
    /// steward declared different people (both orders), never matched together again.
    Apart,
    /// Facts about the store itself, such as the encoding version of its projections.
    Meta,
}

impl TreeName {
    /// Every tree, in a fixed order.
    pub const ALL: [TreeName; 13] = [
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
    ];

    /// The projections: everything a replay of the log must reproduce exactly.
    pub const PROJECTIONS: [TreeName; 8] = [
        TreeName::Dedup,
        TreeName::Records,
        TreeName::Membership,
        TreeName::Entities,
        TreeName::Redirects,
        TreeName::Features,
        TreeName::Reviews,
        TreeName::Apart,
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
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// sled's page cache unless configured otherwise.
pub const DEFAULT_CACHE_BYTES: u64 = 256 * 1024 * 1024;

/// The sled database and its trees.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    trees: Vec<sled::Tree>,
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
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        loop {
            match Self::from_config(sled::Config::new().path(dir).cache_capacity(cache_bytes)) {
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

    /// A store that lives only as long as the process, for replays and tests.
    pub fn temporary() -> Result<Self> {
        Self::from_config(
            sled::Config::new()
                .temporary(true)
                .cache_capacity(DEFAULT_CACHE_BYTES),
        )
    }

    fn from_config(config: sled::Config) -> Result<Self> {
        let db = config.mode(sled::Mode::HighThroughput).open()?;
        let trees = TreeName::ALL
            .iter()
            .map(|t| db.open_tree(t.as_str()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Store { db, trees })
    }

    /// The raw sled tree; for scans by readers and for verification.
    pub fn tree(&self, name: TreeName) -> &sled::Tree {
        &self.trees[name.index()]
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
            writes: vec![BTreeMap::new(); TreeName::ALL.len()],
            first_seq: next_seq,
            next_seq,
            log: Vec::new(),
        })
    }

    /// Makes everything committed so far durable on disk.
    pub async fn flush(&self) -> Result<()> {
        self.db.flush_async().await?;
        Ok(())
    }

    /// Makes everything committed so far durable on disk, blocking.
    pub fn flush_blocking(&self) -> Result<()> {
        self.db.flush()?;
        Ok(())
    }

    /// Removes keys from one tree atomically (housekeeping outside a batch: the outbox).
    pub fn remove_keys(&self, tree: TreeName, keys: &[Vec<u8>]) -> Result<()> {
        let mut batch = sled::Batch::default();
        for key in keys {
            batch.remove(key.as_slice());
        }
        self.tree(tree).apply_batch(batch)?;
        Ok(())
    }
}

/// Pending writes of one batch, applied to sled in one transaction by [`Batch::commit`].
pub struct Batch<'s> {
    store: &'s Store,
    writes: Vec<BTreeMap<Vec<u8>, Option<Vec<u8>>>>,
    first_seq: u64,
    next_seq: u64,
    /// Log entries appended, encoded: written as one segment on commit.
    log: Vec<Vec<u8>>,
}

impl Batch<'_> {
    /// The store the batch writes to.
    pub fn store(&self) -> &Store {
        self.store
    }

    /// Reads a value as the batch would leave it.
    pub fn get(&self, tree: TreeName, key: &[u8]) -> Result<Option<Vec<u8>>> {
        match self.writes[tree.index()].get(key) {
            Some(pending) => Ok(pending.clone()),
            None => Ok(self.store.get(tree, key)?.map(|v| v.to_vec())),
        }
    }

    /// Reads and decodes a JSON value as the batch would leave it.
    pub fn get_json<T: DeserializeOwned>(&self, tree: TreeName, key: &[u8]) -> Result<Option<T>> {
        self.get(tree, key)?.map(|v| decode(tree, &v)).transpose()
    }

    /// Reads and decodes a binary value as the batch would leave it.
    pub fn get_bin<T: DeserializeOwned>(&self, tree: TreeName, key: &[u8]) -> Result<Option<T>> {
        let pending = self.writes[tree.index()].get(key);
        match pending {
            Some(Some(bytes)) => decode_bin(tree, bytes).map(Some),
            Some(None) => Ok(None),
            None => self.store.get_bin(tree, key),
        }
    }

    /// Writes a raw value.
    pub fn put(&mut self, tree: TreeName, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.writes[tree.index()].insert(key.into(), Some(value.into()));
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
        let pending = &self.writes[tree.index()];
        let in_range = || {
            pending
                .range(prefix.to_vec()..)
                .take_while(|(k, _)| k.starts_with(prefix))
        };
        // Pending deletions may hide stored keys: read enough to still fill the limit.
        let hidden = in_range().filter(|(_, v)| v.is_none()).count();
        let mut merged: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        for item in self
            .store
            .tree(tree)
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

    /// Appends an entry to the log and returns its sequence number.
    pub fn append_log<T: Serialize>(&mut self, entry: &T) -> Result<u64> {
        let seq = self.next_seq;
        self.log.push(encode(TreeName::Log, entry)?);
        self.next_seq += 1;
        Ok(seq)
    }

    /// Whether the batch writes anything.
    pub fn is_empty(&self) -> bool {
        self.log.is_empty() && self.writes.iter().all(BTreeMap::is_empty)
    }

    /// Applies every write in one sled transaction: all or nothing.
    pub fn commit(mut self) -> Result<()> {
        if self.is_empty() {
            return Ok(());
        }
        if !self.log.is_empty() {
            debug_assert_eq!(self.next_seq - self.first_seq, self.log.len() as u64);
            let segment = join_segment(&self.log);
            self.put(TreeName::Log, seq_key(self.next_seq - 1), segment);
        }
        let touched: Vec<usize> = (0..self.writes.len())
            .filter(|&i| !self.writes[i].is_empty())
            .collect();
        let trees: Vec<&sled::Tree> = touched.iter().map(|&i| &self.store.trees[i]).collect();
        trees
            .as_slice()
            .transaction(|views| {
                for (view, &i) in views.iter().zip(&touched) {
                    for (key, value) in &self.writes[i] {
                        match value {
                            Some(value) => view.insert(key.as_slice(), value.as_slice())?,
                            None => view.remove(key.as_slice())?,
                        };
                    }
                }
                Ok::<_, sled::transaction::ConflictableTransactionError<()>>(())
            })
            .map_err(|e| match e {
                sled::transaction::TransactionError::Storage(e) => StoreError::Sled(e),
                sled::transaction::TransactionError::Abort(()) => {
                    StoreError::Sled(sled::Error::Unsupported("transaction aborted".into()))
                }
            })
    }
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
    postcard::to_stdvec(value).map_err(|e| StoreError::Encode {
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

    #[test]
    fn batch_reads_its_own_writes_and_commits_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut batch = store.begin().unwrap();
        assert_eq!(batch.append_log(&"first").unwrap(), 1);
        assert_eq!(batch.append_log(&"second").unwrap(), 2);
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

    #[test]
    fn reopened_store_continues_the_sequence() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            let mut batch = store.begin().unwrap();
            batch.append_log(&1).unwrap();
            batch.commit().unwrap();
            store.flush_blocking().unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.next_seq().unwrap(), 2);
    }

    #[test]
    fn the_log_reads_back_entry_by_entry_across_segments() {
        let store = Store::temporary().unwrap();
        let mut batch = store.begin().unwrap();
        batch.append_log(&"a").unwrap();
        batch.append_log(&"b").unwrap();
        batch.commit().unwrap();
        let mut batch = store.begin().unwrap();
        assert_eq!(batch.append_log(&"c").unwrap(), 3);
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
