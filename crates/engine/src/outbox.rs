//! How the outbox keeps a batch's changes until they are published: in the store's
//! binary encoding, behind a first byte no JSON value starts with, so that entries
//! written as JSON by earlier versions still read.

use cmdm_domain::{GoldenId, GoldenRecord, OutboundChange, OutboundKind};
use cmdm_store::{StoreError, TreeName, decode, decode_bin, encode_bin};
use serde::{Deserialize, Serialize};

use crate::Result;

/// The first byte of an outbox value in the binary encoding.
const BINARY: u8 = 0;

/// A change as stored: every field written, as the binary encoding needs (the change
/// feed's JSON leaves absent ones out). `R` is the golden record, borrowed to encode.
#[derive(Serialize, Deserialize)]
pub(crate) struct Stored<R> {
    pub kind: OutboundKind,
    pub golden_id: GoldenId,
    pub survivor_id: Option<GoldenId>,
    pub record: Option<R>,
    pub other_id: Option<GoldenId>,
    pub seq: u64,
}

/// A change about to be stored, borrowing its golden record.
pub(crate) type Change<'a> = Stored<&'a GoldenRecord>;

impl<'a> From<&'a OutboundChange> for Change<'a> {
    fn from(c: &'a OutboundChange) -> Self {
        Stored {
            kind: c.kind,
            golden_id: c.golden_id,
            survivor_id: c.survivor_id,
            record: c.record.as_ref(),
            other_id: c.other_id,
            seq: c.seq,
        }
    }
}

impl From<Stored<GoldenRecord>> for OutboundChange {
    fn from(s: Stored<GoldenRecord>) -> Self {
        OutboundChange {
            kind: s.kind,
            golden_id: s.golden_id,
            survivor_id: s.survivor_id,
            record: s.record,
            other_id: s.other_id,
            seq: s.seq,
        }
    }
}

/// The stored value of one batch's changes.
pub(crate) fn encode(changes: &[Change<'_>]) -> Result<Vec<u8>> {
    let mut bytes = vec![BINARY];
    bytes.extend(encode_bin(TreeName::Outbox, &changes)?);
    Ok(bytes)
}

/// The changes of a stored outbox value, whichever version wrote it.
pub(crate) fn decode_changes(value: &[u8]) -> Result<Vec<OutboundChange>> {
    Ok(match value.first() {
        Some(&BINARY) => decode_bin::<Vec<Stored<GoldenRecord>>>(TreeName::Outbox, &value[1..])?
            .into_iter()
            .map(OutboundChange::from)
            .collect(),
        // One JSON change per key in stores written before changes were grouped by batch.
        Some(b'{') => vec![decode(TreeName::Outbox, value)?],
        Some(_) => decode(TreeName::Outbox, value)?,
        None => Err(StoreError::Corrupt {
            tree: TreeName::Outbox.as_str(),
            reason: "empty value".into(),
        })?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn changes() -> Vec<OutboundChange> {
        let record = GoldenRecord {
            id: GoldenId(7),
            attributes: Default::default(),
            consents: Default::default(),
            preferences: Default::default(),
            members: vec![cmdm_domain::SourceKey::new("web", "w-1").unwrap()],
            merged_ids: vec![GoldenId(9)],
            version: 12,
            contact_points: vec!["email:ann@example.org".into()],
        };
        vec![
            OutboundChange {
                kind: OutboundKind::Upserted,
                golden_id: GoldenId(7),
                survivor_id: None,
                record: Some(record),
                other_id: None,
                seq: 12,
            },
            OutboundChange {
                kind: OutboundKind::Merged,
                golden_id: GoldenId(9),
                survivor_id: Some(GoldenId(7)),
                record: None,
                other_id: None,
                seq: 12,
            },
        ]
    }

    #[test]
    fn changes_read_back_as_written() {
        let changes = changes();
        let stored: Vec<Change<'_>> = changes.iter().map(Change::from).collect();
        assert_eq!(decode_changes(&encode(&stored).unwrap()).unwrap(), changes);
    }

    #[test]
    fn entries_earlier_versions_wrote_as_json_still_read() {
        let changes = changes();
        let list = serde_json::to_vec(&changes).unwrap();
        assert_eq!(decode_changes(&list).unwrap(), changes);
        let one = serde_json::to_vec(&changes[1]).unwrap();
        assert_eq!(decode_changes(&one).unwrap(), vec![changes[1].clone()]);
    }
}
