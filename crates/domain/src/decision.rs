use serde::{Deserialize, Serialize};

use crate::event::EventType;
use crate::{GoldenId, SourceKey, Timestamp};

/// One field's part in a match score: its comparison level and weight, never its values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FieldWeight {
    pub field: String,
    pub level: String,
    /// log2(m/u) of the level.
    pub weight: f64,
}

/// Why the matcher decided as it did: the score against the closest member of the
/// entity, field by field, and the model that scored it.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct MatchExplanation {
    /// What decided (`fellegi-sunter`, `steward`, …).
    pub rule: String,
    /// Total log2 odds, prior included.
    pub weight: f64,
    pub probability: f64,
    pub fields: Vec<FieldWeight>,
    /// The entity member(s) the record was compared with.
    pub with: Vec<SourceKey>,
    /// The strongest contradiction (sum of negative identity-field weights) with any member
    /// of the entity: a strongly negative value means the record contradicts a member.
    #[serde(default)]
    pub weakest_evidence: f64,
}

/// A decision of the hub, logged so that replay repeats it instead of re-deciding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "decision")]
pub enum Decision {
    /// A new entity was started for a record; its id is the decision's sequence number.
    EntityCreated { entity: GoldenId, record: SourceKey },
    /// A record joined an existing entity.
    RecordLinked {
        entity: GoldenId,
        record: SourceKey,
        explanation: MatchExplanation,
    },
    /// `merged` joined `survivor`, which keeps its id; `merged` redirects to it.
    EntitiesMerged {
        survivor: GoldenId,
        merged: GoldenId,
        explanation: MatchExplanation,
    },
    /// A record left its entity (deleted at its spoke).
    RecordUnlinked {
        entity: GoldenId,
        record: SourceKey,
        reason: String,
    },
    /// The matcher was unsure whether `record` belongs to `entity`: a steward decides.
    /// The task id is the decision's sequence number.
    ReviewOpened {
        task: u64,
        record: SourceKey,
        entity: GoldenId,
        explanation: MatchExplanation,
    },
    /// A steward merged `merged` into `survivor` (the older id), which keeps its id.
    StewardMerged {
        survivor: GoldenId,
        merged: GoldenId,
        note: StewardNote,
    },
    /// A steward declared that the records of two entities are different people: no later
    /// match links or merges a record of one with a record of the other.
    KeptApart {
        entity: GoldenId,
        other: GoldenId,
        note: StewardNote,
    },
    /// A steward took a record out of its entity, losslessly: the entity is recomputed
    /// from the records left, and the record gets `to`, either the id it once created
    /// (revived) or a new one (this decision's sequence number). The record is kept apart
    /// from the records it left.
    RecordSplit {
        record: SourceKey,
        from: GoldenId,
        to: GoldenId,
        revived: bool,
        note: StewardNote,
    },
    /// A steward moved a record into an entity.
    StewardLinked {
        record: SourceKey,
        entity: GoldenId,
        note: StewardNote,
    },
    /// A person was erased: the data keys of their records and contact points were
    /// deleted and every projection of them purged. Carries no personal data: ids only.
    Erased {
        entity: GoldenId,
        /// Ids merged into `entity` earlier; they no longer resolve.
        merged_ids: Vec<GoldenId>,
        records: Vec<SourceKey>,
        /// Key references of the contact points the person held (see `LoggedEvent::key_ref`).
        contact_keys: Vec<String>,
        note: StewardNote,
    },
}

impl Decision {
    /// The steward's note, for decisions a steward took.
    pub fn steward(&self) -> Option<&StewardNote> {
        match self {
            Decision::StewardMerged { note, .. }
            | Decision::KeptApart { note, .. }
            | Decision::RecordSplit { note, .. }
            | Decision::StewardLinked { note, .. }
            | Decision::Erased { note, .. } => Some(note),
            _ => None,
        }
    }

    /// The decision's name as the history and the API show it.
    pub fn name(&self) -> &'static str {
        match self {
            Decision::EntityCreated { .. } => "entity_created",
            Decision::RecordLinked { .. } => "record_linked",
            Decision::EntitiesMerged { .. } => "entities_merged",
            Decision::RecordUnlinked { .. } => "record_unlinked",
            Decision::ReviewOpened { .. } => "review_opened",
            Decision::StewardMerged { .. } => "steward_merged",
            Decision::KeptApart { .. } => "kept_apart",
            Decision::RecordSplit { .. } => "record_split",
            Decision::StewardLinked { .. } => "steward_linked",
            Decision::Erased { .. } => "erased",
        }
    }
}

