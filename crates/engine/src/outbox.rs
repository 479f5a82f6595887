//! How the outbox keeps a batch's changes until they are published: in the store's
//! binary encoding compressed with LZ4, behind a first byte no JSON value starts with,
//! so that entries written by earlier versions (uncompressed, as JSON, or with times and
//! golden ids as text) still read.
//!
//! Compressed because a batch's entry carries every golden record the batch changed, the
//! largest value a batch writes, and golden records repeat their attribute names and
//! source keys: LZ4 keeps about a quarter of it, for about a millisecond a batch. sled
//! rewrites a leaf of up to 16 such entries whole as the outbox grows (an import
//! publishes nothing until the hub runs), so its bytes count several times over.

use cmdm_domain::{GoldenId, GoldenRecord, OutboundChange, OutboundKind};
use cmdm_store::{StoreError, TreeName, decode, decode_bin, encode_bin, encode_bin_onto};
use serde::{Deserialize, Serialize};

use crate::Result;

/// The first byte of an outbox value in the binary encoding, uncompressed (written
/// before outbox entries were compressed).
const BINARY: u8 = 1;

/// The first byte of an outbox value in the binary encoding compressed by LZ4 (the block
/// format, behind the uncompressed length as u32 LE).
const COMPRESSED: u8 = 2;

/// The first byte of an outbox value in the binary encoding of versions before
/// projection format 5, which wrote times and golden ids as text.
const BINARY_TEXT_TIMES: u8 = 0;

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
    Ok(compress(&encode_bin(TreeName::Outbox, &changes)?))
}

/// The stored value of changes in the binary encoding.
fn compress(binary: &[u8]) -> Vec<u8> {
    // The format byte, then what `lz4_flex::decompress_size_prepended` reads: the
    // length (u32 LE), then the block, compressed straight into place.
    let block = lz4_flex::block::get_maximum_output_size(binary.len());
    let mut out = vec![0; 5 + block];
    out[0] = COMPRESSED;
    out[1..5].copy_from_slice(&(binary.len() as u32).to_le_bytes());
    let written = lz4_flex::block::compress_into(binary, &mut out[5..])
        .expect("the block fits in its largest possible size");
    out.truncate(5 + written);
    out
}

/// The stored value of one batch's changes, each golden record given in the store's
/// binary encoding (as the batch writes it to `entities`), so that it is copied rather
/// than encoded a second time. Byte for byte what [`encode`] makes of the same changes:
/// postcard writes a sequence as its length then its items, a struct as its fields one
/// after the other, and `Some(x)` as 1 then `x`.
pub(crate) fn assemble(changes: &[Stored<&[u8]>]) -> Result<Vec<u8>> {
    let size: usize = changes
        .iter()
        .map(|c| 48 + c.record.map_or(0, <[u8]>::len))
        .sum();
    let mut out = Vec::with_capacity(10 + size);
    out = encode_bin_onto(TreeName::Outbox, &changes.len(), out)?;
    for change in changes {
        let head = (&change.kind, &change.golden_id, &change.survivor_id);
        out = encode_bin_onto(TreeName::Outbox, &head, out)?;
        match change.record {
            Some(record) => {
                out.push(1);
                out.extend_from_slice(record);
            }
            None => out.push(0),
        }
        out = encode_bin_onto(TreeName::Outbox, &(&change.other_id, &change.seq), out)?;
    }
    Ok(compress(&out))
}

/// The changes of a stored outbox value, whichever version wrote it.
pub(crate) fn decode_changes(value: &[u8]) -> Result<Vec<OutboundChange>> {
    Ok(match value.first() {
        Some(&COMPRESSED) => {
            let binary = lz4_flex::decompress_size_prepended(&value[1..]).map_err(|e| {
                StoreError::Corrupt {
                    tree: TreeName::Outbox.as_str(),
                    reason: format!("a compressed outbox entry does not decompress: {e}"),
                }
            })?;
            decode_binary(&binary)?
        }
        Some(&BINARY) => decode_binary(&value[1..])?,
        Some(&BINARY_TEXT_TIMES) => {
            cmdm_domain::encoding::with_text_in_binary(|| decode_binary(&value[1..]))?
        }
        // One JSON change per key in stores written before changes were grouped by batch.
        Some(b'{') => vec![decode(TreeName::Outbox, value)?],
        Some(_) => decode(TreeName::Outbox, value)?,
        None => Err(StoreError::Corrupt {
            tree: TreeName::Outbox.as_str(),
            reason: "empty value".into(),
        })?,
    })
}

