//! Synthetic people with duplicates and known truth, for load tests and benchmarks:
//! realistic names, dates of birth, addresses, e-mails and phones, and duplicates that
//! carry the typos, nicknames, missing values and format changes real extracts have.

use std::collections::BTreeMap;

use cmdm_domain::event::ProfilePatch;
use cmdm_domain::{Payload, SourceKey, SourceRecord, Stamp, Timestamp};

/// A small deterministic generator (SplitMix64), so generated data is repeatable.
#[derive(Debug, Clone)]
pub struct SplitMix(pub u64);

impl SplitMix {
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

const GIVEN: &[&str] = &[
    "james",
    "mary",
    "john",
    "patricia",
    "robert",
    "jennifer",
    "michael",
    "linda",
    "william",
    "elizabeth",
    "david",
    "barbara",
    "richard",
    "susan",
    "joseph",
    "jessica",
    "thomas",
    "sarah",
    "charles",
    "karen",
    "christopher",
    "nancy",
    "daniel",
    "lisa",
    "matthew",
    "margaret",
    "anthony",
    "betty",
    "mark",
    "sandra",
    "donald",
    "ashley",
    "steven",
    "kimberly",
    "paul",
    "emily",
    "andrew",
    "donna",
    "joshua",
    "michelle",
    "kenneth",
    "dorothy",
    "kevin",
    "carol",
    "brian",
    "amanda",
    "george",
    "melissa",
    "edward",
    "deborah",
    "ronald",
    "stephanie",
    "timothy",
    "rebecca",
    "jason",
    "sharon",
    "jeffrey",
    "laura",
    "ryan",
    "cynthia",
    "jacob",
    "kathleen",
    "gary",
    "amy",
    "nicholas",
    "shirley",
    "eric",
    "angela",
    "jonathan",
    "helen",
    "stephen",
    "anna",
    "larry",
    "brenda",
    "justin",
    "pamela",
    "scott",
    "nicole",
    "brandon",
    "emma",
    "benjamin",
    "samantha",
    "samuel",
    "katherine",
    "frank",
    "christine",
    "gregory",
    "debra",
    "raymond",
    "rachel",
    "alexander",
    "catherine",
    "patrick",
    "carolyn",
    "jack",
    "janet",
    "dennis",
    "ruth",
    "jerry",
    "maria",
    "tyler",
    "heather",
    "aaron",
    "diane",
    "jose",
    "virginia",
    "adam",
    "julie",
    "henry",
    "joyce",
    "nathan",
    "victoria",
    "douglas",
    "olivia",
    "zachary",
    "kelly",
    "peter",
    "christina",
    "kyle",
    "lauren",
    "walter",
    "joan",
    "ethan",
    "evelyn",
    "jeremy",
    "judith",
    "harold",
    "megan",
    "keith",
    "cheryl",
    "christian",
    "andrea",
    "roger",
    "hannah",
    "noah",
    "martha",
    "gerald",
    "jacqueline",
    "carl",
    "frances",
    "terry",
    "gloria",
    "sean",
    "ann",
    "austin",
    "teresa",
    "arthur",
    "kathryn",
    "lawrence",
    "sara",
    "jesse",
    "janice",
    "dylan",
    "jean",
    "bryan",
    "alice",
    "joe",
    "madison",
    "jordan",
    "doris",
    "billy",
    "abigail",
    "bruce",
    "julia",
    "albert",
    "judy",
    "willie",
    "grace",
    "gabriel",
    "denise",
    "logan",
    "amber",
    "alan",
    "marilyn",
    "juan",
    "beverly",
    "wayne",
    "danielle",
    "roy",
    "theresa",
    "ralph",
    "sophia",
    "randy",
    "marie",
    "eugene",
    "diana",
    "vincent",
    "brittany",
    "russell",
    "natalie",
    "elijah",
    "isabella",
    "louis",
    "charlotte",
    "bobby",
    "rose",
    "philip",
    "alexis",
];

const FAMILY: &[&str] = &[
    "smith",
    "johnson",
    "williams",
    "brown",
    "jones",
    "garcia",
    "miller",
    "davis",
    "rodriguez",
    "martinez",
    "hernandez",
    "lopez",
    "gonzalez",
    "wilson",
    "anderson",
    "thomas",
    "taylor",
    "moore",
    "jackson",
    "martin",
    "lee",
    "perez",
    "thompson",
    "white",
    "harris",
    "sanchez",
    "clark",
    "ramirez",
    "lewis",
    "robinson",
    "walker",
    "young",
    "allen",
    "king",
    "wright",
    "scott",
    "torres",
    "nguyen",
    "hill",
    "flores",
    "green",
    "adams",
    "nelson",
    "baker",
    "hall",
    "rivera",
    "campbell",
    "mitchell",
    "carter",
    "roberts",
    "gomez",
    "phillips",
    "evans",
    "turner",
    "diaz",
    "parker",
    "cruz",
    "edwards",
    "collins",
    "reyes",
    "stewart",
    "morris",
    "morales",
    "murphy",
    "cook",
    "rogers",
    "gutierrez",
    "ortiz",
    "morgan",
    "cooper",
    "peterson",
    "bailey",
    "reed",
    "kelly",
    "howard",
    "ramos",
    "kim",
    "cox",
    "ward",
    "richardson",
    "watson",
    "brooks",
    "chavez",
    "wood",
    "james",
    "bennett",
    "gray",
    "mendoza",
    "ruiz",
    "hughes",
    "price",
    "alvarez",
    "castillo",
    "sanders",
    "patel",
    "myers",
    "long",
    "ross",
    "foster",
    "jimenez",
    "powell",
    "jenkins",
    "perry",
    "russell",
    "sullivan",
    "bell",
    "coleman",
    "butler",
    "henderson",
    "barnes",
    "gonzales",
    "fisher",
    "vasquez",
    "simmons",
    "romero",
    "jordan",
    "patterson",
    "alexander",
    "hamilton",
    "graham",
    "reynolds",
    "griffin",
    "wallace",
    "moreno",
    "west",
    "cole",
    "hayes",
    "bryant",
    "herrera",
    "gibson",
    "ellis",
    "tran",
    "medina",
    "aguilar",
    "stevens",
    "murray",
    "ford",
    "castro",
    "marshall",
    "owens",
    "harrison",
    "fernandez",
    "mcdonald",
    "woods",
    "washington",
    "kennedy",
    "wells",
    "vargas",
    "henry",
    "chen",
    "freeman",
    "webb",
    "tucker",
    "guzman",
    "burns",
    "crawford",
    "olson",
    "simpson",
    "porter",
    "hunter",
    "gordon",
    "mendez",
    "silva",
    "shaw",
    "snyder",
    "mason",
    "dixon",
    "munoz",
    "hunt",
    "hicks",
    "holmes",
    "palmer",
    "wagner",
    "black",
    "robertson",
    "boyd",
    "rose",
    "stone",
    "salazar",
    "fox",
    "warren",
    "mills",
    "meyer",
    "rice",
    "schmidt",
    "garza",
    "daniels",
    "ferguson",
    "nichols",
    "stephens",
    "soto",
    "weaver",
    "ryan",
    "gardner",
    "payne",
    "grant",
    "dunn",
    "kelley",
    "spencer",
    "hawkins",
    "arnold",
    "pierce",
    "vazquez",
    "hansen",
    "peters",
    "santos",
    "hart",
    "bradley",
    "knight",
    "elliott",
    "cunningham",
    "duncan",
    "armstrong",
    "hudson",
    "carroll",
    "lane",
    "riley",
    "andrews",
    "alvarado",
    "ray",
    "delgado",
    "berry",
    "perkins",
    "hoffman",
    "johnston",
    "matthews",
    "pena",
    "richards",
    "contreras",
    "willis",
    "carpenter",
    "lawrence",
    "sandoval",
    "guerrero",
    "george",
    "chapman",
    "rios",
    "estrada",
    "ortega",
    "watkins",
    "greene",
    "nunez",
    "wheeler",
    "valdez",
    "harper",
    "burke",
    "larson",
    "santiago",
    "maldonado",
    "morrison",
    "franklin",
    "carlson",
    "austin",
    "dominguez",
    "carr",
    "lawson",
    "jacobs",
    "obrien",
    "lynch",
    "singh",
    "vega",
    "bishop",
    "montgomery",
    "oliver",
    "jensen",
    "harvey",
    "williamson",
];

const STREETS: &[&str] = &[
    "high street",
    "station road",
    "church lane",
    "park avenue",
    "victoria road",
    "green lane",
    "manor road",
    "church street",
    "park road",
    "the avenue",
    "london road",
    "queens road",
    "new road",
    "grange road",
    "kings road",
    "north street",
    "mill lane",
    "south street",
    "school lane",
    "the crescent",
    "albert road",
    "richmond road",
    "york road",
    "springfield road",
    "west street",
    "chester road",
    "george street",
    "main street",
    "elm grove",
    "windsor road",
];

const CITIES: &[&str] = &[
    "london",
    "birmingham",
    "leeds",
    "glasgow",
    "sheffield",
    "bradford",
    "liverpool",
    "edinburgh",
    "manchester",
    "bristol",
    "cardiff",
    "leicester",
    "coventry",
    "nottingham",
    "newcastle",
    "belfast",
    "brighton",
    "hull",
    "plymouth",
    "stoke",
    "wolverhampton",
    "derby",
    "swansea",
    "southampton",
    "salford",
    "aberdeen",
    "westminster",
    "portsmouth",
    "york",
    "peterborough",
];

const DOMAINS: &[&str] = &[
    "gmail.com",
    "outlook.com",
    "yahoo.co.uk",
    "hotmail.com",
    "icloud.com",
    "btinternet.com",
];

const NICKNAMES: &[(&str, &str)] = &[
    ("robert", "bob"),
    ("william", "bill"),
    ("james", "jim"),
    ("john", "jon"),
    ("michael", "mike"),
    ("richard", "rick"),
    ("thomas", "tom"),
    ("elizabeth", "liz"),
    ("katherine", "kate"),
    ("margaret", "maggie"),
    ("jennifer", "jenny"),
    ("christopher", "chris"),
    ("anthony", "tony"),
    ("daniel", "dan"),
    ("joseph", "joe"),
    ("samuel", "sam"),
];

/// One generated row: the person it belongs to and its attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SynthRecord {
    pub person: usize,
    pub attributes: BTreeMap<String, String>,
}

