//! The vocabulary of the customer master data hub: inbound spoke events, source records,
//! golden records and the hub's own decisions. Pure data and rules, no I/O.

pub mod consent;
pub mod decision;
pub mod encoding;
pub mod error;
pub mod event;
pub mod golden;
pub mod ids;
pub mod record;
pub mod review;
pub mod time;

pub use consent::{
    ContactDecision, ContactFacts, ContactPointState, ContactPolicy, ContactQuestion,
    ContactReason, DeclaredConsent, FrequencyCap, QuietHours, decide_contact,
};
pub use decision::{Decision, FieldWeight, LogEntry, LoggedEvent, MatchExplanation, StewardNote};
pub use error::DomainError;
pub use event::{
    Channel, ConsentChange, ConsentStatus, ContactRecorded, EventType, Evidence, InboundEvent,
    Payload, PreferenceChange, ProfilePatch,
};
pub use golden::{GoldenRecord, GoldenValue, OutboundChange, OutboundKind};
pub use ids::{GoldenId, SourceKey};
pub use record::{SourceRecord, Stamp, Stamped};
pub use review::{Resolution, ReviewStatus, ReviewTask};
pub use time::Timestamp;