/// Who took a steward decision, when, why, and the review task it resolves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StewardNote {
    /// The steward's identity, as the API authenticated it.
    pub by: String,
    pub comment: String,
    pub at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<u64>,
}

/// An accepted spoke event as logged: routing attributes in clear, the payload sealed
/// with the source record's data key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoggedEvent {
    pub id: String,
    pub source: String,
    pub subject: String,
    pub event_type: EventType,
    pub time: Timestamp,
    pub received_at: Timestamp,
    #[serde(with = "hex")]
    pub sealed: Vec<u8>,
    /// The data key sealing the payload when it is not the record's: a consent or
    /// preference about a contact point is sealed with that contact point's key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_ref: Option<String>,
}

impl LoggedEvent {
    /// The spoke record the event is about.
    pub fn key(&self) -> SourceKey {
        SourceKey {
            source: self.source.as_str().into(),
            subject: self.subject.as_str().into(),
        }
    }
}

/// One entry of the append-only log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "entry")]
pub enum LogEntry {
    Event(LoggedEvent),
    Decision(Decision),
}

/// First byte of an event's log entry as the store keeps it ([`LogEntry::to_stored`]):
/// then the event in postcard, its sealed payload as raw bytes. A stored entry starting
/// with `{` is JSON: decisions, and every entry logged before events were binary.
const STORED_EVENT: u8 = 2;

/// First byte of a decision's log entry as the store keeps it: then the decision in
/// postcard ([`StoredDecision`]). Decisions logged before were JSON.
const STORED_DECISION: u8 = 3;

/// How a [`StoredDecision`] holds what is not a plain number: borrowed from the decision
/// being written ([`Borrowed`]), owned when read back ([`Owned`]).
trait Holding {
    type Key;
    type Explanation;
    type Text;
    type Ids;
    type Keys;
    type Texts;
}

/// What a decision being written lends its stored form.
struct Borrowed<'a>(std::marker::PhantomData<&'a ()>);

impl<'a> Holding for Borrowed<'a> {
    type Key = &'a SourceKey;
    type Explanation = &'a MatchExplanation;
    type Text = &'a str;
    type Ids = &'a [GoldenId];
    type Keys = &'a [SourceKey];
    type Texts = &'a [String];
}

/// What a stored decision read back owns.
struct Owned;

impl Holding for Owned {
    type Key = SourceKey;
    type Explanation = MatchExplanation;
    type Text = String;
    type Ids = Vec<GoldenId>;
    type Keys = Vec<SourceKey>;
    type Texts = Vec<String>;
}

/// A decision's stored form, variant by variant and field by field as [`Decision`]
/// (whose own serde form, tagged inside, postcard cannot read back). postcard is
/// positional: variants are numbered in this order, which must never change (a new
/// decision goes last), and no field is ever skipped.
#[derive(Serialize, Deserialize)]
#[serde(bound(
    serialize = "H::Key: Serialize, H::Explanation: Serialize, H::Text: Serialize, \
                 H::Ids: Serialize, H::Keys: Serialize, H::Texts: Serialize",
    deserialize = "H::Key: Deserialize<'de>, H::Explanation: Deserialize<'de>, \
                   H::Text: Deserialize<'de>, H::Ids: Deserialize<'de>, \
                   H::Keys: Deserialize<'de>, H::Texts: Deserialize<'de>"
))]
enum StoredDecision<H: Holding> {
    EntityCreated {
        entity: GoldenId,
        record: H::Key,
    },
    RecordLinked {
        entity: GoldenId,
        record: H::Key,
        explanation: H::Explanation,
    },
    EntitiesMerged {
        survivor: GoldenId,
        merged: GoldenId,
        explanation: H::Explanation,
    },
    RecordUnlinked {
        entity: GoldenId,
        record: H::Key,
        reason: H::Text,
    },
    ReviewOpened {
        task: u64,
        record: H::Key,
        entity: GoldenId,
        explanation: H::Explanation,
    },
    StewardMerged {
        survivor: GoldenId,
        merged: GoldenId,
        note: StoredNote<H::Text>,
    },
    KeptApart {
        entity: GoldenId,
        other: GoldenId,
        note: StoredNote<H::Text>,
    },
    RecordSplit {
        record: H::Key,
        from: GoldenId,
        to: GoldenId,
        revived: bool,
        note: StoredNote<H::Text>,
    },
    StewardLinked {
        record: H::Key,
        entity: GoldenId,
        note: StoredNote<H::Text>,
    },
    Erased {
        entity: GoldenId,
        merged_ids: H::Ids,
        records: H::Keys,
        contact_keys: H::Texts,
        note: StoredNote<H::Text>,
    },
}