impl SynthRecord {
    /// The source record `key` holds with these attributes, set by one event at time 0.
    pub fn source_record(&self, key: SourceKey) -> SourceRecord {
        let mut record = SourceRecord::new(key);
        let patch = self
            .attributes
            .iter()
            .map(|(k, v)| (k.clone(), Some(v.clone())))
            .collect();
        record.apply(
            &Payload::Profile(ProfilePatch(patch)),
            Stamp {
                time: Timestamp(0),
                seq: 1,
            },
        );
        record
    }
}

/// The column order of generated files.
pub const COLUMNS: [&str; 8] = [
    "given_name",
    "family_name",
    "date_of_birth",
    "email",
    "phone",
    "postcode",
    "city",
    "address_line1",
];

fn person(rng: &mut SplitMix, id: usize) -> BTreeMap<String, String> {
    let given = rng.pick(GIVEN);
    let family = rng.pick(FAMILY);
    let year = 1930 + rng.below(75);
    let month = 1 + rng.below(12);
    let day = 1 + rng.below(28);
    let letters = b"ABCDEFGHJKLMNPRSTUWY";
    let postcode = format!(
        "{}{}{} {}{}{}",
        letters[rng.below(letters.len())] as char,
        letters[rng.below(letters.len())] as char,
        1 + rng.below(20),
        rng.below(10),
        letters[rng.below(letters.len())] as char,
        letters[rng.below(letters.len())] as char
    );
    let mut a = BTreeMap::new();
    a.insert("given_name".into(), given.to_owned());
    a.insert("family_name".into(), family.to_owned());
    a.insert(
        "date_of_birth".into(),
        format!("{year:04}-{month:02}-{day:02}"),
    );
    a.insert(
        "email".into(),
        format!("{given}.{family}{}@{}", id % 1000, rng.pick(DOMAINS)),
    );
    a.insert(
        "phone".into(),
        format!("07{:03} {:06}", rng.below(1000), rng.below(1_000_000)),
    );
    a.insert("postcode".into(), postcode);
    a.insert("city".into(), rng.pick(CITIES).to_owned());
    a.insert(
        "address_line1".into(),
        format!("{} {}", 1 + rng.below(200), rng.pick(STREETS)),
    );
    a
}

