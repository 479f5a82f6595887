//! Canonical forms, so that spelling, case, script and format differences do not hide a
//! match. Every function is idempotent: normalising a normalised value changes nothing.

use rphonetic::{DoubleMetaphone, Encoder};

/// Lowercased, trimmed e-mail address; `None` if it is not one.
pub fn email(raw: &str) -> Option<String> {
    email_onto(raw, String::new())
}

/// [`email`] written onto the end of `out` (a prefix such as `email:`), so that a
/// prefixed form costs one allocation.
pub fn email_onto(raw: &str, mut out: String) -> Option<String> {
    let trimmed = raw.trim();
    let start = out.len();
    if trimmed.is_ascii() {
        out.extend(trimmed.chars().map(|c| c.to_ascii_lowercase()));
    } else {
        out.push_str(&trimmed.to_lowercase());
    }
    let email = &out[start..];
    let (local, domain) = email.split_once('@')?;
    let valid = !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains('@')
        && !email.chars().any(char::is_whitespace);
    valid.then_some(out)
}

/// The phone number in E.164 form (`+441632960001`), given the country calling code to
/// assume for national numbers; `None` if it cannot be one.
pub fn phone(raw: &str, default_country_code: &str) -> Option<String> {
    phone_onto(raw, default_country_code, String::new())
}

/// [`phone`] written onto the end of `out` (a prefix such as `phone:`), so that a
/// prefixed form costs one allocation.
pub fn phone_onto(raw: &str, default_country_code: &str, mut out: String) -> Option<String> {
    let trimmed = raw.trim();
    if trimmed.chars().any(|c| c.is_alphabetic()) {
        return None;
    }
    out.push('+');
    let start = out.len();
    out.extend(trimmed.chars().filter(char::is_ascii_digit));
    if !trimmed.starts_with('+') {
        if out[start..].starts_with("00") {
            out.replace_range(start..start + 2, "");
        } else if out[start..].starts_with('0') {
            out.replace_range(start..start + 1, default_country_code);
        } else {
            out.insert_str(start, default_country_code);
        }
    }
    (8..=15).contains(&(out.len() - start)).then_some(out)
}

/// Folds any script to lowercase ASCII words separated by single spaces; punctuation
/// becomes a separator, apostrophes vanish (`O'Brien` → `obrien`).
pub fn fold(raw: &str) -> String {
    let ascii = deunicode::deunicode(raw).to_lowercase();
    let mut out = String::with_capacity(ascii.len());
    for c in ascii.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c);
        } else if c == '\'' || c == '`' {
            continue;
        } else if !out.ends_with(' ') && !out.is_empty() {
            out.push(' ');
        }
    }
    out.trim_end().to_owned()
}

const TITLES: &[&str] = &[
    "mr", "mrs", "ms", "miss", "mx", "dr", "prof", "sir", "dame", "lady", "lord", "rev", "fr",
    "herr", "frau", "mme", "mlle", "sr", "sra", "dona", "don",
];
const SUFFIXES: &[&str] = &[
    "jr", "jnr", "sr", "snr", "ii", "iii", "iv", "phd", "md", "esq",
];

/// A personal name folded, without titles and suffixes; `None` if nothing is left.
pub fn name(raw: &str) -> Option<String> {
    let folded = fold(raw);
    let words: Vec<&str> = folded.split(' ').filter(|w| !w.is_empty()).collect();
    let mut start = 0;
    while start + 1 < words.len() && TITLES.contains(&words[start]) {
        start += 1;
    }
    let mut end = words.len();
    while end > start + 1 && SUFFIXES.contains(&words[end - 1]) {
        end -= 1;
    }
    let name = words[start..end].join(" ");
    (!name.is_empty() && name.chars().any(|c| c.is_ascii_alphabetic())).then_some(name)
}

/// Double Metaphone primary code of a folded name (spaces ignored).
pub fn phonetic(folded: &str) -> String {
    let joined: String = folded.chars().filter(char::is_ascii_alphabetic).collect();
    if joined.is_empty() {
        return String::new();
    }
    DoubleMetaphone::default().encode(&joined)
}

