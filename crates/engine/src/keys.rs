//! What the keys tree holds under a name: the data key that seals that name's personal
//! data in the log and, for a source record, the event that made the key (the record's
//! first event).
//!
//! That first event is counted for dedup here rather than with an entry of its own in the
//! dedup tree: a new record then costs the store one write less (each sled write costs
//! about the same whatever its size, and a new record made four). Every later event of
//! the record, and every event about a contact point, has its dedup entry as before. An
//! erasure, which deletes the key, moves the first event into the dedup tree, so that a
//! redelivery of it still changes nothing. Dedup stays on the event's source and id
//! whatever its subject: the match index keeps a hash of each such first event's source
//! and id (loaded from the records' stored values, which carry it), and an event with a
//! hash it holds is a duplicate where the holding record's key names its id.
//!
//! The value: the key's 32 bytes, then for a record's first event its sequence number
//! (u64 BE) and its id (the rest). A value of 32 bytes is a key alone: a contact point's,
//! or a record's keyed before first events were kept here (its first event has its entry
//! in the dedup tree).

use cmdm_store::crypto::DataKey;
use cmdm_store::{StoreError, TreeName};

use crate::Result;

/// The hash of a spoke event's source and id by which the match index finds the record
/// whose first event it may be: the same in every process.
pub(crate) fn first_event_hash(source: &str, id: &str) -> u64 {
    use std::hash::BuildHasher;
    foldhash::fast::FixedState::with_seed(0x6576_6e74).hash_one((source, id))
}

/// The length of a data key.
const KEY_LEN: usize = 32;

/// An entry of the keys tree.
pub(crate) struct KeyEntry {
    pub key: DataKey,
    /// The sequence number and id of the event that made the key, where it is counted
    /// for dedup here.
    pub first: Option<(u64, String)>,
}

impl KeyEntry {
    /// A fresh key made by a record's first event, numbered `seq`.
    pub fn first(seq: u64, event_id: &str) -> Self {
        KeyEntry {
            key: DataKey::generate(),
            first: Some((seq, event_id.to_owned())),
        }
    }

    /// A fresh key alone.
    pub fn alone() -> Self {
        KeyEntry {
            key: DataKey::generate(),
            first: None,
        }
    }

    /// Whether the event `id` is the one that made the key.
    pub fn made_by(&self, id: &str) -> bool {
        self.first.as_ref().is_some_and(|(_, first)| first == id)
    }

    pub fn encode(&self) -> Vec<u8> {
        let id_len = self.first.as_ref().map_or(0, |(_, id)| 8 + id.len());
        let mut value = Vec::with_capacity(KEY_LEN + id_len);
        value.extend_from_slice(self.key.as_bytes());
        if let Some((seq, id)) = &self.first {
            value.extend_from_slice(&seq.to_be_bytes());
            value.extend_from_slice(id.as_bytes());
        }
        value
    }

    pub fn decode(value: &[u8]) -> Result<Self> {
        let corrupt = |reason: &str| StoreError::Corrupt {
            tree: TreeName::Keys.as_str(),
            reason: reason.to_owned(),
        };
        if value.len() < KEY_LEN {
            return Err(corrupt("shorter than a key").into());
        }
        let (key, rest) = value.split_at(KEY_LEN);
        let first = match rest.len() {
            0 => None,
            1..8 => return Err(corrupt("cut short").into()),
            _ => {
                let (seq, id) = rest.split_at(8);
                let seq = u64::from_be_bytes(seq.try_into().expect("eight bytes"));
                let id = std::str::from_utf8(id).map_err(|_| corrupt("event id not UTF-8"))?;
                Some((seq, id.to_owned()))
            }
        };
        Ok(KeyEntry {
            key: DataKey::from_bytes(key)?,
            first,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_reads_back_as_written_and_a_bare_key_is_an_entry_without_first_event() {
        let made = KeyEntry::first(42, "evt-1");
        let back = KeyEntry::decode(&made.encode()).unwrap();
        assert_eq!(back.key.as_bytes(), made.key.as_bytes());
        assert_eq!(back.first, Some((42, "evt-1".to_owned())));
        assert!(back.made_by("evt-1"));
        assert!(!back.made_by("evt-2"));

        let bare = KeyEntry::alone();
        assert_eq!(bare.encode().len(), KEY_LEN);
        let back = KeyEntry::decode(bare.key.as_bytes()).unwrap();
        assert_eq!(back.first, None);
        assert!(!back.made_by("evt-1"));

        assert!(KeyEntry::decode(&bare.encode()[..31]).is_err());
        let mut cut = made.encode();
        cut.truncate(KEY_LEN + 3);
        assert!(KeyEntry::decode(&cut).is_err());
    }
}
