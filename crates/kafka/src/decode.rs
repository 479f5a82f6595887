//! CloudEvents decoding: binary mode (attributes in `ce_*` headers, data in the body) or
//! structured mode (one JSON object with the attributes and `data`).

use std::fmt;

use cmdm_domain::event::EventType;
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
    /// About the record of a person who was erased.
    Erased,
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
            RejectionClass::Erased => "erased",
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

pub(crate) fn reject(class: RejectionClass, reason: impl Into<String>) -> Rejection {
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
        .or_else(|| message.header("ce_datacontenttype"))
        .map(|ct| String::from_utf8_lossy(ct).to_ascii_lowercase());
    let binary_mode = message.headers.iter().any(|(k, _)| k.starts_with("ce_"));
    let format = match content_type.as_deref() {
        None => DataFormat::Json,
        Some(ct) if ct.contains("json") => DataFormat::Json,
        Some(ct) if binary_mode && is_protobuf(ct) => DataFormat::Protobuf,
        Some(ct) if is_protobuf(ct) => {
            return Err(reject(
                RejectionClass::UnsupportedContentType,
                format!(
                    "content type `{ct}` needs binary mode (ce_ headers): a structured \
                     CloudEvent is a JSON object"
                ),
            ));
        }
        Some(ct) => {
            return Err(reject(
                RejectionClass::UnsupportedContentType,
                format!("content type `{ct}` is neither JSON nor application/protobuf"),
            ));
        }
    };
    if binary_mode {
        decode_binary(message, format)
    } else {
        decode_structured(message)
    }
}

/// How the `data` of a binary-mode event is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DataFormat {
    Json,
    /// The message of `proto/cmdm/v1/events.proto` for the event's type.
    Protobuf,
}

fn is_protobuf(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or("").trim();
    matches!(essence, "application/protobuf" | "application/x-protobuf")
}

fn parse_json(bytes: &[u8]) -> Result<Value, Rejection> {
    serde_json::from_slice(bytes).map_err(|e| {
        reject(
            RejectionClass::Undecodable,
            format!("body is not JSON: {e}"),
        )
    })
}

