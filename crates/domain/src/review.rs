use serde::{Deserialize, Serialize};

use crate::{GoldenId, MatchExplanation, SourceKey, Timestamp};

/// Where a steward review task stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReviewStatus {
    Open,
    Resolved,
}

/// How a steward resolved a task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resolution {
    /// `merged`, `kept_apart`, `linked` or `split`.
    pub action: String,
    pub by: String,
    pub comment: String,
    pub at: Timestamp,
    /// The sequence number of the steward's decision.
    pub seq: u64,
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
    /// Set once a steward decided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolution: Option<Resolution>,
}
