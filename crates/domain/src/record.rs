use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::event::{ConsentChange, ContactRecorded, Payload, PreferenceChange};
use crate::{SourceKey, Timestamp};

/// Contacts kept per source record for frequency caps; older ones are dropped first.
pub const MAX_CONTACTS_KEPT: usize = 1000;

/// When a value was declared: event time first, then log order for equal times.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Stamp {
    pub time: Timestamp,
    pub seq: u64,
}

/// A value with the stamp of the event that set it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamped<T> {
    pub value: T,
    pub stamp: Stamp,
}

/// What applying an event changed in a source record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordChange {
    /// Nothing: the event was older than what the record holds.
    None,
    /// Profile attributes changed: the record must be matched again.
    Profile,
    /// Only consent, preferences or contacts changed.
    Declarations,
}

/// A spoke's record as the hub holds it, built from that spoke's events only.
/// Every value keeps the stamp of the event that set it, so a late, older event loses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceRecord {
    pub key: SourceKey,
    /// Attribute name → value; `None` is an explicit clear, kept so an older set cannot win.
    pub attributes: BTreeMap<String, Stamped<Option<String>>>,
    /// `purpose/channel` → the latest consent declared on this record.
    pub consents: BTreeMap<String, Stamped<ConsentChange>>,
    /// Preference item (`topic.offers`, `frequency.email`, …) → value.
    pub preferences: BTreeMap<String, Stamped<String>>,
    pub contacts: Vec<Stamped<ContactRecorded>>,
    /// Set while the spoke's latest word is that the record is deleted.
    pub deleted: Option<Stamp>,
    /// Sequence numbers of every log entry about this record (its events, the hub's and
    /// the stewards' decisions about it or its entity), in order: its history.
    #[serde(default)]
    pub trail: Vec<u64>,
}

impl SourceRecord {
    /// An empty record for a key the hub has not seen.
    pub fn new(key: SourceKey) -> Self {
        SourceRecord {
            key,
            attributes: BTreeMap::new(),
            consents: BTreeMap::new(),
            preferences: BTreeMap::new(),
            contacts: Vec::new(),
            deleted: None,
            trail: Vec::new(),
        }
    }

    /// Notes a log entry about this record in its history (once, in order).
    pub fn note(&mut self, seq: u64) {
        if self.trail.last().is_none_or(|&last| last < seq) {
            self.trail.push(seq);
        }
    }

    /// Gives every stamp the sequence number `seq`: for a record built from its first
    /// event before the event's number was known, whose stamps are all that event's.
    pub fn renumber(&mut self, seq: u64) {
        self.attributes.values_mut().for_each(|a| a.stamp.seq = seq);
        self.consents.values_mut().for_each(|c| c.stamp.seq = seq);
        self.preferences
            .values_mut()
            .for_each(|p| p.stamp.seq = seq);
        self.contacts.iter_mut().for_each(|c| c.stamp.seq = seq);
        if let Some(deleted) = &mut self.deleted {
            deleted.seq = seq;
        }
    }

    /// Whether the record takes part in matching and golden records.
    pub fn is_active(&self) -> bool {
        self.deleted.is_none() && self.attributes.values().any(|a| a.value.is_some())
    }

    /// The current value of an attribute, if set.
    pub fn value(&self, name: &str) -> Option<&str> {
        self.attributes.get(name).and_then(|a| a.value.as_deref())
    }

    /// Set attributes with their stamps.
    pub fn live_attributes(&self) -> impl Iterator<Item = (&str, &str, Stamp)> {
        self.attributes
            .iter()
            .filter_map(|(name, a)| a.value.as_deref().map(|v| (name.as_str(), v, a.stamp)))
    }

