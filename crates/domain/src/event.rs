use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::ids::{validate_source, validate_subject};
use crate::{DomainError, SourceKey, Timestamp};

/// Largest accepted attribute value, in bytes.
pub const MAX_VALUE_BYTES: usize = 4096;

/// The inbound event types a spoke may publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum EventType {
    #[serde(rename = "profile.upserted")]
    ProfileUpserted,
    #[serde(rename = "profile.deleted")]
    ProfileDeleted,
    #[serde(rename = "consent.changed")]
    ConsentChanged,
    #[serde(rename = "preference.changed")]
    PreferenceChanged,
    #[serde(rename = "contact.recorded")]
    ContactRecorded,
}

impl EventType {
    /// Every type, in documentation order.
    pub const ALL: [EventType; 5] = [
        EventType::ProfileUpserted,
        EventType::ProfileDeleted,
        EventType::ConsentChanged,
        EventType::PreferenceChanged,
        EventType::ContactRecorded,
    ];

    /// The CloudEvents `type` string.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::ProfileUpserted => "profile.upserted",
            EventType::ProfileDeleted => "profile.deleted",
            EventType::ConsentChanged => "consent.changed",
            EventType::PreferenceChanged => "preference.changed",
            EventType::ContactRecorded => "contact.recorded",
        }
    }

    /// Parses a CloudEvents `type`; a reverse-DNS prefix such as `com.shop.` is allowed.
    pub fn parse(text: &str) -> Result<Self, DomainError> {
        EventType::ALL
            .into_iter()
            .find(|t| text == t.as_str() || text.ends_with(&format!(".{}", t.as_str())))
            .ok_or_else(|| DomainError::UnknownType(text.to_owned()))
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Contact channels a consent or preference can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    Email,
    Sms,
    Phone,
    Mail,
    Push,
}

impl Channel {
    /// The lowercase name used on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Email => "email",
            Channel::Sms => "sms",
            Channel::Phone => "phone",
            Channel::Mail => "mail",
            Channel::Push => "push",
        }
    }
}

/// A consent's state, ordered from most to least restrictive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConsentStatus {
    Withdrawn,
    Denied,
    Granted,
}

/// Where and how a consent was captured.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Evidence {
    pub collection_point: Option<String>,
    pub text_version: Option<String>,
    pub captured_by: Option<String>,
}

/// `consent.changed`: one purpose on one channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsentChange {
    pub purpose: String,
    pub channel: Channel,
    pub status: ConsentStatus,
    #[serde(default)]
    pub legal_basis: Option<String>,
    #[serde(default)]
    pub evidence: Option<Evidence>,
    #[serde(default)]
    pub expires_at: Option<String>,
    /// An e-mail address or phone number the consent is about, when the spoke knows no more.
    #[serde(default)]
    pub contact_point: Option<String>,
}

/// `preference.changed`: any subset of the customer's declared preferences.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreferenceChange {
    /// Topic of interest → subscribed or not.
    #[serde(default)]
    pub topics: BTreeMap<String, bool>,
    #[serde(default)]
    pub preferred_channel: Option<Channel>,
    /// Channel → frequency such as `weekly`.
    #[serde(default)]
    pub frequency: BTreeMap<Channel, String>,
    #[serde(default)]
    pub do_not_contact: Option<bool>,
    /// An e-mail address or phone number the preference is about, when the spoke knows
    /// no more (an unsubscribe link).
    #[serde(default)]
    pub contact_point: Option<String>,
}

/// `contact.recorded`: the spoke contacted the customer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContactRecorded {
    pub channel: Channel,
    pub purpose: String,
    #[serde(default)]
    pub campaign: Option<String>,
}

/// `profile.upserted`: a partial update. An absent attribute is unchanged; `None` clears it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ProfilePatch(pub BTreeMap<String, Option<String>>);

