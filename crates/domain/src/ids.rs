use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::DomainError;

/// A spoke's own record: the spoke system (`pos`, `web`, …) and its record id. Both
/// parts are shared text: a key is copied wherever its record is named (golden values'
/// provenance, members, decisions), and a copy is two reference counts, not two strings.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SourceKey {
    pub source: std::sync::Arc<str>,
    pub subject: std::sync::Arc<str>,
}

impl SourceKey {
    /// Builds a key after checking both parts.
    pub fn new(source: &str, subject: &str) -> Result<Self, DomainError> {
        validate_source(source)?;
        validate_subject(subject)?;
        Ok(SourceKey {
            source: source.into(),
            subject: subject.into(),
        })
    }

    /// The storage form `source/subject`; the source never holds a `/`.
    pub fn encode(&self) -> String {
        // Built in one allocation of the right size: every read of a record makes one,
        // and `format!` grows the string piece by piece.
        let mut key = String::with_capacity(self.source.len() + 1 + self.subject.len());
        key.push_str(&self.source);
        key.push('/');
        key.push_str(&self.subject);
        key
    }
}

impl fmt::Display for SourceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.source, self.subject)
    }
}

impl FromStr for SourceKey {
    type Err = DomainError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (source, subject) = s
            .split_once('/')
            .ok_or_else(|| DomainError::invalid("source_key", "expected `source/subject`"))?;
        SourceKey::new(source, subject)
    }
}

/// Checks a spoke system name: lowercase letters, digits, `.`, `_`, `-`, at most 64.
pub fn validate_source(source: &str) -> Result<(), DomainError> {
    let ok = !source.is_empty()
        && source.len() <= 64
        && source.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
        });
    if ok {
        Ok(())
    } else {
        Err(DomainError::invalid(
            "source",
            format!("`{source}` must be 1-64 of a-z, 0-9, `.`, `_`, `-`"),
        ))
    }
}

/// Checks a spoke record id: non-empty, at most 256 bytes, no control characters.
pub fn validate_subject(subject: &str) -> Result<(), DomainError> {
    if subject.is_empty() {
        return Err(DomainError::MissingAttribute("subject"));
    }
    if subject.len() > 256 || subject.chars().any(char::is_control) {
        return Err(DomainError::invalid(
            "subject",
            "must be at most 256 bytes without control characters",
        ));
    }
    Ok(())
}

/// The stable id of a golden record. Assigned from the log sequence number of the
/// decision that created the entity, so ids are unique and replay gives the same ones.
/// Serialised as its text (`G0000000042`) where the encoding is human-readable, as the
/// number in the store's binary projections ([`crate::encoding`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GoldenId(pub u64);

impl Serialize for GoldenId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        crate::encoding::text_or_number(serializer, self, self.0)
    }
}

impl<'de> Deserialize<'de> for GoldenId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        crate::encoding::from_text_or_number(deserializer, GoldenId)
    }
}

impl fmt::Display for GoldenId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "G{:010}", self.0)
    }
}

impl FromStr for GoldenId {
    type Err = DomainError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.strip_prefix('G')
            .filter(|digits| !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|digits| digits.parse().ok())
            .map(GoldenId)
            .ok_or_else(|| {
                DomainError::invalid(
                    "golden_id",
                    format!("`{s}` is not a golden id like G0000000042"),
                )
            })
    }
}

impl From<GoldenId> for String {
    fn from(id: GoldenId) -> Self {
        id.to_string()
    }
}

impl TryFrom<String> for GoldenId {
    type Error = DomainError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_key_round_trips_and_keeps_slashes_in_subject() {
        let key: SourceKey = "crm/acct/42".parse().unwrap();
        assert_eq!(&*key.source, "crm");
        assert_eq!(&*key.subject, "acct/42");
        assert_eq!(key.encode(), "crm/acct/42");
        assert!("CRM/1".parse::<SourceKey>().is_err());
        assert!("crm/".parse::<SourceKey>().is_err());
    }

    #[test]
    fn golden_id_round_trips() {
        let id = GoldenId(42);
        assert_eq!(id.to_string(), "G0000000042");
        assert_eq!("G0000000042".parse::<GoldenId>().unwrap(), id);
        assert!("42".parse::<GoldenId>().is_err());
        assert!("G".parse::<GoldenId>().is_err());
    }
}
