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
/// number of fields (two bytes), whether the offsets that follow take one byte or two
/// (one byte, `0` or `1`), then three cumulative byte offsets into the text per field (the
/// ends of the value, of its phonetic code and of its formal name), then the text. Every
/// header byte is ASCII (seven bits), so the whole is one `str` whose pieces are sliced
/// without checking their UTF-8 again; most records' text is under 128 bytes, so their
/// offsets take one byte each, which halves the header of a million records held in
/// memory. An empty value is an absent one (prepared values are never empty). A record
/// whose values exceed 16 KiB in all is compared on the fields that fit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compact {
    text: Box<str>,
}

/// The largest number a header entry holds (two bytes of seven bits).
const MAX: usize = 0x3FFF;

/// The largest offset one byte holds.
const NARROW: usize = 0x7F;

/// Where the offsets start.
const ENDS: usize = 3;

/// The bytes each offset takes.
fn width(wide: bool) -> usize {
    if wide { 2 } else { 1 }
}

fn push_number(header: &mut String, n: usize) {
    debug_assert!(n <= MAX);
    header.push(char::from((n >> 7) as u8 & 0x7F));
    header.push(char::from(n as u8 & 0x7F));
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
        let n = model.fields.len().min(MAX);
        // Most records' pieces fit without growing it.
        let mut text = String::with_capacity(128);
        let mut ends: Vec<usize> = Vec::with_capacity(n * 3);
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
            full = full || text.len() + value.len() + phonetic.len() + formal.len() > MAX;
            if !full {
                text.push_str(value);
                ends.push(text.len());
                text.push_str(phonetic);
                ends.push(text.len());
                text.push_str(formal);
            } else {
                ends.push(text.len());
                ends.push(text.len());
            }
            ends.push(text.len());
        }
        let wide = text.len() > NARROW;
        let mut whole = String::with_capacity(ENDS + ends.len() * width(wide) + text.len());
        push_number(&mut whole, n);
        whole.push(char::from(u8::from(wide)));
        for end in ends {
            if wide {
                push_number(&mut whole, end);
            } else {
                whole.push(char::from(end as u8));
            }
        }
        whole.push_str(&text);
        Compact {
            text: whole.into_boxed_str(),
        }
    }

    #[inline]
    fn number(&self, at: usize) -> usize {
        let b = self.text.as_bytes();
        usize::from(b[at]) << 7 | usize::from(b[at + 1])
    }

    /// Field `i` (the model's field order), `None` when the record has no value for it.
    #[inline]
    pub fn view(&self, i: usize) -> Option<View<'_>> {
        let n = self.number(0);
        if i >= n {
            return None;
        }
        let wide = self.text.as_bytes()[ENDS - 1] == 1;
        let end = |k: usize| {
            if wide {
                self.number(ENDS + 2 * k)
            } else {
                usize::from(self.text.as_bytes()[ENDS + k])
            }
        };
        let start = if i == 0 { 0 } else { end(3 * i - 1) };
        let value_end = end(3 * i);
        if value_end == start {
            return None;
        }
        let (phonetic_end, formal_end) = (end(3 * i + 1), end(3 * i + 2));
        let text = self.text.get(ENDS + 3 * n * width(wide)..).unwrap_or("");
        // Every piece was written from a `&str`, so every end is a character boundary.
        let piece = |a: usize, b: usize| text.get(a..b).unwrap_or("");
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

    #[test]
    fn non_ascii_values_and_values_past_the_limit_read_back() {
        let model = Model::default_person();
        let mut p = prepare(
            &record("1", &[("given_name", "Zoe"), ("family_name", "Nunez")]),
            &PrepareConfig::default(),
        );
        // Prepared values are transliterated; the layout must not depend on it.
        p.values.insert("family_name".into(), "núñez-東京".into());
        p.values.insert("city".into(), "x".repeat(MAX));
        let c = Compact::new(&model, &p);
        let at = |name: &str| model.fields.iter().position(|f| f.field == name).unwrap();
        assert_eq!(c.view(at("given_name")).unwrap().value, "zoe");
        assert_eq!(c.view(at("family_name")).unwrap().value, "núñez-東京");
        // The city does not fit: compared as absent, the fields before it intact.
        assert_eq!(c.view(at("city")), None);
    }

    proptest::proptest! {
        /// Any values on any of the model's fields (and on fields it did not know), short
        /// or long enough for two-byte offsets, with or without phonetic codes, read back
        /// as prepared; a field past the model's reads as absent.
        #[test]
        fn any_values_read_back(
            values in proptest::collection::vec(
                (proptest::option::of("[a-zé東 -]{1,40}"), proptest::option::of("[A-Z0-9]{1,6}")),
                16,
            ),
        ) {
            let mut model = Model::default_person();
            model.ensure_field("loyalty_tier");
            model.ensure_field("employer");
            let mut p = prepare(&record("1", &[]), &PrepareConfig::default());
            for (field, (value, phonetic)) in model.fields.iter().zip(&values) {
                if let Some(value) = value {
                    p.values.insert(field.field.clone(), value.clone());
                    if let Some(code) = phonetic {
                        p.phonetic.insert(field.field.clone(), code.clone());
                    }
                }
            }
            let c = Compact::new(&model, &p);
            for (i, f) in model.fields.iter().enumerate() {
                let view = c.view(i);
                proptest::prop_assert_eq!(view.map(|v| v.value), p.get(&f.field), "{}", f.field);
                proptest::prop_assert_eq!(
                    view.and_then(|v| v.phonetic),
                    p.phonetic.get(&f.field).map(String::as_str)
                );
                if let Some(view) = view {
                    let formal = match f.kind {
                        Kind::GivenName => formal_given_name(view.value),
                        _ => view.value,
                    };
                    proptest::prop_assert_eq!(view.formal, formal);
                }
            }
            proptest::prop_assert_eq!(c.view(model.fields.len()), None);
        }
    }
}