fn decode_binary(message: &RawMessage, format: DataFormat) -> Result<InboundEvent, Rejection> {
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
    let data = match (message.payload.as_deref(), format) {
        (None | Some([]), DataFormat::Json) => None,
        (Some(bytes), DataFormat::Json) => Some(parse_json(bytes)?),
        (bytes, DataFormat::Protobuf) => {
            // The type says which message the body is; an unknown type is refused below.
            let kind = header("ce_type")?.and_then(|t| EventType::parse(t).ok());
            match kind {
                Some(kind) => crate::protobuf::to_json(kind, bytes.unwrap_or_default())?,
                None => None,
            }
        }
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
    use prost::Message as _;

    use super::*;
    use crate::protobuf::pb;

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

    /// A binary-mode message with a protobuf body.
    fn protobuf(kind: &str, body: Vec<u8>, content_type: &str) -> RawMessage {
        let mut message = binary(&ATTRS, "");
        message.headers[2].1 = kind.as_bytes().to_vec();
        message
            .headers
            .push(("content-type".into(), content_type.as_bytes().to_vec()));
        message.payload = Some(body);
        message
    }

    /// The same event with a JSON body.
    fn json(kind: &str, body: &str) -> RawMessage {
        let mut message = binary(&ATTRS, body);
        message.headers[2].1 = kind.as_bytes().to_vec();
        message
    }

    #[test]
    fn protobuf_payloads_decode_to_the_same_events_as_json() {
        let profile = pb::ProfileUpserted {
            attributes: vec![
                pb::Attribute {
                    name: "given_name".into(),
                    value: Some("Ann".into()),
                },
                pb::Attribute {
                    name: "phone".into(),
                    value: None,
                },
            ],
        };
        let consent = pb::ConsentChanged {
            purpose: "marketing".into(),
            channel: "sms".into(),
            status: "withdrawn".into(),
            legal_basis: Some("consent".into()),
            evidence: Some(pb::Evidence {
                collection_point: Some("web-footer".into()),
                text_version: Some("v3".into()),
                captured_by: None,
            }),
            expires_at: Some("2027-01-01T00:00:00Z".into()),
            contact_point: None,
        };
        let preference = pb::PreferenceChanged {
            topics: [("offers".to_owned(), false)].into(),
            preferred_channel: Some("email".into()),
            frequency: [("email".to_owned(), "weekly".to_owned())].into(),
            do_not_contact: Some(true),
        };
        let contact = pb::ContactRecorded {
            channel: "email".into(),
            purpose: "marketing".into(),
            campaign: Some("black-friday".into()),
        };
        let cases = [
            (
                "profile.upserted",
                profile.encode_to_vec(),
                r#"{"given_name":"Ann","phone":null}"#,
            ),
            (
                "consent.changed",
                consent.encode_to_vec(),
                r#"{"purpose":"marketing","channel":"sms","status":"withdrawn","legal_basis":"consent",
                   "evidence":{"collection_point":"web-footer","text_version":"v3"},
                   "expires_at":"2027-01-01T00:00:00Z"}"#,
            ),
            (
                "preference.changed",
                preference.encode_to_vec(),
                r#"{"topics":{"offers":false},"preferred_channel":"email",
                   "frequency":{"email":"weekly"},"do_not_contact":true}"#,
            ),
            (
                "contact.recorded",
                contact.encode_to_vec(),
                r#"{"channel":"email","purpose":"marketing","campaign":"black-friday"}"#,
            ),
            ("profile.deleted", Vec::new(), ""),
        ];
        for (kind, body, same_as) in cases {
            for content_type in ["application/protobuf", "application/x-protobuf"] {
                let from_proto = decode(&protobuf(kind, body.clone(), content_type), 1 << 20)
                    .unwrap_or_else(|e| panic!("{kind}: {e}"));
                let from_json = decode(&json(kind, same_as), 1 << 20).unwrap();
                assert_eq!(from_proto, from_json, "{kind}");
            }
        }
        // The same checks as JSON: a consent without a purpose is refused, by name.
        let no_purpose = pb::ConsentChanged {
            purpose: String::new(),
            ..consent
        };
        let refused = decode(
            &protobuf(
                "consent.changed",
                no_purpose.encode_to_vec(),
                "application/protobuf",
            ),
            1 << 20,
        )
        .unwrap_err();
        assert_eq!(refused.class, RejectionClass::Invalid);
        assert!(refused.reason.contains("purpose"), "{}", refused.reason);
        let twice = pb::ProfileUpserted {
            attributes: vec![
                pb::Attribute {
                    name: "email".into(),
                    value: Some("a@x.org".into()),
                },
                pb::Attribute {
                    name: "email".into(),
                    value: Some("b@x.org".into()),
                },
            ],
        };
        let refused = decode(
            &protobuf(
                "profile.upserted",
                twice.encode_to_vec(),
                "application/protobuf",
            ),
            1 << 20,
        )
        .unwrap_err();
        assert_eq!(refused.class, RejectionClass::Invalid);
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
        let mut xml = ATTRS.to_vec();
        xml.push(("content-type", "application/xml"));
        assert_eq!(
            class(binary(&xml, "{}"), 1 << 20),
            RejectionClass::UnsupportedContentType
        );
        let mut proto = ATTRS.to_vec();
        proto.push(("content-type", "application/protobuf"));
        assert_eq!(
            class(binary(&proto, "\u{ff}\u{ff}"), 1 << 20),
            RejectionClass::Undecodable
        );
        let structured_proto = RawMessage {
            headers: vec![("content-type".into(), b"application/protobuf".to_vec())],
            payload: Some(b"{}".to_vec()),
            ..RawMessage::default()
        };
        assert_eq!(
            class(structured_proto, 1 << 20),
            RejectionClass::UnsupportedContentType
        );
        assert_eq!(
            class(binary(&[], "[1,2]"), 1 << 20),
            RejectionClass::Undecodable
        );
    }
}