impl<'a> From<&'a Decision> for StoredDecision<Borrowed<'a>> {
    fn from(decision: &'a Decision) -> Self {
        match decision {
            Decision::EntityCreated { entity, record } => StoredDecision::EntityCreated {
                entity: *entity,
                record,
            },
            Decision::RecordLinked {
                entity,
                record,
                explanation,
            } => StoredDecision::RecordLinked {
                entity: *entity,
                record,
                explanation,
            },
            Decision::EntitiesMerged {
                survivor,
                merged,
                explanation,
            } => StoredDecision::EntitiesMerged {
                survivor: *survivor,
                merged: *merged,
                explanation,
            },
            Decision::RecordUnlinked {
                entity,
                record,
                reason,
            } => StoredDecision::RecordUnlinked {
                entity: *entity,
                record,
                reason,
            },
            Decision::ReviewOpened {
                task,
                record,
                entity,
                explanation,
            } => StoredDecision::ReviewOpened {
                task: *task,
                record,
                entity: *entity,
                explanation,
            },
            Decision::StewardMerged {
                survivor,
                merged,
                note,
            } => StoredDecision::StewardMerged {
                survivor: *survivor,
                merged: *merged,
                note: note.into(),
            },
            Decision::KeptApart {
                entity,
                other,
                note,
            } => StoredDecision::KeptApart {
                entity: *entity,
                other: *other,
                note: note.into(),
            },
            Decision::RecordSplit {
                record,
                from,
                to,
                revived,
                note,
            } => StoredDecision::RecordSplit {
                record,
                from: *from,
                to: *to,
                revived: *revived,
                note: note.into(),
            },
            Decision::StewardLinked {
                record,
                entity,
                note,
            } => StoredDecision::StewardLinked {
                record,
                entity: *entity,
                note: note.into(),
            },
            Decision::Erased {
                entity,
                merged_ids,
                records,
                contact_keys,
                note,
            } => StoredDecision::Erased {
                entity: *entity,
                merged_ids,
                records,
                contact_keys,
                note: note.into(),
            },
        }
    }
}

impl From<StoredDecision<Owned>> for Decision {
    fn from(stored: StoredDecision<Owned>) -> Self {
        match stored {
            StoredDecision::EntityCreated { entity, record } => {
                Decision::EntityCreated { entity, record }
            }
            StoredDecision::RecordLinked {
                entity,
                record,
                explanation,
            } => Decision::RecordLinked {
                entity,
                record,
                explanation,
            },
            StoredDecision::EntitiesMerged {
                survivor,
                merged,
                explanation,
            } => Decision::EntitiesMerged {
                survivor,
                merged,
                explanation,
            },
            StoredDecision::RecordUnlinked {
                entity,
                record,
                reason,
            } => Decision::RecordUnlinked {
                entity,
                record,
                reason,
            },
            StoredDecision::ReviewOpened {
                task,
                record,
                entity,
                explanation,
            } => Decision::ReviewOpened {
                task,
                record,
                entity,
                explanation,
            },
            StoredDecision::StewardMerged {
                survivor,
                merged,
                note,
            } => Decision::StewardMerged {
                survivor,
                merged,
                note: note.into(),
            },
            StoredDecision::KeptApart {
                entity,
                other,
                note,
            } => Decision::KeptApart {
                entity,
                other,
                note: note.into(),
            },
            StoredDecision::RecordSplit {
                record,
                from,
                to,
                revived,
                note,
            } => Decision::RecordSplit {
                record,
                from,
                to,
                revived,
                note: note.into(),
            },
            StoredDecision::StewardLinked {
                record,
                entity,
                note,
            } => Decision::StewardLinked {
                record,
                entity,
                note: note.into(),
            },
            StoredDecision::Erased {
                entity,
                merged_ids,
                records,
                contact_keys,
                note,
            } => Decision::Erased {
                entity,
                merged_ids,
                records,
                contact_keys,
                note: note.into(),
            },
        }
    }
}