impl ProfilePatch {
    /// Reads a JSON object of attribute name → string or null.
    pub fn from_json(data: &serde_json::Value) -> Result<Self, DomainError> {
        let object = data
            .as_object()
            .ok_or_else(|| DomainError::invalid("data", "a profile must be a JSON object"))?;
        let mut patch = BTreeMap::new();
        for (name, value) in object {
            validate_name("data", name)?;
            let value = match value {
                serde_json::Value::Null => None,
                serde_json::Value::String(s) if s.len() <= MAX_VALUE_BYTES => Some(s.clone()),
                serde_json::Value::String(_) => {
                    return Err(DomainError::invalid(
                        format!("data.{name}"),
                        format!("longer than {MAX_VALUE_BYTES} bytes"),
                    ));
                }
                serde_json::Value::Number(n) => Some(n.to_string()),
                _ => {
                    return Err(DomainError::invalid(
                        format!("data.{name}"),
                        "must be a string, a number or null",
                    ));
                }
            };
            patch.insert(name.clone(), value);
        }
        Ok(ProfilePatch(patch))
    }
}

/// What an inbound event carries, by type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Payload {
    Profile(ProfilePatch),
    Deleted,
    Consent(ConsentChange),
    Preference(PreferenceChange),
    Contact(ContactRecorded),
}

impl Payload {
    /// The event type this payload belongs to.
    pub fn event_type(&self) -> EventType {
        match self {
            Payload::Profile(_) => EventType::ProfileUpserted,
            Payload::Deleted => EventType::ProfileDeleted,
            Payload::Consent(_) => EventType::ConsentChanged,
            Payload::Preference(_) => EventType::PreferenceChanged,
            Payload::Contact(_) => EventType::ContactRecorded,
        }
    }

    /// The contact point a consent or preference names instead of a record, if any.
    pub fn contact_point(&self) -> Option<&str> {
        match self {
            Payload::Consent(c) => c.contact_point.as_deref(),
            Payload::Preference(p) => p.contact_point.as_deref(),
            _ => None,
        }
    }

    /// Decodes the JSON `data` of an event of the given type, checking every value.
    pub fn from_json(
        event_type: EventType,
        data: Option<&serde_json::Value>,
    ) -> Result<Self, DomainError> {
        let required = || data.ok_or(DomainError::MissingAttribute("data"));
        let payload = match event_type {
            EventType::ProfileUpserted => Payload::Profile(ProfilePatch::from_json(required()?)?),
            EventType::ProfileDeleted => Payload::Deleted,
            EventType::ConsentChanged => {
                let consent: ConsentChange = typed(required()?)?;
                validate_name("data.purpose", &consent.purpose)?;
                if let Some(expiry) = &consent.expires_at {
                    Timestamp::parse_rfc3339("data.expires_at", expiry)?;
                }
                Payload::Consent(consent)
            }
            EventType::PreferenceChanged => {
                let preference: PreferenceChange = typed(required()?)?;
                for topic in preference.topics.keys() {
                    validate_name("data.topics", topic)?;
                }
                Payload::Preference(preference)
            }
            EventType::ContactRecorded => {
                let contact: ContactRecorded = typed(required()?)?;
                validate_name("data.purpose", &contact.purpose)?;
                Payload::Contact(contact)
            }
        };
        Ok(payload)
    }
}

/// Decodes a typed payload, naming the offending field in the error.
fn typed<T: serde::de::DeserializeOwned>(value: &serde_json::Value) -> Result<T, DomainError> {
    T::deserialize(value).map_err(|e| DomainError::invalid("data", e.to_string()))
}

/// A required attribute, trimmed and non-empty.
fn present<'a>(value: Option<&'a str>, name: &'static str) -> Result<&'a str, DomainError> {
    value
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .ok_or(DomainError::MissingAttribute(name))
}

