//! Bearer tokens and roles. Tokens come from configuration; with none configured the
//! hub runs open (every caller is an anonymous admin), which it allows on loopback only.

use std::collections::HashMap;
use std::sync::Arc;

use serde::Deserialize;
use tonic::service::Interceptor;
use tonic::{Request, Status};

use crate::ApiError;

/// What a caller may do; each role includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Reads and publishes events.
    Spoke,
    /// Also decides review tasks: merge, keep apart, split, link.
    Steward,
    /// Also re-matches, erases and exports.
    Admin,
}

impl Role {
    /// The role's name in configuration and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Spoke => "spoke",
            Role::Steward => "steward",
            Role::Admin => "admin",
        }
    }
}

/// One configured token.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    pub token: String,
    /// Who holds it; steward decisions are logged under this name.
    pub name: String,
    pub role: Role,
}

/// The authenticated caller, put into each request's extensions by [`Auth`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub name: String,
    pub role: Role,
}

/// Checks bearer tokens on every request.
#[derive(Debug, Clone, Default)]
pub struct Auth {
    tokens: Arc<HashMap<String, Identity>>,
}

impl Auth {
    /// No tokens: every caller is an anonymous admin.
    pub fn open() -> Self {
        Auth::default()
    }

    /// Tokens from configuration; a repeated or empty token is refused.
    pub fn with_tokens(tokens: &[TokenConfig]) -> Result<Self, String> {
        let mut map = HashMap::new();
        for t in tokens {
            if t.token.trim().len() < 16 {
                return Err(format!(
                    "the token of `{}` is shorter than 16 characters",
                    t.name
                ));
            }
            if t.name.trim().is_empty() {
                return Err("a token has no name".into());
            }
            let identity = Identity {
                name: t.name.clone(),
                role: t.role,
            };
            if map.insert(t.token.clone(), identity).is_some() {
                return Err(format!("the token of `{}` is configured twice", t.name));
            }
        }
        Ok(Auth {
            tokens: Arc::new(map),
        })
    }

    /// Whether every caller is let in.
    pub fn is_open(&self) -> bool {
        self.tokens.is_empty()
    }

    fn identify(&self, request: &Request<()>) -> Result<Identity, ApiError> {
        if self.is_open() {
            return Ok(Identity {
                name: "anonymous".into(),
                role: Role::Admin,
            });
        }
        let header = request
            .metadata()
            .get("authorization")
            .ok_or_else(|| {
                ApiError::Unauthenticated("send `authorization: Bearer <token>`".into())
            })?
            .to_str()
            .map_err(|_| {
                ApiError::Unauthenticated("the authorization header is not text".into())
            })?;
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .ok_or_else(|| {
                ApiError::Unauthenticated(
                    "the authorization header must be `Bearer <token>`".into(),
                )
            })?;
        self.tokens
            .get(token.trim())
            .cloned()
            .ok_or_else(|| ApiError::Unauthenticated("unknown token".into()))
    }
}

impl Interceptor for Auth {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let identity = self.identify(&request)?;
        request.extensions_mut().insert(identity);
        Ok(request)
    }
}

/// The caller, if it holds at least `role`; `action` names what was refused.
pub fn require<T>(request: &Request<T>, role: Role, action: &str) -> Result<Identity, ApiError> {
    let identity = request
        .extensions()
        .get::<Identity>()
        .cloned()
        .ok_or_else(|| ApiError::Unauthenticated("the request was not authenticated".into()))?;
    if identity.role < role {
        return Err(ApiError::PermissionDenied(format!(
            "`{}` has the role {} and may not {action}: that needs {}",
            identity.name,
            identity.role.as_str(),
            role.as_str()
        )));
    }
    Ok(identity)
}
