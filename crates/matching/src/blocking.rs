//! Blocking: several keys per record, so that records with a typo in one field still meet
//! through another. Keys shared by too many records are generic and produce nothing.

use crate::BlockKey;
use crate::prepare::{Prepared, fields::*};

/// Values that identify no one (placeholders and test data).
const STOP_VALUES: &[&str] = &[
    "test@test.com",
    "test@example.com",
    "noemail@noemail.com",
    "none@none.com",
    "na@na.com",
    "no@email.com",
    "unknown@unknown.com",
    "+440000000000",
    "+10000000000",
    "0",
    "00000000",
    "000000000",
    "999999999",
    "123456789",
    "NA",
    "NONE",
    "UNKNOWN",
];

fn prefix(s: &str, n: usize) -> &str {
    s.char_indices().nth(n).map_or(s, |(i, _)| &s[..i])
}

/// Whether pairs sharing this key may teach the model. Keys made of an address alone
/// bring together whole households; trained on them, expectation-maximisation learns to
/// find households instead of persons. They still find candidates.
pub fn identifies_person(key: &BlockKey) -> bool {
    !["pc-num:", "addr:", "pc-f:", "pc-gi:"]
        .iter()
        .any(|tag| key.0.starts_with(tag))
}

/// A key: its tag, then its parts joined by `|` (`dob-pc:1980-02-03|2600`).
fn key(tag: &str, parts: &[&str]) -> BlockKey {
    let size = tag.len() + 1 + parts.iter().map(|p| p.len() + 1).sum::<usize>();
    let mut text = String::with_capacity(size);
    text.push_str(tag);
    text.push(':');
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            text.push('|');
        }
        text.push_str(part);
    }
    BlockKey(text)
}

/// The blocking keys of a prepared record.
pub fn block_keys(p: &Prepared) -> Vec<BlockKey> {
    let mut keys = Vec::with_capacity(16);
    let identifying = |field| p.get(field).filter(|v| !STOP_VALUES.contains(v));
    let national_id = identifying(NATIONAL_ID);
    for (value, tag) in [
        (identifying(EMAIL), "em"),
        (identifying(PHONE), "ph"),
        (national_id, "id"),
    ] {
        if let Some(v) = value {
            keys.push(key(tag, &[v]));
        }
    }
    let given = p.get(GIVEN_NAME);
    let family = p.get(FAMILY_NAME);
    let given_sound = p.phonetic.get(GIVEN_NAME).map(String::as_str);
    let family_sound = p.phonetic.get(FAMILY_NAME).map(String::as_str);
    let postcode = p.get(POSTCODE);
    let number = p.get(STREET_NUMBER);
    if let Some(dob) = p.get(DATE_OF_BIRTH) {
        // One tag for both names, so given and family written the other way round meet.
        for sound in [given_sound, family_sound].into_iter().flatten() {
            keys.push(key("dob-n", &[dob, sound]));
        }
        if let Some(pc) = postcode {
            keys.push(key("dob-pc", &[dob, pc]));
        }
        if let Some(g) = given {
            // Initials and short forms of the given name (F. ~ Frederik ~ Fred).
            keys.push(key("dob-gi", &[dob, prefix(g, 1)]));
        }
        if let (Some(g), Some(f)) = (given, family) {
            // Day and month swapped or mistyped: the year and both initials still agree.
            keys.push(key("yob-init", &[&dob[..4], prefix(g, 1), prefix(f, 1)]));
        }
    }
    if let (Some(pc), Some(number)) = (postcode, number) {
        keys.push(key("pc-num", &[pc, number]));
    }
    if let (Some(number), Some(street)) = (number, p.get("address_line1")) {
        keys.push(key("addr", &[number, prefix(street, 5)]));
    }
    if let Some(id) = national_id.filter(|v| v.len() >= 6) {
        // Transposed characters keep the same multiset of characters.
        let mut sorted: Vec<char> = id.chars().collect();
        sorted.sort_unstable();
        keys.push(key("id-sorted", &[&sorted.into_iter().collect::<String>()]));
    }
    if let (Some(g), Some(f)) = (given, family_sound) {
        keys.push(key("gi-fs", &[prefix(g, 1), f]));
    }
    if let (Some(g), Some(f)) = (given_sound, family_sound) {
        keys.push(key("names", &[g, f]));
    }
    if let (Some(g), Some(f)) = (given, family) {
        // Given and family names written the other way round.
        let (a, b) = if g <= f { (g, f) } else { (f, g) };
        keys.push(key("name-set", &[a, b]));
    }
    if let Some(pc) = postcode {
        if let Some(f) = family {
            keys.push(key("pc-f", &[pc, prefix(f, 3)]));
        }
        if let Some(g) = given {
            keys.push(key("pc-gi", &[pc, prefix(g, 1)]));
        }
    }
    keys.sort_unstable();
    keys.dedup();
    keys
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prepare::{PrepareConfig, prepare, tests::record};

    #[test]
    fn several_keys_and_no_key_from_placeholders() {
        let r = record(
            "1",
            &[
                ("given_name", "Jon"),
                ("family_name", "Smyth"),
                ("email", "test@test.com"),
                ("date_of_birth", "1980-02-03"),
            ],
        );
        let keys = block_keys(&prepare(&r, &PrepareConfig::default()));
        assert!(keys.iter().all(|k| !k.0.starts_with("em:")), "{keys:?}");
        assert!(keys.iter().any(|k| k.0.starts_with("dob-n:1980-02-03|")));
        assert!(keys.iter().any(|k| k.0 == "yob-init:1980|j|s"));
    }
}