fn typo(rng: &mut SplitMix, s: &str) -> String {
    let mut chars: Vec<char> = s.chars().collect();
    if chars.len() < 3 {
        return s.to_owned();
    }
    let i = 1 + rng.below(chars.len() - 2);
    match rng.below(3) {
        0 => chars.swap(i, i + 1),
        1 => {
            chars.remove(i);
        }
        _ => chars.insert(i, (b'a' + rng.below(26) as u8) as char),
    }
    chars.into_iter().collect()
}

/// A duplicate of `original` as another system would hold it.
fn duplicate(rng: &mut SplitMix, original: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    let mut a = original.clone();
    let mut changes = 1 + rng.below(3);
    while changes > 0 {
        changes -= 1;
        match rng.below(9) {
            0 => {
                let g = a["given_name"].clone();
                let nick = NICKNAMES
                    .iter()
                    .find(|(formal, _)| *formal == g)
                    .map(|(_, n)| *n);
                let value = nick.map_or_else(|| typo(rng, &g), str::to_owned);
                a.insert("given_name".into(), value);
            }
            1 => {
                let f = typo(rng, &a["family_name"]);
                a.insert("family_name".into(), f);
            }
            2 => {
                // Day and month swapped, or written the other way.
                let d = a["date_of_birth"].clone();
                let (y, m, day) = (&d[0..4], &d[5..7], &d[8..10]);
                let value = if rng.chance(0.5) {
                    format!("{day}/{m}/{y}")
                } else {
                    format!("{y}-{day}-{m}")
                };
                a.insert("date_of_birth".into(), value);
            }
            3 => {
                a.remove("email");
            }
            4 => {
                a.remove("phone");
            }
            5 => {
                if let Some(p) = a.get("phone").map(|p| p.replace(' ', "")) {
                    a.insert("phone".into(), format!("+44 {}", &p[1..]));
                }
            }
            6 => {
                let e = a.get("email").map(|e| e.to_uppercase());
                if let Some(e) = e {
                    a.insert("email".into(), e);
                }
            }
            7 => {
                a.remove("address_line1");
                a.remove("city");
            }
            _ => {
                let p = a["postcode"].replace(' ', "").to_lowercase();
                a.insert("postcode".into(), p);
            }
        }
    }
    a
}

