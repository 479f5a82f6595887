//! Protobuf payloads (`proto/cmdm/v1/events.proto`): decoded into the JSON form of the
//! same payload, so that one validation serves both encodings.

use cmdm_domain::event::EventType;
use prost::Message;
use serde_json::{Map, Value, json};

use crate::decode::{Rejection, RejectionClass, reject};

/// The generated payload messages.
#[allow(clippy::all)]
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/cmdm.v1.events.rs"));
}

fn parse<M: Message + Default>(kind: EventType, bytes: &[u8]) -> Result<M, Rejection> {
    M::decode(bytes).map_err(|e| {
        reject(
            RejectionClass::Undecodable,
            format!("body is not a protobuf {kind} payload: {e}"),
        )
    })
}

/// Puts a proto3 string into a JSON object unless it is empty (proto3's "absent"), so
/// that a missing required field is reported as missing, as for JSON.
fn put(object: &mut Map<String, Value>, name: &str, value: &str) {
    if !value.is_empty() {
        object.insert(name.to_owned(), Value::from(value));
    }
}

fn put_opt(object: &mut Map<String, Value>, name: &str, value: Option<&String>) {
    if let Some(value) = value {
        object.insert(name.to_owned(), Value::from(value.as_str()));
    }
}

/// The JSON `data` equivalent to a protobuf payload of an event type.
pub fn to_json(kind: EventType, bytes: &[u8]) -> Result<Option<Value>, Rejection> {
    let data = match kind {
        EventType::ProfileUpserted => {
            let profile: pb::ProfileUpserted = parse(kind, bytes)?;
            let mut object = Map::new();
            for attribute in profile.attributes {
                let value = attribute.value.map_or(Value::Null, Value::from);
                if object.insert(attribute.name.clone(), value).is_some() {
                    return Err(reject(
                        RejectionClass::Invalid,
                        format!("attribute `{}` appears twice", attribute.name),
                    ));
                }
            }
            Value::Object(object)
        }
        EventType::ProfileDeleted => {
            let _: pb::ProfileDeleted = parse(kind, bytes)?;
            return Ok(None);
        }
        EventType::ConsentChanged => {
            let consent: pb::ConsentChanged = parse(kind, bytes)?;
            let mut object = Map::new();
            put(&mut object, "purpose", &consent.purpose);
            put(&mut object, "channel", &consent.channel);
            put(&mut object, "status", &consent.status);
            put_opt(&mut object, "legal_basis", consent.legal_basis.as_ref());
            if let Some(evidence) = &consent.evidence {
                let mut e = Map::new();
                put_opt(
                    &mut e,
                    "collection_point",
                    evidence.collection_point.as_ref(),
                );
                put_opt(&mut e, "text_version", evidence.text_version.as_ref());
                put_opt(&mut e, "captured_by", evidence.captured_by.as_ref());
                object.insert("evidence".to_owned(), Value::Object(e));
            }
            put_opt(&mut object, "expires_at", consent.expires_at.as_ref());
            put_opt(&mut object, "contact_point", consent.contact_point.as_ref());
            Value::Object(object)
        }
        EventType::PreferenceChanged => {
            let preference: pb::PreferenceChanged = parse(kind, bytes)?;
            let mut object = Map::new();
            object.insert("topics".to_owned(), json!(preference.topics));
            put_opt(
                &mut object,
                "preferred_channel",
                preference.preferred_channel.as_ref(),
            );
            object.insert("frequency".to_owned(), json!(preference.frequency));
            if let Some(dnc) = preference.do_not_contact {
                object.insert("do_not_contact".to_owned(), Value::Bool(dnc));
            }
            Value::Object(object)
        }
        EventType::ContactRecorded => {
            let contact: pb::ContactRecorded = parse(kind, bytes)?;
            let mut object = Map::new();
            put(&mut object, "channel", &contact.channel);
            put(&mut object, "purpose", &contact.purpose);
            put_opt(&mut object, "campaign", contact.campaign.as_ref());
            Value::Object(object)
        }
    };
    Ok(Some(data))
}