fn decode_binary(bytes: &[u8]) -> Result<Vec<OutboundChange>> {
    Ok(
        decode_bin::<Vec<Stored<GoldenRecord>>>(TreeName::Outbox, bytes)?
            .into_iter()
            .map(OutboundChange::from)
            .collect(),
    )
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
    fn changes_assembled_from_encoded_golden_records_are_the_changes_encoded() {
        let changes = changes();
        let stored: Vec<Change<'_>> = changes.iter().map(Change::from).collect();
        let records: Vec<Option<Vec<u8>>> = changes
            .iter()
            .map(|c| {
                c.record
                    .as_ref()
                    .map(|r| encode_bin(TreeName::Entities, r).unwrap())
            })
            .collect();
        let assembled: Vec<Stored<&[u8]>> = changes
            .iter()
            .zip(&records)
            .map(|(c, record)| Stored {
                kind: c.kind,
                golden_id: c.golden_id,
                survivor_id: c.survivor_id,
                record: record.as_deref(),
                other_id: c.other_id,
                seq: c.seq,
            })
            .collect();
        let bytes = assemble(&assembled).unwrap();
        assert_eq!(bytes, encode(&stored).unwrap());
        assert_eq!(decode_changes(&bytes).unwrap(), changes);
    }

    #[test]
    fn entries_earlier_versions_wrote_uncompressed_still_read_and_a_cut_one_is_refused() {
        let changes = changes();
        let stored: Vec<Change<'_>> = changes.iter().map(Change::from).collect();
        let mut old = vec![BINARY];
        old.extend(encode_bin(TreeName::Outbox, &stored).unwrap());
        assert_eq!(decode_changes(&old).unwrap(), changes);
        let current = encode(&stored).unwrap();
        assert_eq!(current[0], COMPRESSED);
        let cut = &current[..current.len() - 3];
        assert!(matches!(
            decode_changes(cut),
            Err(crate::EngineError::Store(StoreError::Corrupt { .. }))
        ));
    }

    /// A change as versions before projection format 5 encoded it: ids and times as
    /// text (its golden record has no attributes, so no times).
    #[derive(Serialize)]
    struct TextChange {
        kind: OutboundKind,
        golden_id: String,
        survivor_id: Option<String>,
        record: Option<TextRecord>,
        other_id: Option<String>,
        seq: u64,
    }

    #[derive(Serialize)]
    struct TextRecord {
        id: String,
        attributes: Vec<()>,
        consents: Vec<()>,
        preferences: Vec<()>,
        members: Vec<cmdm_domain::SourceKey>,
        merged_ids: Vec<String>,
        version: u64,
        contact_points: Vec<String>,
    }

    #[test]
    fn entries_earlier_versions_wrote_with_text_ids_still_read() {
        let changes = changes();
        let text = |id: GoldenId| id.to_string();
        let stored: Vec<TextChange> = changes
            .iter()
            .map(|c| TextChange {
                kind: c.kind,
                golden_id: text(c.golden_id),
                survivor_id: c.survivor_id.map(text),
                record: c.record.as_ref().map(|r| TextRecord {
                    id: text(r.id),
                    attributes: vec![],
                    consents: vec![],
                    preferences: vec![],
                    members: r.members.clone(),
                    merged_ids: r.merged_ids.iter().copied().map(text).collect(),
                    version: r.version,
                    contact_points: r.contact_points.clone(),
                }),
                other_id: c.other_id.map(text),
                seq: c.seq,
            })
            .collect();
        let mut old = vec![BINARY_TEXT_TIMES];
        old.extend(encode_bin(TreeName::Outbox, &stored).unwrap());
        assert_eq!(decode_changes(&old).unwrap(), changes);
        // Read as current, the same bytes do not give these changes.
        let mut current = old.clone();
        current[0] = BINARY;
        assert_ne!(decode_changes(&current).ok(), Some(changes));
    }

    #[test]
    fn times_and_golden_ids_are_numbers_in_binary_and_text_in_json() {
        let time = cmdm_domain::Timestamp(1_764_000_000_123_456);
        let bytes = encode_bin(TreeName::Entities, &time).unwrap();
        assert!(bytes.len() <= 10, "{bytes:?}");
        assert_eq!(
            decode_bin::<cmdm_domain::Timestamp>(TreeName::Entities, &bytes).unwrap(),
            time
        );
        assert_eq!(
            serde_json::to_string(&time).unwrap(),
            "\"2025-11-24T16:00:00.123456Z\""
        );
        assert_eq!(encode_bin(TreeName::Entities, &GoldenId(42)).unwrap(), [42]);
        assert_eq!(
            serde_json::to_string(&GoldenId(42)).unwrap(),
            "\"G0000000042\""
        );
        assert_eq!(
            serde_json::from_str::<GoldenId>("\"G0000000042\"").unwrap(),
            GoldenId(42)
        );
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
