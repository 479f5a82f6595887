use std::fmt;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::DomainError;

/// A point in time in microseconds since the Unix epoch, UTC. Serialised as RFC 3339
/// text with microseconds where the encoding is human-readable, so the log and the
/// change feed read plainly; as the number in the store's binary projections
/// ([`crate::encoding`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub i64);

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        crate::encoding::text_or_number(serializer, self, self.0)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        crate::encoding::from_text_or_number(deserializer, Timestamp)
    }
}

impl From<Timestamp> for String {
    fn from(t: Timestamp) -> Self {
        t.to_rfc3339()
    }
}

impl TryFrom<String> for Timestamp {
    type Error = DomainError;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        Timestamp::parse_rfc3339("time", &text)
    }
}

impl Timestamp {
    /// Parses an RFC 3339 time such as `2026-11-23T10:00:00Z`.
    pub fn parse_rfc3339(field: &str, text: &str) -> Result<Self, DomainError> {
        DateTime::parse_from_rfc3339(text.trim())
            .map(|t| Timestamp(t.with_timezone(&Utc).timestamp_micros()))
            .map_err(|e| DomainError::invalid(field, format!("`{text}` is not RFC 3339: {e}")))
    }

    /// The current wall-clock time.
    pub fn now() -> Self {
        Timestamp(Utc::now().timestamp_micros())
    }

    /// RFC 3339 text with microseconds, in UTC.
    pub fn to_rfc3339(self) -> String {
        DateTime::<Utc>::from_timestamp_micros(self.0)
            .map(|t| t.to_rfc3339_opts(SecondsFormat::Micros, true))
            .unwrap_or_else(|| self.0.to_string())
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_rfc3339_in_utc() {
        let t = Timestamp::parse_rfc3339("time", "2026-11-23T11:00:00+01:00").unwrap();
        assert_eq!(t.to_rfc3339(), "2026-11-23T10:00:00.000000Z");
        assert!(Timestamp::parse_rfc3339("time", "yesterday").is_err());
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(json, "\"2026-11-23T10:00:00.000000Z\"");
        assert_eq!(serde_json::from_str::<Timestamp>(&json).unwrap(), t);
    }
}
