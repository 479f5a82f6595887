//! The matching core: normalise, block, decide, survive. Pure code, no I/O: the engine
//! hands it records and candidates and stores what it decides.

pub mod exact;
pub mod normalise;
pub mod survive;

use std::collections::BTreeMap;

use cmdm_domain::{GoldenId, MatchExplanation, SourceKey, SourceRecord};

pub use exact::ExactMatcher;
pub use survive::{Survivorship, survive};

/// A blocking key such as `email:ann@example.org`: records sharing one are candidates.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BlockKey(pub String);

/// A record found through a shared blocking key, with its current entity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub record: SourceKey,
    pub entity: GoldenId,
    /// The blocking keys it shares with the record being matched.
    pub shared: Vec<BlockKey>,
}

/// The entities a record belongs with, each with why. Empty means a new entity.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MatchOutcome {
    pub entities: BTreeMap<GoldenId, MatchExplanation>,
}

/// The matcher interface the engine calls; implementations are pure and deterministic.
pub trait Matcher: Send + Sync {
    /// The blocking keys of a record; empty for a record with nothing to block on.
    fn block_keys(&self, record: &SourceRecord) -> Vec<BlockKey>;

    /// Which candidate entities the record matches.
    fn decide(&self, record: &SourceRecord, candidates: &[Candidate]) -> MatchOutcome;
}
