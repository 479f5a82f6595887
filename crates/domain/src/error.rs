use thiserror::Error;

/// Why an inbound event or identifier was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DomainError {
    /// A required CloudEvents attribute is absent or empty.
    #[error("missing required attribute `{0}`")]
    MissingAttribute(&'static str),
    /// A value is present but not acceptable; names the field.
    #[error("invalid `{field}`: {reason}")]
    Invalid { field: String, reason: String },
    /// The event type is not one the hub knows.
    #[error("unknown event type `{0}`")]
    UnknownType(String),
}

impl DomainError {
    /// Shorthand for an invalid field.
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        DomainError::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }
}
