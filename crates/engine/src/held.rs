//! How a source record is stored: in one value of the `records` tree together with the
//! entity it belongs to and its prepared form for matching, so that a record arriving
//! costs the store one write rather than three (projection format 6; the `features`
//! and `membership` trees held the other two before).
//!
//! The value: a version byte, then 1 and the golden id (u64 BE) or 0 for no entity,
//! then the length (u32 LE) of the prepared form in the store's binary encoding and the
//! form (length 0: none), then the source record in the binary encoding. Version 2 puts,
//! right after the version byte, the hash (u64 BE) of the record's first event where
//! that event counts for dedup with the record's data key ([`crate::keys`]): the match
//! index is loaded with it. A record without one is written in version 1.

use cmdm_domain::{GoldenId, SourceRecord};
use cmdm_matching::Prepared;
use cmdm_store::{StoreError, TreeName, decode_bin, encode_bin, encode_bin_onto};

use crate::Result;

/// The first byte of a stored record, without and with its first event's hash.
const VERSION: u8 = 1;
const VERSION_FIRST: u8 = 2;

/// A source record as the store holds it, with what is kept beside it.
#[derive(Debug, Clone)]
pub struct Held {
    /// The record.
    pub record: SourceRecord,
    /// The entity it belongs to.
    pub entity: Option<GoldenId>,
    /// The prepared form in the store's binary encoding, decoded only where it is read.
    pub features: Option<Vec<u8>>,
    /// The hash of the record's first event ([`crate::keys::first_event_hash`]) where
    /// that event counts for dedup with the record's data key.
    pub first_event: Option<u64>,
}

impl Held {
    /// A record the store does not hold yet.
    pub fn new(record: SourceRecord) -> Self {
        Held {
            record,
            entity: None,
            features: None,
            first_event: None,
        }
    }

    /// The stored value.
    pub fn encode(&self) -> Result<Vec<u8>> {
        let features = self.features.as_deref().unwrap_or_default();
        // The record is encoded onto the end: room for one a little longer than its
        // prepared form (on the synthetic people, 277 bytes against 217), so that it
        // seldom grows the buffer.
        let mut out = Vec::with_capacity(1 + 8 + 9 + 4 + 2 * features.len() + 256);
        match self.first_event {
            Some(hash) => {
                out.push(VERSION_FIRST);
                out.extend_from_slice(&hash.to_be_bytes());
            }
            None => out.push(VERSION),
        }
        match self.entity {
            Some(id) => {
                out.push(1);
                out.extend_from_slice(&id.0.to_be_bytes());
            }
            None => out.push(0),
        }
        out.extend_from_slice(&(features.len() as u32).to_le_bytes());
        out.extend_from_slice(features);
        Ok(encode_bin_onto(TreeName::Records, &self.record, out)?)
    }

    /// Decodes a stored value whole.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let parts = Parts::of(bytes)?;
        Ok(Held {
            record: parts.record()?,
            entity: parts.entity,
            features: parts.features.map(<[u8]>::to_vec),
            first_event: parts.first_event,
        })
    }

    /// The prepared form, decoded.
    pub fn prepared(&self) -> Result<Option<Prepared>> {
        decode_features(self.features.as_deref())
    }
}

/// A stored value taken apart without decoding the record.
pub struct Parts<'a> {
    /// The entity the record belongs to.
    pub entity: Option<GoldenId>,
    /// The hash of the record's first event, where it counts for dedup with the key.
    pub first_event: Option<u64>,
    /// The prepared form in the store's binary encoding.
    pub features: Option<&'a [u8]>,
    record: &'a [u8],
}

impl<'a> Parts<'a> {
    /// Takes a stored value apart.
    pub fn of(bytes: &'a [u8]) -> Result<Self> {
        let corrupt = |reason: &str| StoreError::Corrupt {
            tree: TreeName::Records.as_str(),
            reason: reason.to_owned(),
        };
        let (&version, rest) = bytes.split_first().ok_or_else(|| corrupt("empty value"))?;
        let (first_event, rest) = match version {
            VERSION => (None, rest),
            VERSION_FIRST if rest.len() >= 8 => {
                let (hash, rest) = rest.split_at(8);
                let hash = u64::from_be_bytes(hash.try_into().expect("eight bytes"));
                (Some(hash), rest)
            }
            VERSION_FIRST => return Err(corrupt("cut short").into()),
            _ => return Err(corrupt(&format!("stored record version {version}")).into()),
        };
        let (entity, rest) = match rest.split_first() {
            Some((0, rest)) => (None, rest),
            Some((1, rest)) if rest.len() >= 8 => {
                let (id, rest) = rest.split_at(8);
                let id = u64::from_be_bytes(id.try_into().expect("eight bytes"));
                (Some(GoldenId(id)), rest)
            }
            _ => return Err(corrupt("bad entity").into()),
        };
        if rest.len() < 4 {
            return Err(corrupt("cut short").into());
        }
        let (length, rest) = rest.split_at(4);
        let length = u32::from_le_bytes(length.try_into().expect("four bytes")) as usize;
        if rest.len() < length {
            return Err(corrupt("cut short").into());
        }
        let (features, record) = rest.split_at(length);
        Ok(Parts {
            entity,
            first_event,
            features: (length > 0).then_some(features),
            record,
        })
    }

    /// The source record, decoded.
    pub fn record(&self) -> Result<SourceRecord> {
        Ok(decode_bin(TreeName::Records, self.record)?)
    }

    /// The prepared form, decoded.
    pub fn prepared(&self) -> Result<Option<Prepared>> {
        decode_features(self.features)
    }
}

fn decode_features(bytes: Option<&[u8]>) -> Result<Option<Prepared>> {
    bytes
        .map(|b| decode_bin(TreeName::Records, b).map_err(Into::into))
        .transpose()
}

/// The prepared form in the store's binary encoding.
pub fn encode_features(prepared: &Prepared) -> Result<Vec<u8>> {
    Ok(encode_bin(TreeName::Records, prepared)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cmdm_domain::SourceKey;

    #[test]
    fn a_held_record_reads_back_as_written_and_a_cut_one_is_refused() {
        let key: SourceKey = "web/w1".parse().unwrap();
        let prepared = Prepared {
            key: key.clone(),
            values: [("email".to_owned(), "a@example.com".to_owned())].into(),
            phonetic: Default::default(),
            findings: Vec::new(),
        };
        for (entity, features, first_event) in [
            (None, None, None),
            (Some(GoldenId(7)), None, Some(42)),
            (
                Some(GoldenId(u64::MAX)),
                Some(encode_features(&prepared).unwrap()),
                None,
            ),
            (
                Some(GoldenId(3)),
                Some(encode_features(&prepared).unwrap()),
                Some(u64::MAX),
            ),
        ] {
            let held = Held {
                record: SourceRecord::new(key.clone()),
                entity,
                features,
                first_event,
            };
            let bytes = held.encode().unwrap();
            assert_eq!(bytes[0], if first_event.is_some() { 2 } else { 1 });
            let back = Held::decode(&bytes).unwrap();
            assert_eq!(back.entity, held.entity);
            assert_eq!(back.features, held.features);
            assert_eq!(back.first_event, held.first_event);
            assert_eq!(back.record, held.record);
            for cut in 0..bytes.len() {
                assert!(Held::decode(&bytes[..cut]).is_err(), "cut at {cut}");
            }
        }
    }
}
