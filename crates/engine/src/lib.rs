//! The write path: each batch of spoke events is logged, projected, matched and given
//! its outbox entries and consumed offsets in one storage transaction. Replay uses the
//! same projection code, so a rebuild reproduces the live projections exactly.

mod contact;
mod engine;
pub mod held;
mod index;
mod keys;
mod outbox;
mod privacy;
mod projector;
mod reads;
pub mod rebuild;
mod steward;

use cmdm_store::StoreError;
use thiserror::Error;

pub use contact::{ConsentReport, ContactTarget};
pub use engine::{BatchReport, Engine, EngineConfig, Lookup, OutboxEntry, SourceOffset};
pub use privacy::{AfterErasure, ErasureReport, SubjectExport, finish_pending_purge};
pub use reads::{AsOf, HistoryEntry, PairExplanation, RecordExplanation, SearchHit, SearchQuery};
pub use steward::{StewardAction, StewardOutcome, StewardRequest, TaskAnswer};

/// Errors of the engine.
#[derive(Debug, Error)]
pub enum EngineError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot encode: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("inconsistent state: {0}")]
    Inconsistent(String),
    /// What was asked for does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The request contradicts the current state (a task already resolved, a record
    /// alone in its entity, …); nothing was changed.
    #[error("{0}")]
    Refused(String),
}

/// Result alias of this crate.
pub type Result<T, E = EngineError> = std::result::Result<T, E>;

/// The hash map of the engine's in-memory structures (the match index, a batch's
/// working set): keyed by source keys, golden ids and hashes, hashed with foldhash
/// rather than SipHash, still seeded at random per map.
pub(crate) type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
/// A set with the match index's hashing.
pub(crate) type FastSet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;

#[cfg(test)]
mod consent_tests;
#[cfg(test)]
mod tests;

/// Appends a decision to a batch's log, in its stored form ([`cmdm_domain::Decision::to_stored`],
/// encoded when the batch is written), and returns its sequence number.
pub(crate) fn log_decision(
    batch: &mut cmdm_store::Batch<'_>,
    decision: cmdm_domain::Decision,
) -> u64 {
    batch.append_log_with(move || decision.to_stored())
}

/// A log entry as the store keeps it ([`LogEntry::from_stored`]).
pub(crate) fn decode_log(bytes: &[u8]) -> Result<cmdm_domain::LogEntry> {
    cmdm_domain::LogEntry::from_stored(bytes).map_err(|reason| {
        EngineError::Store(StoreError::Corrupt {
            tree: cmdm_store::TreeName::Log.as_str(),
            reason,
        })
    })
}