/// Common given-name diminutives → formal name, for the nickname comparison level.
const NICKNAMES: &[(&str, &str)] = &[
    ("bob", "robert"),
    ("rob", "robert"),
    ("bobby", "robert"),
    ("robbie", "robert"),
    ("bill", "william"),
    ("will", "william"),
    ("billy", "william"),
    ("willy", "william"),
    ("liam", "william"),
    ("jim", "james"),
    ("jimmy", "james"),
    ("jamie", "james"),
    ("jon", "john"),
    ("johnny", "john"),
    ("jack", "john"),
    ("mike", "michael"),
    ("mick", "michael"),
    ("micky", "michael"),
    ("dave", "david"),
    ("davy", "david"),
    ("tom", "thomas"),
    ("tommy", "thomas"),
    ("dick", "richard"),
    ("rick", "richard"),
    ("rich", "richard"),
    ("ricky", "richard"),
    ("ted", "edward"),
    ("ed", "edward"),
    ("eddie", "edward"),
    ("ned", "edward"),
    ("chris", "christopher"),
    ("kit", "christopher"),
    ("steve", "steven"),
    ("stephen", "steven"),
    ("tony", "anthony"),
    ("andy", "andrew"),
    ("drew", "andrew"),
    ("matt", "matthew"),
    ("pat", "patrick"),
    ("paddy", "patrick"),
    ("pete", "peter"),
    ("sam", "samuel"),
    ("joe", "joseph"),
    ("joey", "joseph"),
    ("ben", "benjamin"),
    ("benny", "benjamin"),
    ("dan", "daniel"),
    ("danny", "daniel"),
    ("nick", "nicholas"),
    ("alex", "alexander"),
    ("sandy", "alexander"),
    ("greg", "gregory"),
    ("fred", "frederick"),
    ("freddie", "frederick"),
    ("harry", "henry"),
    ("hank", "henry"),
    ("charlie", "charles"),
    ("chuck", "charles"),
    ("larry", "lawrence"),
    ("tim", "timothy"),
    ("ken", "kenneth"),
    ("kenny", "kenneth"),
    ("ron", "ronald"),
    ("don", "donald"),
    ("gerry", "gerald"),
    ("jerry", "gerald"),
    ("walt", "walter"),
    ("wally", "walter"),
    ("liz", "elizabeth"),
    ("beth", "elizabeth"),
    ("betty", "elizabeth"),
    ("lizzie", "elizabeth"),
    ("eliza", "elizabeth"),
    ("bess", "elizabeth"),
    ("libby", "elizabeth"),
    ("kate", "katherine"),
    ("katie", "katherine"),
    ("kathy", "katherine"),
    ("cathy", "katherine"),
    ("catherine", "katherine"),
    ("kathleen", "katherine"),
    ("maggie", "margaret"),
    ("meg", "margaret"),
    ("peggy", "margaret"),
    ("marge", "margaret"),
    ("molly", "mary"),
    ("polly", "mary"),
    ("mae", "mary"),
    ("sue", "susan"),
    ("susie", "susan"),
    ("jenny", "jennifer"),
    ("jen", "jennifer"),
    ("jess", "jessica"),
    ("becky", "rebecca"),
    ("becca", "rebecca"),
    ("patty", "patricia"),
    ("trish", "patricia"),
    ("debbie", "deborah"),
    ("deb", "deborah"),
    ("mandy", "amanda"),
    ("vicky", "victoria"),
    ("nell", "eleanor"),
    ("nellie", "eleanor"),
    ("ellie", "eleanor"),
    ("annie", "ann"),
    ("anne", "ann"),
    ("anna", "ann"),
    ("nancy", "ann"),
    ("abby", "abigail"),
    ("sally", "sarah"),
    ("sara", "sarah"),
    ("dot", "dorothy"),
    ("dolly", "dorothy"),
    ("fanny", "frances"),
    ("frankie", "frances"),
    ("frank", "francis"),
    ("gina", "regina"),
    ("tess", "theresa"),
    ("terry", "theresa"),
    ("val", "valerie"),
    ("connie", "constance"),
];

/// The formal form of a folded given name if it is a known diminutive, else itself.
pub fn formal_given_name(folded: &str) -> &str {
    FORMAL_NAMES.get(folded).copied().unwrap_or(folded)
}

/// `NICKNAMES` by nickname, the first listed where one is listed twice.
static FORMAL_NAMES: std::sync::LazyLock<foldhash::HashMap<&'static str, &'static str>> =
    std::sync::LazyLock::new(|| {
        let mut formal = foldhash::HashMap::default();
        for &(nick, name) in NICKNAMES {
            formal.entry(nick).or_insert(name);
        }
        formal
    });

/// Whether a date order is day-first or month-first for ambiguous `01/02/2000`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DateOrder {
    /// 31/12/2000 (most of the world).
    #[default]
    Dmy,
    /// 12/31/2000 (United States).
    Mdy,
}

