//! CloudEvents decoding: binary mode (attributes in `ce_*` headers, data in the body) or
//! structured mode (one JSON object with the attributes and `data`).

use std::fmt;

use cmdm_domain::{DomainError, InboundEvent};
use serde_json::Value;

/// A consumed message, detached from rdkafka so decoding is testable alone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawMessage {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    pub headers: Vec<(String, Vec<u8>)>,
}

impl RawMessage {
    fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_slice())
    }
}

/// Kinds of refused input, as named in the dead letter's class header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectionClass {
    /// Larger than the configured limit.
    Oversized,
    /// Not UTF-8 JSON, or not the shape of a CloudEvent.
    Undecodable,
    /// A required attribute (`id`, `source`, `type`, `subject`, `time`, `data`) is absent.
    MissingAttribute,
    /// An unknown event type.
    UnknownType,
    /// A value is present but not acceptable.
    Invalid,
    /// A content type the hub does not read.
    UnsupportedContentType,
}

impl RejectionClass {
    /// The class header's value.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectionClass::Oversized => "oversized",
            RejectionClass::Undecodable => "undecodable",
            RejectionClass::MissingAttribute => "missing-attribute",
            RejectionClass::UnknownType => "unknown-type",
            RejectionClass::Invalid => "invalid",
            RejectionClass::UnsupportedContentType => "unsupported-content-type",
        }
    }
}

/// Why a message was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub class: RejectionClass,
    pub reason: String,
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.class.as_str(), self.reason)
    }
}

impl From<DomainError> for Rejection {
    fn from(e: DomainError) -> Self {
        let class = match e {
            DomainError::MissingAttribute(_) => RejectionClass::MissingAttribute,
            DomainError::UnknownType(_) => RejectionClass::UnknownType,
            DomainError::Invalid { .. } => RejectionClass::Invalid,
        };
        Rejection {
            class,
            reason: e.to_string(),
        }
    }
}

fn reject(class: RejectionClass, reason: impl Into<String>) -> Rejection {
    Rejection {
        class,
        reason: reason.into(),
    }
}

/// Decodes a message into an event, or says why not.
pub fn decode(message: &RawMessage, max_bytes: usize) -> Result<InboundEvent, Rejection> {
    let size = message.payload.as_ref().map_or(0, Vec::len)
        + message
            .headers
            .iter()
            .map(|(k, v)| k.len() + v.len())
            .sum::<usize>();
    if size > max_bytes {
        return Err(reject(
            RejectionClass::Oversized,
            format!("{size} bytes exceeds the limit of {max_bytes}"),
        ));
    }
    let content_type = message
        .header("content-type")
        .or_else(|| message.header("ce_datacontenttype"));
    if let Some(ct) = content_type {
        let ct = String::from_utf8_lossy(ct).to_ascii_lowercase();
        if !ct.contains("json") {
            return Err(reject(
                RejectionClass::UnsupportedContentType,
                format!("content type `{ct}` is not JSON"),
            ));
        }
    }
    let binary_mode = message.headers.iter().any(|(k, _)| k.starts_with("ce_"));
    if binary_mode {
        decode_binary(message)
    } else {
        decode_structured(message)
    }
}

fn parse_json(bytes: &[u8]) -> Result<Value, Rejection> {
    serde_json::from_slice(bytes).map_err(|e| {
        reject(
            RejectionClass::Undecodable,
            format!("body is not JSON: {e}"),
        )
    })
}

fn decode_binary(message: &RawMessage) -> Result<InboundEvent, Rejection> {
    let header = |name: &'static str| -> Result<Option<&str>, Rejection> {
        message
            .header(name)
            .map(|v| {
                std::str::from_utf8(v).map_err(|_| {
                    reject(
                        RejectionClass::Undecodable,
                        format!("header `{name}` is not UTF-8"),
                    )
                })
            })
            .transpose()
    };
    let data = match message.payload.as_deref() {
        None | Some([]) => None,
        Some(bytes) => Some(parse_json(bytes)?),
    };
    Ok(InboundEvent::from_parts(
        header("ce_id")?,
        header("ce_source")?,
        header("ce_type")?,
        header("ce_subject")?,
        header("ce_time")?,
        data.as_ref(),
    )?)
}