/// Checks an attribute, purpose or topic name: `[a-z][a-z0-9_.-]*`, at most 64 bytes.
fn validate_name(field: &str, name: &str) -> Result<(), DomainError> {
    let mut bytes = name.bytes();
    let ok = name.len() <= 64
        && bytes.next().is_some_and(|b| b.is_ascii_lowercase())
        && bytes.all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b'-')
        });
    if ok {
        Ok(())
    } else {
        Err(DomainError::invalid(
            field,
            format!("`{name}` must match [a-z][a-z0-9_.-]* and be at most 64 bytes"),
        ))
    }
}

/// An accepted spoke event: CloudEvents attributes and a checked payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InboundEvent {
    pub id: String,
    pub source: String,
    pub subject: String,
    pub time: Timestamp,
    pub payload: Payload,
}

impl InboundEvent {
    /// Builds an event from raw CloudEvents attributes and JSON data, checking each.
    pub fn from_parts(
        id: Option<&str>,
        source: Option<&str>,
        event_type: Option<&str>,
        subject: Option<&str>,
        time: Option<&str>,
        data: Option<&serde_json::Value>,
    ) -> Result<Self, DomainError> {
        let id = present(id, "id")?;
        if id.len() > 256 {
            return Err(DomainError::invalid("id", "longer than 256 bytes"));
        }
        let source = present(source, "source")?;
        let event_type = EventType::parse(present(event_type, "type")?)?;
        let subject = present(subject, "subject")?;
        validate_source(source)?;
        validate_subject(subject)?;
        let time = Timestamp::parse_rfc3339("time", present(time, "time")?)?;
        let payload = Payload::from_json(event_type, data)?;
        Ok(InboundEvent {
            id: id.to_owned(),
            source: source.to_owned(),
            subject: subject.to_owned(),
            time,
            payload,
        })
    }

    /// The spoke record this event is about.
    pub fn key(&self) -> SourceKey {
        SourceKey {
            source: self.source.as_str().into(),
            subject: self.subject.as_str().into(),
        }
    }

    /// The event's type.
    pub fn event_type(&self) -> EventType {
        self.payload.event_type()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn parts(event_type: &str, data: serde_json::Value) -> Result<InboundEvent, DomainError> {
        InboundEvent::from_parts(
            Some("e1"),
            Some("web"),
            Some(event_type),
            Some("u-1"),
            Some("2026-01-01T00:00:00Z"),
            Some(&data),
        )
    }

    #[test]
    fn profile_patch_distinguishes_absent_and_null() {
        let event = parts(
            "profile.upserted",
            json!({"given_name": "Ann", "phone": null}),
        )
        .unwrap();
        let Payload::Profile(patch) = event.payload else {
            panic!("not a profile")
        };
        assert_eq!(patch.0.get("given_name"), Some(&Some("Ann".to_owned())));
        assert_eq!(patch.0.get("phone"), Some(&None));
        assert!(!patch.0.contains_key("email"));
    }

    #[test]
    fn refuses_missing_attributes_and_bad_values() {
        let missing = InboundEvent::from_parts(
            None,
            Some("web"),
            Some("profile.deleted"),
            Some("1"),
            Some("2026-01-01T00:00:00Z"),
            None,
        );
        assert_eq!(missing.unwrap_err(), DomainError::MissingAttribute("id"));
        assert!(matches!(
            parts("profile.exploded", json!({})),
            Err(DomainError::UnknownType(_))
        ));
        assert!(parts("profile.upserted", json!({"Given Name": "x"})).is_err());
        assert!(parts("profile.upserted", json!({"tags": ["a"]})).is_err());
        assert!(
            parts(
                "consent.changed",
                json!({"channel": "email", "status": "granted"})
            )
            .is_err()
        );
        assert!(
            parts(
                "consent.changed",
                json!({"purpose": "marketing", "channel": "fax", "status": "granted"})
            )
            .is_err()
        );
    }

    #[test]
    fn accepts_reverse_dns_type_prefix() {
        assert_eq!(
            EventType::parse("com.shop.consent.changed").unwrap(),
            EventType::ConsentChanged
        );
    }
}
