//! The gRPC API: conversion between the domain and `proto/cmdm/v1`, and the services.
//! Errors become gRPC statuses in exactly one place, [`ApiError::into_status`].

use std::sync::Arc;

use cmdm_domain::{GoldenId, GoldenRecord, SourceKey};
use cmdm_engine::{Engine, EngineError};
use thiserror::Error;
use tonic::{Request, Response, Status};
use tracing::error;

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
    #[error(transparent)]
    Engine(#[from] EngineError),
}

impl ApiError {
    /// The one mapping from errors to gRPC statuses.
    pub fn into_status(self) -> Status {
        match self {
            ApiError::InvalidArgument { .. } => Status::invalid_argument(self.to_string()),
            ApiError::NotFound(what) => Status::not_found(what),
            ApiError::Engine(e) => {
                error!(error = %e, "request failed inside the engine");
                Status::internal("the hub could not read its store; see the hub log")
            }
        }
    }
}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Self {
        e.into_status()
    }
}

/// The `cmdm.v1.CustomerHub` service.
#[derive(Clone)]
pub struct HubService {
    engine: Arc<Engine>,
}

impl HubService {
    /// A service reading through the engine.
    pub fn new(engine: Arc<Engine>) -> Self {
        HubService { engine }
    }

    /// The service wrapped for a tonic router.
    pub fn into_server(self) -> CustomerHubServer<Self> {
        CustomerHubServer::new(self)
    }
}

#[tonic::async_trait]
impl pb::customer_hub_server::CustomerHub for HubService {
    async fn get_golden_record(
        &self,
        request: Request<pb::GetGoldenRecordRequest>,
    ) -> Result<Response<pb::GetGoldenRecordResponse>, Status> {
        let raw = request.into_inner().golden_id;
        let id: GoldenId = raw.trim().parse().map_err(|e: cmdm_domain::DomainError| {
            ApiError::InvalidArgument {
                field: "golden_id",
                reason: e.to_string(),
            }
        })?;
        let found = self
            .engine
            .golden(id)
            .map_err(ApiError::from)?
            .ok_or_else(|| ApiError::NotFound(format!("no golden record {id}")))?;
        Ok(Response::new(pb::GetGoldenRecordResponse {
            record: Some(to_proto(&found.record)),
            redirected_from: found
                .redirected_from
                .map(|i| i.to_string())
                .unwrap_or_default(),
        }))
    }

    async fn lookup_by_source_key(
        &self,
        request: Request<pb::LookupBySourceKeyRequest>,
    ) -> Result<Response<pb::LookupBySourceKeyResponse>, Status> {
        let request = request.into_inner();
        let key = SourceKey::new(request.source.trim(), request.subject.trim()).map_err(|e| {
            let field = if e.to_string().contains("subject") {
                "subject"
            } else {
                "source"
            };
            ApiError::InvalidArgument {
                field,
                reason: e.to_string(),
            }
        })?;
        let record = self
            .engine
            .lookup(&key)
            .map_err(ApiError::from)?
            .ok_or_else(|| {
                ApiError::NotFound(format!("no golden record holds source record {key}"))
            })?;
        Ok(Response::new(pb::LookupBySourceKeyResponse {
            record: Some(to_proto(&record)),
        }))
    }
}

fn key_to_proto(key: &SourceKey) -> pb::SourceKey {
    pb::SourceKey {
        source: key.source.clone(),
        subject: key.subject.clone(),
    }
}

fn value_to_proto(value: &cmdm_domain::GoldenValue) -> pb::GoldenValue {
    pb::GoldenValue {
        value: value.value.clone(),
        source: Some(key_to_proto(&value.source)),
        time: value.time.to_rfc3339(),
    }
}

/// The wire form of a golden record.
pub fn to_proto(record: &GoldenRecord) -> pb::GoldenRecord {
    pb::GoldenRecord {
        golden_id: record.id.to_string(),
        attributes: record
            .attributes
            .iter()
            .map(|(k, v)| (k.clone(), value_to_proto(v)))
            .collect(),
        consents: record
            .consents
            .iter()
            .map(|(k, c)| {
                let status = match c.status {
                    cmdm_domain::ConsentStatus::Granted => "granted",
                    cmdm_domain::ConsentStatus::Denied => "denied",
                    cmdm_domain::ConsentStatus::Withdrawn => "withdrawn",
                };
                let consent = pb::Consent {
                    purpose: c.purpose.clone(),
                    channel: c.channel.as_str().to_owned(),
                    status: status.to_owned(),
                    legal_basis: c.legal_basis.clone().unwrap_or_default(),
                    expires_at: c.expires_at.clone().unwrap_or_default(),
                    source: Some(key_to_proto(&c.source)),
                    time: c.time.to_rfc3339(),
                };
                (k.clone(), consent)
            })
            .collect(),
        preferences: record
            .preferences
            .iter()
            .map(|(k, v)| (k.clone(), value_to_proto(v)))
            .collect(),
        members: record.members.iter().map(key_to_proto).collect(),
        merged_ids: record.merged_ids.iter().map(ToString::to_string).collect(),
        version: record.version,
    }
}
