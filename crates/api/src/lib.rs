//! The gRPC API: conversion between the domain and `proto/cmdm/v1`, the services, and
//! bearer-token roles. Errors become gRPC statuses in exactly one place,
//! [`ApiError::into_status`].

mod auth;
mod convert;
mod service;

use cmdm_engine::EngineError;
use thiserror::Error;
use tonic::Status;
use tracing::error;

pub use auth::{Auth, Identity, Role, TokenConfig, require};
pub use convert::to_proto;
pub use service::HubService;

/// Generated protobuf and gRPC code of `cmdm.v1`.
#[allow(missing_docs, clippy::all)]
pub mod pb {
    tonic::include_proto!("cmdm.v1");

    /// Descriptor set for gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("cmdm_descriptor");
}

pub use pb::customer_hub_client::CustomerHubClient;
pub use pb::customer_hub_server::CustomerHubServer;

/// Why a request failed.
#[derive(Debug, Error)]
pub enum ApiError {
    #[error("invalid argument `{field}`: {reason}")]
    InvalidArgument { field: &'static str, reason: String },
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    PermissionDenied(String),
    #[error(transparent)]
    Engine(#[from] EngineError),
}

impl ApiError {
    /// The one mapping from errors to gRPC statuses.
    pub fn into_status(self) -> Status {
        match self {
            ApiError::InvalidArgument { .. } => Status::invalid_argument(self.to_string()),
            ApiError::NotFound(what) => Status::not_found(what),
            ApiError::Unauthenticated(why) => Status::unauthenticated(why),
            ApiError::PermissionDenied(why) => Status::permission_denied(why),
            ApiError::Engine(EngineError::NotFound(what)) => Status::not_found(what),
            ApiError::Engine(EngineError::Refused(why)) => Status::failed_precondition(why),
            ApiError::Engine(e) => {
                error!(error = %e, "request failed inside the engine");
                Status::internal("the hub could not read its store; see the hub log")
            }
        }
    }

    /// An invalid argument naming the field.
    pub fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        ApiError::InvalidArgument {
            field,
            reason: reason.into(),
        }
    }
}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Self {
        e.into_status()
    }
}