/// A [`StewardNote`] field by field, its task always written.
#[derive(Serialize, Deserialize)]
struct StoredNote<T> {
    by: T,
    comment: T,
    at: Timestamp,
    task: Option<u64>,
}

impl<'a> From<&'a StewardNote> for StoredNote<&'a str> {
    fn from(note: &'a StewardNote) -> Self {
        StoredNote {
            by: &note.by,
            comment: &note.comment,
            at: note.at,
            task: note.task,
        }
    }
}

impl From<StoredNote<String>> for StewardNote {
    fn from(note: StoredNote<String>) -> Self {
        StewardNote {
            by: note.by,
            comment: note.comment,
            at: note.at,
            task: note.task,
        }
    }
}

/// An event's stored form, field by field as [`LoggedEvent`] (postcard is positional:
/// no field is ever skipped).
#[derive(Serialize)]
struct EventOut<'a> {
    id: &'a str,
    source: &'a str,
    subject: &'a str,
    event_type: EventType,
    time: Timestamp,
    received_at: Timestamp,
    #[serde(serialize_with = "bytes_out")]
    sealed: &'a [u8],
    key_ref: Option<&'a str>,
}

#[derive(Deserialize)]
struct EventIn {
    id: String,
    source: String,
    subject: String,
    event_type: EventType,
    time: Timestamp,
    received_at: Timestamp,
    #[serde(deserialize_with = "bytes_in")]
    sealed: Vec<u8>,
    key_ref: Option<String>,
}

/// The sealed payload written as one byte string. In postcard that is exactly a sequence
/// of bytes (its length, then the bytes), as entries were first written, without a call
/// per byte.
fn bytes_out<S: serde::Serializer>(bytes: &&[u8], serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_bytes(bytes)
}

/// Reads what [`bytes_out`] wrote, taking the bytes whole.
fn bytes_in<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
    struct Bytes;
    impl<'de> serde::de::Visitor<'de> for Bytes {
        type Value = Vec<u8>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a byte string")
        }

        fn visit_bytes<E>(self, bytes: &[u8]) -> Result<Vec<u8>, E> {
            Ok(bytes.to_vec())
        }

        fn visit_byte_buf<E>(self, bytes: Vec<u8>) -> Result<Vec<u8>, E> {
            Ok(bytes)
        }

        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
            let mut bytes = Vec::with_capacity(seq.size_hint().unwrap_or(0));
            while let Some(byte) = seq.next_element()? {
                bytes.push(byte);
            }
            Ok(bytes)
        }
    }
    deserializer.deserialize_byte_buf(Bytes)
}

impl LoggedEvent {
    /// The event as the store keeps it in the log ([`LogEntry::to_stored`]), with
    /// `sealed` for its sealed payload: the entry is written without copying the event.
    pub fn to_stored_with(&self, sealed: &[u8]) -> Result<Vec<u8>, String> {
        let mut out = Vec::with_capacity(64 + sealed.len());
        out.push(STORED_EVENT);
        let event = EventOut {
            id: &self.id,
            source: &self.source,
            subject: &self.subject,
            event_type: self.event_type,
            time: self.time,
            received_at: self.received_at,
            sealed,
            key_ref: self.key_ref.as_deref(),
        };
        postcard::to_io(&event, &mut out).map_err(|e| e.to_string())?;
        Ok(out)
    }
}

impl Decision {
    /// The decision as the store keeps it in the log ([`LogEntry::to_stored`]).
    pub fn to_stored(&self) -> Result<Vec<u8>, String> {
        let mut out = Vec::with_capacity(64);
        out.push(STORED_DECISION);
        postcard::to_io(&StoredDecision::from(self), &mut out).map_err(|e| e.to_string())?;
        Ok(out)
    }
}

impl LogEntry {
    /// The entry as the store keeps it, in binary: an event in about half its JSON, a
    /// decision in about a third.
    pub fn to_stored(&self) -> Result<Vec<u8>, String> {
        match self {
            LogEntry::Event(e) => e.to_stored_with(&e.sealed),
            LogEntry::Decision(d) => d.to_stored(),
        }
    }

