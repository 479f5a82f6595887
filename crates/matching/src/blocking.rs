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

/// The blocking keys of a prepared record.
pub fn block_keys(p: &Prepared) -> Vec<BlockKey> {
    let mut keys = Vec::new();
    let mut push = |key: String| keys.push(BlockKey(key));
    for (field, tag) in [(EMAIL, "em"), (PHONE, "ph"), (NATIONAL_ID, "id")] {
        if let Some(v) = p.get(field).filter(|v| !STOP_VALUES.contains(v)) {
            push(format!("{tag}:{v}"));
        }
    }
    let given = p.get(GIVEN_NAME);
    let family = p.get(FAMILY_NAME);
    let given_sound = p.phonetic.get(GIVEN_NAME);
    let family_sound = p.phonetic.get(FAMILY_NAME);
    if let Some(dob) = p.get(DATE_OF_BIRTH) {
        // One tag for both names, so given and family written the other way round meet.
        for sound in [given_sound, family_sound].into_iter().flatten() {
            push(format!("dob-n:{dob}|{sound}"));
        }
        if let Some(pc) = p.get(POSTCODE) {
            push(format!("dob-pc:{dob}|{pc}"));
        }
        if let Some(g) = given {
            // Initials and short forms of the given name (F. ~ Frederik ~ Fred).
            push(format!("dob-gi:{dob}|{}", prefix(g, 1)));
        }
        if let (Some(g), Some(f)) = (given, family) {
            // Day and month swapped or mistyped: the year and both initials still agree.
            push(format!(
                "yob-init:{}|{}|{}",
                &dob[..4],
                prefix(g, 1),
                prefix(f, 1)
            ));
        }
    }
    if let (Some(pc), Some(number)) = (p.get(POSTCODE), p.get(STREET_NUMBER)) {
        push(format!("pc-num:{pc}|{number}"));
    }
    if let (Some(number), Some(street)) = (p.get(STREET_NUMBER), p.get("address_line1")) {
        push(format!("addr:{number}|{}", prefix(street, 5)));
    }
    if let Some(id) = p
        .get(NATIONAL_ID)
        .filter(|v| v.len() >= 6 && !STOP_VALUES.contains(v))
    {
        // Transposed characters keep the same multiset of characters.
        let mut sorted: Vec<char> = id.chars().collect();
        sorted.sort_unstable();
        push(format!(
            "id-sorted:{}",
            sorted.into_iter().collect::<String>()
        ));
    }
    if let (Some(g), Some(f)) = (given, family_sound) {
        push(format!("gi-fs:{}|{f}", prefix(g, 1)));
    }
    if let (Some(g), Some(f)) = (given_sound, family_sound) {
        push(format!("names:{g}|{f}"));
    }
    if let (Some(g), Some(f)) = (given, family) {
        // Given and family names written the other way round.
        let (a, b) = if g <= f { (g, f) } else { (f, g) };
        push(format!("name-set:{a}|{b}"));
    }
    if let Some(pc) = p.get(POSTCODE) {
        if let Some(f) = family {
            push(format!("pc-f:{pc}|{}", prefix(f, 3)));
        }
        if let Some(g) = given {
            push(format!("pc-gi:{pc}|{}", prefix(g, 1)));
        }
    }
    keys.sort();
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