    /// Applies one event's payload; values only move forward in event time.
    pub fn apply(&mut self, payload: &Payload, stamp: Stamp) -> RecordChange {
        match payload {
            Payload::Profile(patch) => {
                let mut changed = false;
                for (name, value) in &patch.0 {
                    // A deletion cleared everything older than itself.
                    if self
                        .attributes
                        .get(name)
                        .is_none_or(|old| old.stamp < stamp)
                        && self.deleted.is_none_or(|d| d < stamp)
                    {
                        let old = self.attributes.insert(
                            name.clone(),
                            Stamped {
                                value: value.clone(),
                                stamp,
                            },
                        );
                        changed |= old.is_none_or(|o| o.value != *value);
                    }
                }
                if self.deleted.is_some_and(|d| d < stamp) && patch.0.values().any(Option::is_some)
                {
                    self.deleted = None;
                    changed = true;
                }
                if changed {
                    RecordChange::Profile
                } else {
                    RecordChange::None
                }
            }
            Payload::Deleted => {
                if self.deleted.is_some_and(|d| d >= stamp) {
                    return RecordChange::None;
                }
                let mut changed = false;
                for attribute in self.attributes.values_mut() {
                    if attribute.stamp < stamp {
                        changed |= attribute.value.is_some();
                        *attribute = Stamped { value: None, stamp };
                    }
                }
                if !self
                    .attributes
                    .values()
                    .any(|a| a.stamp > stamp && a.value.is_some())
                {
                    changed |= self.deleted.is_none();
                    self.deleted = Some(stamp);
                }
                if changed {
                    RecordChange::Profile
                } else {
                    RecordChange::None
                }
            }
            Payload::Consent(consent) => {
                let key = format!("{}/{}", consent.purpose, consent.channel.as_str());
                if upsert_newer(&mut self.consents, key, consent.clone(), stamp) {
                    RecordChange::Declarations
                } else {
                    RecordChange::None
                }
            }
            Payload::Preference(preference) => {
                let mut changed = false;
                for (item, value) in preference_items(preference) {
                    changed |= upsert_newer(&mut self.preferences, item, value, stamp);
                }
                if changed {
                    RecordChange::Declarations
                } else {
                    RecordChange::None
                }
            }
            Payload::Contact(contact) => {
                let at = self.contacts.partition_point(|c| c.stamp < stamp);
                self.contacts.insert(
                    at,
                    Stamped {
                        value: contact.clone(),
                        stamp,
                    },
                );
                if self.contacts.len() > MAX_CONTACTS_KEPT {
                    self.contacts.remove(0);
                }
                RecordChange::Declarations
            }
        }
    }
}

/// Inserts `value` unless the map already holds a newer one; says whether it changed.
pub(crate) fn upsert_newer<T: PartialEq>(
    map: &mut BTreeMap<String, Stamped<T>>,
    key: String,
    value: T,
    stamp: Stamp,
) -> bool {
    match map.get(&key) {
        Some(old) if old.stamp >= stamp => false,
        _ => {
            map.insert(key, Stamped { value, stamp });
            true
        }
    }
}

/// Flattens a preference change into independently stamped items, so a partial
/// change (one topic, one channel) leaves every other item as it was.
pub(crate) fn preference_items(preference: &PreferenceChange) -> Vec<(String, String)> {
    let mut items = Vec::new();
    for (topic, subscribed) in &preference.topics {
        items.push((format!("topic.{topic}"), subscribed.to_string()));
    }
    if let Some(channel) = preference.preferred_channel {
        items.push(("preferred_channel".to_owned(), channel.as_str().to_owned()));
    }
    for (channel, frequency) in &preference.frequency {
        items.push((format!("frequency.{}", channel.as_str()), frequency.clone()));
    }
    if let Some(dnc) = preference.do_not_contact {
        items.push(("do_not_contact".to_owned(), dnc.to_string()));
    }
    items
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::ProfilePatch;

    fn stamp(time: i64, seq: u64) -> Stamp {
        Stamp {
            time: Timestamp(time),
            seq,
        }
    }

    fn patch(pairs: &[(&str, Option<&str>)]) -> Payload {
        Payload::Profile(ProfilePatch(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.map(str::to_owned)))
                .collect(),
        ))
    }

    fn record() -> SourceRecord {
        SourceRecord::new(SourceKey::new("web", "1").unwrap())
    }

    #[test]
    fn older_event_never_overrides_newer_value() {
        let mut r = record();
        r.apply(&patch(&[("email", Some("new@x.org"))]), stamp(20, 1));
        assert_eq!(
            r.apply(&patch(&[("email", Some("old@x.org"))]), stamp(10, 2)),
            RecordChange::None
        );
        assert_eq!(r.value("email"), Some("new@x.org"));
    }

    #[test]
    fn explicit_null_clears_and_absent_keeps() {
        let mut r = record();
        r.apply(
            &patch(&[("email", Some("a@x.org")), ("phone", Some("1"))]),
            stamp(1, 1),
        );
        r.apply(&patch(&[("phone", None)]), stamp(2, 2));
        assert_eq!(r.value("email"), Some("a@x.org"));
        assert_eq!(r.value("phone"), None);
    }

    #[test]
    fn delete_clears_older_values_and_a_newer_upsert_revives() {
        let mut r = record();
        r.apply(&patch(&[("email", Some("a@x.org"))]), stamp(1, 1));
        r.apply(&Payload::Deleted, stamp(5, 2));
        assert!(!r.is_active());
        assert_eq!(
            r.apply(&patch(&[("email", Some("late@x.org"))]), stamp(3, 3)),
            RecordChange::None
        );
        assert!(!r.is_active());
        r.apply(&patch(&[("email", Some("b@x.org"))]), stamp(9, 4));
        assert!(r.is_active());
        assert_eq!(r.value("email"), Some("b@x.org"));
    }
}