    /// Reads an entry written by [`LogEntry::to_stored`], or by any earlier version (JSON).
    pub fn from_stored(bytes: &[u8]) -> Result<LogEntry, String> {
        match bytes.first() {
            Some(&STORED_EVENT) => {
                let e: EventIn = postcard::from_bytes(&bytes[1..]).map_err(|e| e.to_string())?;
                Ok(LogEntry::Event(LoggedEvent {
                    id: e.id,
                    source: e.source,
                    subject: e.subject,
                    event_type: e.event_type,
                    time: e.time,
                    received_at: e.received_at,
                    sealed: e.sealed,
                    key_ref: e.key_ref,
                }))
            }
            Some(&STORED_DECISION) => {
                let d: StoredDecision<Owned> =
                    postcard::from_bytes(&bytes[1..]).map_err(|e| e.to_string())?;
                Ok(LogEntry::Decision(d.into()))
            }
            Some(b'{') => serde_json::from_slice(bytes).map_err(|e| e.to_string()),
            Some(other) => Err(format!("unknown log entry format {other:#04x}")),
            None => Err("empty log entry".to_owned()),
        }
    }
}

mod hex {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    const DIGITS: &[u8; 16] = b"0123456789abcdef";

    /// Both digits of every byte.
    const PAIRS: [[u8; 2]; 256] = {
        let mut pairs = [[0; 2]; 256];
        let mut b = 0;
        while b < 256 {
            pairs[b] = [DIGITS[b >> 4], DIGITS[b & 0xf]];
            b += 1;
        }
        pairs
    };

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        let mut text = Vec::with_capacity(bytes.len() * 2);
        for &b in bytes {
            text.extend_from_slice(&PAIRS[usize::from(b)]);
        }
        // Hex digits only: ASCII.
        s.serialize_str(std::str::from_utf8(&text).map_err(serde::ser::Error::custom)?)
    }

    fn digit(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = <&str>::deserialize(d)?.as_bytes();
        if text.len() % 2 != 0 {
            return Err(D::Error::custom("odd hex length"));
        }
        text.chunks_exact(2)
            .map(|pair| match (digit(pair[0]), digit(pair[1])) {
                (Some(high), Some(low)) => Ok(high << 4 | low),
                _ => Err(D::Error::custom("not a hex digit")),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_entries_round_trip_through_their_stored_form_and_json_ones_still_read() {
        let event = |key_ref: Option<&str>| {
            LogEntry::Event(LoggedEvent {
                id: "e-1".into(),
                source: "pos".into(),
                subject: "1".into(),
                event_type: EventType::ConsentChanged,
                time: Timestamp(-5),
                received_at: Timestamp(1_700_000_000_000),
                sealed: (0..=255).collect(),
                key_ref: key_ref.map(str::to_owned),
            })
        };
        let decision = LogEntry::Decision(Decision::EntityCreated {
            entity: crate::GoldenId(3),
            record: crate::SourceKey::new("pos", "1").unwrap(),
        });
        for entry in [event(None), event(Some("email:k")), decision.clone()] {
            let stored = entry.to_stored().unwrap();
            assert_eq!(LogEntry::from_stored(&stored).unwrap(), entry);
            let json = serde_json::to_vec(&entry).unwrap();
            assert_eq!(
                LogEntry::from_stored(&json).unwrap(),
                entry,
                "written before"
            );
        }
        let stored = event(None).to_stored().unwrap();
        assert_eq!(stored[0], STORED_EVENT);
        assert!(
            stored.len() * 2 < serde_json::to_vec(&event(None)).unwrap().len(),
            "binary: {} bytes",
            stored.len()
        );
        assert_eq!(decision.to_stored().unwrap()[0], STORED_DECISION);
        // The sealed payload as one byte string is what it was as a sequence of bytes.
        #[derive(Serialize)]
        struct Sealed<'a>(#[serde(serialize_with = "bytes_out")] &'a [u8]);
        let bytes: Vec<u8> = (0..=255).collect();
        assert_eq!(
            postcard::to_allocvec(&Sealed(&bytes)).unwrap(),
            postcard::to_allocvec(&bytes).unwrap()
        );
        // Cut short, or of no known format: refused, never misread.
        assert!(LogEntry::from_stored(&stored[..stored.len() - 1]).is_err());
        assert!(LogEntry::from_stored(&[7, 1, 2]).is_err());
        assert!(LogEntry::from_stored(&[]).is_err());
    }

    /// One decision of each kind, with every optional part both present and absent.
    fn every_decision() -> Vec<Decision> {
        let key = |s: &str| crate::SourceKey::new("crm", s).unwrap();
        let (a, b) = (crate::GoldenId(7), crate::GoldenId(u64::MAX));
        let explanation = MatchExplanation {
            rule: "fellegi-sunter".into(),
            weight: 23.456_789_012_345,
            probability: 0.999_999_9,
            fields: vec![
                FieldWeight {
                    field: "given_name".into(),
                    level: "exact".into(),
                    weight: 3.25,
                },
                FieldWeight {
                    field: "email".into(),
                    level: "missing".into(),
                    weight: -0.0,
                },
            ],
            with: vec![key("1"), key("2")],
            weakest_evidence: -4.5,
        };
        let note = |task| StewardNote {
            by: "steward@bank".into(),
            comment: "same person, née Smith".into(),
            at: Timestamp(-1),
            task,
        };
        vec![
            Decision::EntityCreated {
                entity: a,
                record: key("1"),
            },
            Decision::RecordLinked {
                entity: a,
                record: key("2"),
                explanation: explanation.clone(),
            },
            Decision::EntitiesMerged {
                survivor: a,
                merged: b,
                explanation: MatchExplanation::default(),
            },
            Decision::RecordUnlinked {
                entity: a,
                record: key("3"),
                reason: "profile.deleted".into(),
            },
            Decision::ReviewOpened {
                task: 42,
                record: key("4"),
                entity: b,
                explanation,
            },
            Decision::StewardMerged {
                survivor: a,
                merged: b,
                note: note(Some(42)),
            },
            Decision::KeptApart {
                entity: a,
                other: b,
                note: note(None),
            },
            Decision::RecordSplit {
                record: key("5"),
                from: a,
                to: b,
                revived: true,
                note: note(None),
            },
            Decision::StewardLinked {
                record: key("6"),
                entity: b,
                note: note(Some(0)),
            },
            Decision::Erased {
                entity: a,
                merged_ids: vec![b, crate::GoldenId(8)],
                records: vec![key("1"), key("2")],
                contact_keys: vec!["cp-0123".into()],
                note: note(None),
            },
            Decision::Erased {
                entity: b,
                merged_ids: vec![],
                records: vec![],
                contact_keys: vec![],
                note: note(Some(1)),
            },
        ]
    }

    #[test]
    fn every_decision_round_trips_through_its_binary_stored_form_and_its_json_still_reads() {
        for decision in every_decision() {
            let entry = LogEntry::Decision(decision.clone());
            let stored = entry.to_stored().unwrap();
            assert_eq!(stored[0], STORED_DECISION);
            assert_eq!(stored, decision.to_stored().unwrap());
            assert_eq!(LogEntry::from_stored(&stored).unwrap(), entry);
            let json = serde_json::to_vec(&entry).unwrap();
            assert_eq!(
                LogEntry::from_stored(&json).unwrap(),
                entry,
                "logged before"
            );
            assert!(
                stored.len() < json.len() / 2,
                "{}: {} bytes against {} in JSON",
                decision.name(),
                stored.len(),
                json.len()
            );
            // Cut short anywhere: refused, never misread.
            for cut in 1..stored.len() {
                assert!(
                    LogEntry::from_stored(&stored[..cut]).is_err(),
                    "{} cut at {cut}",
                    decision.name()
                );
            }
        }
    }

    #[test]
    fn logged_event_round_trips_through_json() {
        let entry = LogEntry::Event(LoggedEvent {
            id: "e".into(),
            source: "pos".into(),
            subject: "1".into(),
            event_type: EventType::ProfileUpserted,
            time: Timestamp(1),
            received_at: Timestamp(2),
            sealed: vec![0, 1, 254, 255],
            key_ref: None,
        });
        let json = serde_json::to_vec(&entry).unwrap();
        assert_eq!(serde_json::from_slice::<LogEntry>(&json).unwrap(), entry);
        let text = String::from_utf8(json).unwrap();
        assert!(text.contains(r#""sealed":"0001feff""#), "{text}");
        // Upper-case digits read too; anything else is refused, never misread.
        let upper = text.replace("0001feff", "0001FEFF");
        assert_eq!(serde_json::from_str::<LogEntry>(&upper).unwrap(), entry);
        for bad in ["0001fef", "0001fexf", "0001fé", "0001é"] {
            assert!(serde_json::from_str::<LogEntry>(&text.replace("0001feff", bad)).is_err());
        }
    }
}
