//! The compact form scoring reads: a prepared record's values laid out by the positions of
//! one model's fields, each with its phonetic code and, for given names, the formal name a
//! nickname stands for. Comparing two compact records takes no map lookup and no
//! allocation, and a million of them take a fraction of the memory of prepared records.

use crate::model::{Kind, Model};
use crate::normalise::formal_given_name;
use crate::prepare::Prepared;

/// A prepared record's values in the order of one model's fields.
///
/// One allocation, so that reading a candidate costs as few cache misses as possible: the
/// number of fields (`u16`), then three cumulative byte offsets into the text per field
/// (the ends of the value, of its phonetic code and of its formal name, `u16` each), then
/// the text. An empty value is an absent one (prepared values are never empty). A record
/// whose values exceed 64 KiB in all is compared on the fields that fit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compact {
    bytes: Box<[u8]>,
}

/// One field of a compact record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct View<'a> {
    pub value: &'a str,
    /// The phonetic code, where the field has one.
    pub phonetic: Option<&'a str>,
    /// The formal given name (`robert` for `bob`); the value itself otherwise.
    pub formal: &'a str,
}

impl Compact {
    /// Lays out `prepared` for `model`'s fields.
    pub fn new(model: &Model, prepared: &Prepared) -> Self {
        let n = model.fields.len().min(0x3FFF);
        let mut text = String::new();
        let mut ends: Vec<u16> = Vec::with_capacity(n * 3);
        let mut full = false;
        for field in model.fields.iter().take(n) {
            let value = prepared.get(&field.field).unwrap_or("");
            let phonetic = prepared
                .phonetic
                .get(&field.field)
                .map_or("", String::as_str);
            let formal = match field.kind {
                Kind::GivenName => formal_given_name(value),
                _ => value,
            };
            let formal = if formal == value { "" } else { formal };
            full = full || text.len() + value.len() + phonetic.len() + formal.len() > 0xFFFF;
            if !full {
                text.push_str(value);
                ends.push(text.len() as u16);
                text.push_str(phonetic);
                ends.push(text.len() as u16);
                text.push_str(formal);
            } else {
                ends.push(text.len() as u16);
                ends.push(text.len() as u16);
            }
            ends.push(text.len() as u16);
        }
        let mut bytes = Vec::with_capacity(2 + ends.len() * 2 + text.len());
        bytes.extend_from_slice(&(n as u16).to_le_bytes());
        for end in ends {
            bytes.extend_from_slice(&end.to_le_bytes());
        }
        bytes.extend_from_slice(text.as_bytes());
        Compact {
            bytes: bytes.into_boxed_slice(),
        }
    }

    #[inline]
    fn end(&self, k: usize) -> usize {
        let at = 2 + 2 * k;
        usize::from(u16::from_le_bytes([self.bytes[at], self.bytes[at + 1]]))
    }

    /// Field `i` (the model's field order), `None` when the record has no value for it.
    #[inline]
    pub fn view(&self, i: usize) -> Option<View<'_>> {
        let n = usize::from(u16::from_le_bytes([self.bytes[0], self.bytes[1]]));
        if i >= n {
            return None;
        }
        let start = if i == 0 { 0 } else { self.end(3 * i - 1) };
        let value_end = self.end(3 * i);
        if value_end == start {
            return None;
        }
        let (phonetic_end, formal_end) = (self.end(3 * i + 1), self.end(3 * i + 2));
        let text = &self.bytes[2 + 6 * n..];
        // Written from `&str`s, so every piece is UTF-8; checked all the same (no unsafe).
        let piece = |a: usize, b: usize| std::str::from_utf8(&text[a..b]).unwrap_or("");
        let value = piece(start, value_end);
        let phonetic = piece(value_end, phonetic_end);
        let formal = piece(phonetic_end, formal_end);
        Some(View {
            value,
            phonetic: (!phonetic.is_empty()).then_some(phonetic),
            formal: if formal.is_empty() { value } else { formal },
        })
    }
}

impl<'a> View<'a> {
    /// A view of a value outside any compact record (the formal name worked out here).
    pub fn of(kind: Kind, value: &'a str, phonetic: Option<&'a str>) -> Self {
        View {
            value,
            phonetic: phonetic.filter(|p| !p.is_empty()),
            formal: match kind {
                Kind::GivenName => formal_given_name(value),
                _ => value,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prepare::{PrepareConfig, prepare, tests::record};

    #[test]
    fn every_value_reads_back_as_prepared() {
        let model = Model::default_person();
        let p = prepare(
            &record(
                "1",
                &[
                    ("given_name", "Bob"),
                    ("family_name", "Smyth"),
                    ("date_of_birth", "1980-02-03"),
                    ("city", "Leeds"),
                ],
            ),
            &PrepareConfig::default(),
        );
        let c = Compact::new(&model, &p);
        for (i, f) in model.fields.iter().enumerate() {
            let view = c.view(i);
            assert_eq!(view.map(|v| v.value), p.get(&f.field), "{}", f.field);
            assert_eq!(
                view.and_then(|v| v.phonetic),
                p.phonetic.get(&f.field).map(String::as_str)
            );
        }
        let given = model
            .fields
            .iter()
            .position(|f| f.field == "given_name")
            .unwrap();
        assert_eq!(c.view(given).unwrap().formal, "robert");
    }
}