/// Generates `people` people, each with on average `duplicates` extra records, in a
/// shuffled order, deterministic for a seed.
pub fn generate(people: usize, duplicates: f64, seed: u64) -> Vec<SynthRecord> {
    let mut rng = SplitMix(seed);
    let mut out = Vec::with_capacity((people as f64 * (1.0 + duplicates)) as usize);
    for id in 0..people {
        let original = person(&mut rng, id);
        // Geometric number of duplicates with the requested mean.
        let p_more = duplicates / (1.0 + duplicates);
        let mut extra = 0;
        while extra < 8 && rng.chance(p_more) {
            extra += 1;
        }
        for _ in 0..extra {
            out.push(SynthRecord {
                person: id,
                attributes: duplicate(&mut rng, &original),
            });
        }
        out.push(SynthRecord {
            person: id,
            attributes: original,
        });
    }
    for i in (1..out.len()).rev() {
        let j = rng.below(i + 1);
        out.swap(i, j);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_with_duplicates() {
        let a = generate(200, 0.5, 7);
        assert_eq!(a, generate(200, 0.5, 7));
        assert!(a.len() > 250 && a.len() < 400, "{}", a.len());
        let people: std::collections::BTreeSet<usize> = a.iter().map(|r| r.person).collect();
        assert_eq!(people.len(), 200);
    }
}