/// A date as `YYYY-MM-DD` from `YYYY-MM-DD`, `YYYYMMDD`, `YYYY/MM/DD`, `DD/MM/YYYY` or
/// `MM/DD/YYYY` (by `order`, or whichever is the only valid reading), with `-`, `/` or `.`.
pub fn date(raw: &str, order: DateOrder) -> Option<String> {
    let t = raw.trim();
    let digits_only = t.bytes().all(|b| b.is_ascii_digit());
    let (y, m, d) = if digits_only && t.len() == 8 {
        (
            t[0..4].parse().ok()?,
            t[4..6].parse().ok()?,
            t[6..8].parse().ok()?,
        )
    } else {
        let parts: Vec<&str> = t
            .split(['-', '/', '.', ' '])
            .filter(|p| !p.is_empty())
            .collect();
        if parts.len() != 3 || parts.iter().any(|p| !p.bytes().all(|b| b.is_ascii_digit())) {
            return None;
        }
        let n: Vec<u32> = parts
            .iter()
            .map(|p| p.parse().ok())
            .collect::<Option<_>>()?;
        if parts[0].len() == 4 {
            (n[0], n[1], n[2])
        } else if parts[2].len() == 4 {
            let (first, second) = (n[0], n[1]);
            let day_first = match order {
                DateOrder::Dmy => !(first <= 12 && second > 12),
                DateOrder::Mdy => first > 12,
            };
            if day_first {
                (n[2], second, first)
            } else {
                (n[2], first, second)
            }
        } else {
            return None;
        }
    };
    valid_date(y, m, d).then(|| format!("{y:04}-{m:02}-{d:02}"))
}

fn valid_date(y: u32, m: u32, d: u32) -> bool {
    let days = match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if (y.is_multiple_of(4) && !y.is_multiple_of(100)) || y.is_multiple_of(400) => 29,
        2 => 28,
        _ => return false,
    };
    (1..=2200).contains(&y) && (1..=days).contains(&d)
}

/// Postcode or zip: uppercase letters and digits only.
pub fn postcode(raw: &str) -> Option<String> {
    let code: String = raw
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_uppercase())
        .collect();
    (!code.is_empty()).then_some(code)
}

/// An identifier (national id, account number): letters and digits, uppercase.
pub fn identifier(raw: &str) -> Option<String> {
    postcode(raw)
}

const ADDRESS_WORDS: &[(&str, &str)] = &[
    ("st", "street"),
    ("str", "street"),
    ("rd", "road"),
    ("ave", "avenue"),
    ("av", "avenue"),
    ("dr", "drive"),
    ("ln", "lane"),
    ("ct", "court"),
    ("pl", "place"),
    ("sq", "square"),
    ("blvd", "boulevard"),
    ("hwy", "highway"),
    ("cres", "crescent"),
    ("cr", "crescent"),
    ("tce", "terrace"),
    ("ter", "terrace"),
    ("pde", "parade"),
    ("cl", "close"),
    ("cct", "circuit"),
    ("gr", "grove"),
    ("gdns", "gardens"),
    ("mt", "mount"),
    ("apt", "apartment"),
    ("n", "north"),
    ("s", "south"),
    ("e", "east"),
    ("w", "west"),
    ("nth", "north"),
];

