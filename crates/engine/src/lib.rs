//! The write path: each batch of spoke events is logged, projected, matched and given
//! its outbox entries and consumed offsets in one storage transaction. Replay uses the
//! same projection code, so a rebuild reproduces the live projections exactly.

mod engine;
mod index;
mod projector;
pub mod rebuild;

use cmdm_store::StoreError;
use thiserror::Error;

pub use engine::{BatchReport, Engine, EngineConfig, Lookup, OutboxEntry, SourceOffset};

/// Errors of the engine.
#[derive(Debug, Error)]
pub enum EngineError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot encode: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("inconsistent state: {0}")]
    Inconsistent(String),
}

/// Result alias of this crate.
pub type Result<T, E = EngineError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests;
