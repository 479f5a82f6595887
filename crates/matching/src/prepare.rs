//! Preparation: a source record's attributes normalised once into the values matching
//! compares and blocks on, with data-quality findings for values that do not parse.

use std::collections::BTreeMap;

use cmdm_domain::{SourceKey, SourceRecord};
use serde::{Deserialize, Serialize};

use crate::normalise::{self, DateOrder};

/// How attributes are read before matching.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PrepareConfig {
    /// Calling code assumed for phone numbers written without one.
    pub default_country_code: String,
    /// Reading of ambiguous dates such as 01/02/2000.
    pub date_order: DateOrder,
}

impl Default for PrepareConfig {
    fn default() -> Self {
        PrepareConfig {
            default_country_code: "44".to_owned(),
            date_order: DateOrder::Dmy,
        }
    }
}

/// The attributes with a known meaning; any other attribute is compared as free text.
pub mod fields {
    pub const GIVEN_NAME: &str = "given_name";
    pub const MIDDLE_NAME: &str = "middle_name";
    pub const FAMILY_NAME: &str = "family_name";
    pub const FULL_NAME: &str = "full_name";
    pub const DATE_OF_BIRTH: &str = "date_of_birth";
    pub const EMAIL: &str = "email";
    pub const PHONE: &str = "phone";
    pub const NATIONAL_ID: &str = "national_id";
    pub const POSTCODE: &str = "postcode";
    pub const STREET_NUMBER: &str = "street_number";
    pub const GENDER: &str = "gender";
}

/// A record ready for blocking and comparison.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Prepared {
    pub key: SourceKey,
    /// Attribute → normalised value.
    pub values: BTreeMap<String, String>,
    /// Name attribute → phonetic code.
    pub phonetic: BTreeMap<String, String>,
    /// Values kept raw because they did not parse (`date_of_birth: "31/02/99" is not a date`).
    #[serde(default)]
    pub findings: Vec<String>,
}

impl Prepared {
    /// A normalised value.
    pub fn get(&self, field: &str) -> Option<&str> {
        self.values.get(field).map(String::as_str)
    }
}

/// Normalises every attribute of a record.
pub fn prepare(record: &SourceRecord, config: &PrepareConfig) -> Prepared {
    use fields::*;
    let mut prepared = Prepared {
        key: record.key.clone(),
        values: BTreeMap::new(),
        phonetic: BTreeMap::new(),
        findings: Vec::new(),
    };
    if !record.is_active() {
        return prepared;
    }
    for (name, raw, _) in record.live_attributes() {
        if raw.trim().is_empty() {
            continue;
        }
        let (normalised, kind) = match name {
            GIVEN_NAME | MIDDLE_NAME | FAMILY_NAME | FULL_NAME => (normalise::name(raw), "a name"),
            DATE_OF_BIRTH => (normalise::date(raw, config.date_order), "a date"),
            EMAIL => (normalise::email(raw), "an e-mail address"),
            PHONE => (
                normalise::phone(raw, &config.default_country_code),
                "a phone number",
            ),
            NATIONAL_ID | POSTCODE => (normalise::identifier(raw), "an identifier"),
            STREET_NUMBER | GENDER => (
                Some(normalise::fold(raw)).filter(|v| !v.is_empty()),
                "a value",
            ),
            _ => (normalise::text(raw), "text"),
        };
        match normalised {
            Some(value) => {
                prepared.values.insert(name.to_owned(), value);
            }
            None => prepared
                .findings
                .push(format!("{name}: `{raw}` is not {kind}")),
        }
    }
    // A full name alone stands in for its given and family names.
    if let Some(full) = prepared.values.get(FULL_NAME).cloned() {
        let words: Vec<&str> = full.split(' ').collect();
        if words.len() >= 2 {
            prepared
                .values
                .entry(GIVEN_NAME.to_owned())
                .or_insert_with(|| words[0].to_owned());
            prepared
                .values
                .entry(FAMILY_NAME.to_owned())
                .or_insert_with(|| words[words.len() - 1].to_owned());
        }
    }
    for name in [GIVEN_NAME, MIDDLE_NAME, FAMILY_NAME] {
        if let Some(value) = prepared.values.get(name) {
            let code = normalise::phonetic(value);
            if !code.is_empty() {
                prepared.phonetic.insert(name.to_owned(), code);
            }
        }
    }
    prepared
}

#[cfg(test)]
pub(crate) mod tests {
    use cmdm_domain::event::ProfilePatch;
    use cmdm_domain::{Payload, Stamp, Timestamp};

    use super::*;

    pub(crate) fn record(subject: &str, pairs: &[(&str, &str)]) -> SourceRecord {
        let mut r = SourceRecord::new(SourceKey::new("test", subject).unwrap());
        let patch = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), Some((*v).to_owned())))
            .collect();
        r.apply(
            &Payload::Profile(ProfilePatch(patch)),
            Stamp {
                time: Timestamp(1),
                seq: 1,
            },
        );
        r
    }

    #[test]
    fn unparseable_values_are_findings_not_losses() {
        let r = record(
            "1",
            &[
                ("given_name", "Ann"),
                ("date_of_birth", "31/02/1999"),
                ("email", "nope"),
            ],
        );
        let p = prepare(&r, &PrepareConfig::default());
        assert_eq!(p.get("given_name"), Some("ann"));
        assert_eq!(p.get("date_of_birth"), None);
        assert_eq!(p.findings.len(), 2);
        assert!(p.findings[0].contains("31/02/1999"));
        assert_eq!(
            r.value("date_of_birth"),
            Some("31/02/1999"),
            "the raw value is kept"
        );
    }

    #[test]
    fn full_name_fills_given_and_family() {
        let r = record("1", &[("full_name", "Dr Thomas de Clifford")]);
        let p = prepare(&r, &PrepareConfig::default());
        assert_eq!(p.get("given_name"), Some("thomas"));
        assert_eq!(p.get("family_name"), Some("clifford"));
        assert!(p.phonetic.contains_key("family_name"));
    }
}