fn decode_structured(message: &RawMessage) -> Result<InboundEvent, Rejection> {
    let bytes = message.payload.as_deref().unwrap_or_default();
    if bytes.is_empty() {
        return Err(reject(
            RejectionClass::Undecodable,
            "empty message without ce_ headers",
        ));
    }
    let body = parse_json(bytes)?;
    let object = body.as_object().ok_or_else(|| {
        reject(
            RejectionClass::Undecodable,
            "a structured CloudEvent must be a JSON object",
        )
    })?;
    let text = |name: &str| -> Result<Option<&str>, Rejection> {
        match object.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(reject(
                RejectionClass::Invalid,
                format!("`{name}` must be a string"),
            )),
        }
    };
    Ok(InboundEvent::from_parts(
        text("id")?,
        text("source")?,
        text("type")?,
        text("subject")?,
        text("time")?,
        object.get("data").filter(|d| !d.is_null()),
    )?)
}

#[cfg(test)]
mod tests {
    use cmdm_domain::EventType;

    use super::*;

    fn binary(headers: &[(&str, &str)], body: &str) -> RawMessage {
        RawMessage {
            headers: headers
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.as_bytes().to_vec()))
                .collect(),
            payload: Some(body.as_bytes().to_vec()),
            ..RawMessage::default()
        }
    }

    const ATTRS: [(&str, &str); 5] = [
        ("ce_id", "e-1"),
        ("ce_source", "pos"),
        ("ce_type", "profile.upserted"),
        ("ce_subject", "p-1"),
        ("ce_time", "2026-11-23T10:00:00Z"),
    ];

    #[test]
    fn binary_mode_reads_headers() {
        let event = decode(&binary(&ATTRS, r#"{"email":"a@b.org"}"#), 1 << 20).unwrap();
        assert_eq!(event.id, "e-1");
        assert_eq!(event.event_type(), EventType::ProfileUpserted);
    }

    #[test]
    fn structured_mode_reads_the_body() {
        let body = r#"{"specversion":"1.0","id":"e-2","source":"web","type":"profile.deleted","subject":"w-1","time":"2026-11-23T10:00:00Z"}"#;
        let event = decode(&binary(&[], body), 1 << 20).unwrap();
        assert_eq!(event.event_type(), EventType::ProfileDeleted);
    }

    #[test]
    fn each_bad_input_has_its_class() {
        let class = |m: RawMessage, max: usize| decode(&m, max).unwrap_err().class;
        assert_eq!(
            class(binary(&ATTRS, "{not json"), 1 << 20),
            RejectionClass::Undecodable
        );
        assert_eq!(
            class(binary(&ATTRS, &"x".repeat(100)), 50),
            RejectionClass::Oversized
        );
        assert_eq!(
            class(binary(&ATTRS[1..], "{}"), 1 << 20),
            RejectionClass::MissingAttribute
        );
        let mut typed = ATTRS;
        typed[2].1 = "profile.exploded";
        assert_eq!(
            class(binary(&typed, "{}"), 1 << 20),
            RejectionClass::UnknownType
        );
        let mut consent = ATTRS;
        consent[2].1 = "consent.changed";
        let no_purpose = r#"{"channel":"email","status":"granted"}"#;
        assert_eq!(
            class(binary(&consent, no_purpose), 1 << 20),
            RejectionClass::Invalid
        );
        let mut proto = ATTRS.to_vec();
        proto.push(("content-type", "application/protobuf"));
        assert_eq!(
            class(binary(&proto, "{}"), 1 << 20),
            RejectionClass::UnsupportedContentType
        );
        assert_eq!(
            class(binary(&[], "[1,2]"), 1 << 20),
            RejectionClass::Undecodable
        );
    }
}