/// Free text (address lines, towns, places): folded, with common address abbreviations
/// written out.
pub fn text(raw: &str) -> Option<String> {
    let folded = fold(raw);
    let words: Vec<&str> = folded
        .split(' ')
        .filter(|w| !w.is_empty())
        .map(|w| {
            ADDRESS_WORDS
                .iter()
                .find(|(abbr, _)| *abbr == w)
                .map_or(w, |(_, full)| full)
        })
        .collect();
    let text = words.join(" ");
    (!text.is_empty()).then_some(text)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn email_is_case_and_space_insensitive() {
        assert_eq!(
            email("  Ann.Lee@Example.ORG ").as_deref(),
            Some("ann.lee@example.org")
        );
        assert_eq!(email("not an email"), None);
        assert_eq!(email("a@b"), None);
    }

    #[test]
    fn phone_forms_agree_in_e164() {
        let expected = Some("+441632960001".to_owned());
        assert_eq!(phone("+44 1632 960001", "44"), expected);
        assert_eq!(phone("0044 1632 960001", "44"), expected);
        assert_eq!(phone("01632 960001", "44"), expected);
        assert_eq!(phone("n/a", "44"), None);
        assert_eq!(phone("12", "44"), None);
    }

    #[test]
    fn names_fold_scripts_titles_and_suffixes() {
        assert_eq!(
            name("Dr. José  O'Brien-Smith Jr.").as_deref(),
            Some("jose obrien smith")
        );
        assert_eq!(name("Müller").as_deref(), Some("muller"));
        assert_eq!(
            name("Mr"),
            Some("mr".to_owned()),
            "a lone title is kept as the name"
        );
        assert_eq!(name(" - "), None);
        assert_eq!(phonetic("smith"), phonetic("smyth"));
        assert_eq!(formal_given_name("bob"), "robert");
        assert_eq!(formal_given_name("zoe"), "zoe");
    }

    #[test]
    fn dates_in_the_datasets_formats() {
        assert_eq!(
            date("19560409", DateOrder::Dmy).as_deref(),
            Some("1956-04-09")
        );
        assert_eq!(
            date("1630-08-01", DateOrder::Dmy).as_deref(),
            Some("1630-08-01")
        );
        assert_eq!(
            date("05/06/1994", DateOrder::Mdy).as_deref(),
            Some("1994-05-06")
        );
        assert_eq!(
            date("05/06/1994", DateOrder::Dmy).as_deref(),
            Some("1994-06-05")
        );
        assert_eq!(
            date("09/29/1994", DateOrder::Dmy).as_deref(),
            Some("1994-09-29"),
            "only valid reading"
        );
        assert_eq!(date("19560231", DateOrder::Dmy), None);
        assert_eq!(date("unknown", DateOrder::Dmy), None);
    }

    #[test]
    fn addresses_expand_abbreviations() {
        assert_eq!(text("12 Wallaby Pl.").as_deref(), Some("12 wallaby place"));
        assert_eq!(postcode("sw1a 1aa").as_deref(), Some("SW1A1AA"));
    }

    proptest! {
        #[test]
        fn normalisers_are_idempotent(s in "\\\\PC{0,40}") {
            if let Some(n) = name(&s) { prop_assert_eq!(name(&n), Some(n.clone())); }
            if let Some(t) = text(&s) { prop_assert_eq!(text(&t), Some(t.clone())); }
            if let Some(e) = email(&s) { prop_assert_eq!(email(&e), Some(e.clone())); }
            if let Some(p) = postcode(&s) { prop_assert_eq!(postcode(&p), Some(p.clone())); }
            if let Some(p) = phone(&s, "44") { prop_assert_eq!(phone(&p, "44"), Some(p.clone())); }
            if let Some(d) = date(&s, DateOrder::Dmy) { prop_assert_eq!(date(&d, DateOrder::Dmy), Some(d.clone())); }
            let f = fold(&s);
            prop_assert_eq!(fold(&f), f);
        }

        #[test]
        fn prefixed_contact_points_are_the_plain_forms_prefixed(
            s in "[ +0-9()a-zA-ZΣσ.@-]{0,24}",
            code in "[1-9][0-9]{0,2}",
        ) {
            // What the two did before they wrote onto a given prefix.
            let email_before = {
                let email = s.trim().to_lowercase();
                email.split_once('@').and_then(|(local, domain)| {
                    (!local.is_empty()
                        && domain.contains('.')
                        && !domain.starts_with('.')
                        && !domain.ends_with('.')
                        && !domain.contains('@')
                        && !email.chars().any(char::is_whitespace))
                    .then(|| email.clone())
                })
            };
            let phone_before = {
                let trimmed = s.trim();
                let digits: String = trimmed.chars().filter(char::is_ascii_digit).collect();
                let international = if trimmed.starts_with('+') {
                    digits
                } else if let Some(rest) = digits.strip_prefix("00") {
                    rest.to_owned()
                } else if let Some(rest) = digits.strip_prefix('0') {
                    format!("{code}{rest}")
                } else {
                    format!("{code}{digits}")
                };
                (!trimmed.chars().any(char::is_alphabetic) && (8..=15).contains(&international.len()))
                    .then(|| format!("+{international}"))
            };
            prop_assert_eq!(email(&s), email_before.clone());
            prop_assert_eq!(email_onto(&s, "email:".into()), email_before.map(|e| format!("email:{e}")));
            prop_assert_eq!(phone(&s, &code), phone_before.clone());
            prop_assert_eq!(phone_onto(&s, &code, "phone:".into()), phone_before.map(|p| format!("phone:{p}")));
        }

        #[test]
        fn dates_agree_across_formats(y in 1800u32..2100, m in 1u32..=12, d in 1u32..=28) {
            let iso = format!("{y:04}-{m:02}-{d:02}");
            prop_assert_eq!(date(&format!("{y:04}{m:02}{d:02}"), DateOrder::Dmy), Some(iso.clone()));
            prop_assert_eq!(date(&format!("{m:02}/{d:02}/{y:04}"), DateOrder::Mdy), Some(iso.clone()));
            prop_assert_eq!(date(&format!("{d:02}.{m:02}.{y:04}"), DateOrder::Dmy), Some(iso));
        }
    }
}
