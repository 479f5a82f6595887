use serde::{Deserialize, Serialize};

use crate::{GoldenId, MatchExplanation, SourceKey};

/// Where a steward review task stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReviewStatus {
    Open,
}

/// A match the hub was not sure about: does `record` belong to `entity`?
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReviewTask {
    /// The sequence number of the decision that opened it.
    pub id: u64,
    pub record: SourceKey,
    /// The entity proposed; if it was merged since, its id redirects to the survivor.
    pub entity: GoldenId,
    pub explanation: MatchExplanation,
    pub status: ReviewStatus,
}
