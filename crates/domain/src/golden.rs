use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::event::{Channel, ConsentStatus, Evidence};
use crate::{GoldenId, SourceKey, Timestamp};

/// One surviving value of a golden record and the source record it came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GoldenValue {
    pub value: String,
    pub source: SourceKey,
    pub time: Timestamp,
}

/// The entity's consent for one purpose × channel: the most restrictive of its records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GoldenConsent {
    pub purpose: String,
    pub channel: Channel,
    pub status: ConsentStatus,
    pub legal_basis: Option<String>,
    pub expires_at: Option<String>,
    /// Where and how the surviving declaration was captured.
    #[serde(default)]
    pub evidence: Option<Evidence>,
    pub source: SourceKey,
    pub time: Timestamp,
}

/// The best current view of one customer, computed from its linked source records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GoldenRecord {
    pub id: GoldenId,
    pub attributes: BTreeMap<String, GoldenValue>,
    pub consents: BTreeMap<String, GoldenConsent>,
    pub preferences: BTreeMap<String, GoldenValue>,
    /// The linked source records, sorted.
    pub members: Vec<SourceKey>,
    /// Ids of entities merged into this one; they redirect here.
    pub merged_ids: Vec<GoldenId>,
    /// Log sequence number of the last change.
    pub version: u64,
    /// Every e-mail address and phone number its active records hold, normalised
    /// (`email:…`, `phone:+…`): what declarations about contact points apply to it.
    #[serde(default)]
    pub contact_points: Vec<String>,
}

/// The kinds of change the hub tells the spokes about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutboundKind {
    /// The full golden record after a change.
    Upserted,
    /// This id was merged into `survivor_id`.
    Merged,
    /// The entity lost its last active source record.
    Deleted,
    /// A steward split a record out of `survivor_id` into this entity (full record).
    Split,
    /// A steward declared this entity a different person from `other_id` (full record).
    KeptApart,
    /// The person was erased: a tombstone (the Kafka value is empty).
    Erased,
}

/// One message of the change feed `cmdm.golden.v1`, keyed by golden id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboundChange {
    #[serde(rename = "type")]
    pub kind: OutboundKind,
    pub golden_id: GoldenId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub survivor_id: Option<GoldenId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<GoldenRecord>,
    /// For `kept_apart`: the entity it is kept apart from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub other_id: Option<GoldenId>,
    /// Log sequence number of the change, increasing per golden id.
    pub seq: u64,
}
