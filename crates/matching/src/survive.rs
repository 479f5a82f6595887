//! Survivorship: which member's value the golden record shows, attribute by attribute.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use cmdm_domain::golden::GoldenConsent;
use cmdm_domain::{GoldenValue, SourceKey, SourceRecord, Stamp, Timestamp};
use serde::{Deserialize, Serialize};

const DO_NOT_CONTACT: &str = "do_not_contact";

/// How one attribute's golden value is chosen among the entity's records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// The latest by event time; ties to the most trusted source.
    #[default]
    MostRecent,
    /// The most trusted source's value; ties to the latest.
    SourceTrust,
    /// The value most records agree on (compared folded); ties to the latest.
    MostFrequent,
    /// The longest value; ties to the latest.
    MostComplete,
}

/// Survivorship configuration: a strategy per attribute and a source trust order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Survivorship {
    /// Sources from most to least trusted; unlisted sources rank after all listed ones.
    pub source_trust: Vec<String>,
    /// The strategy of attributes not listed in `attributes`.
    pub default: Strategy,
    /// Attribute → strategy.
    pub attributes: BTreeMap<String, Strategy>,
}

impl Survivorship {
    fn trust_rank(&self, source: &str) -> usize {
        self.source_trust
            .iter()
            .position(|s| s == source)
            .unwrap_or(self.source_trust.len())
    }

    fn strategy(&self, attribute: &str) -> Strategy {
        self.attributes
            .get(attribute)
            .copied()
            .unwrap_or(self.default)
    }

    /// Orders a value set at `stamp` by `source` against a golden value held from
    /// `held` = (its record, its event time), as [`Self::prefer`] orders two members'
    /// values, where every member's value was set at `version` or before: `None` where
    /// only the held value's own sequence number, which the golden record does not
    /// keep, would settle it.
    fn prefer_over_held(
        &self,
        source: &SourceKey,
        stamp: Stamp,
        held: (&SourceKey, Timestamp),
        version: u64,
    ) -> Option<Ordering> {
        match stamp.time.cmp(&held.1).then_with(|| {
            self.trust_rank(&held.0.source)
                .cmp(&self.trust_rank(&source.source))
        }) {
            Ordering::Equal => (stamp.seq > version).then_some(Ordering::Greater),
            decided => Some(decided),
        }
    }

    /// Orders two candidate values: `Greater` means `a` should win over `b`.
    fn prefer(&self, a: (&SourceKey, Stamp), b: (&SourceKey, Stamp)) -> Ordering {
        a.1.time
            .cmp(&b.1.time)
            .then_with(|| {
                self.trust_rank(&b.0.source)
                    .cmp(&self.trust_rank(&a.0.source))
            })
            .then_with(|| a.1.seq.cmp(&b.1.seq))
            .then_with(|| b.0.cmp(a.0))
    }
}

/// What survivorship computes for a golden record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Survived {
    pub attributes: BTreeMap<String, GoldenValue>,
    pub consents: BTreeMap<String, GoldenConsent>,
    pub preferences: BTreeMap<String, GoldenValue>,
}

/// Computes the golden values from the entity's active member records.
/// The result depends only on the records, never on the order they are given in.
pub fn survive<'a>(
    members: impl IntoIterator<Item = &'a SourceRecord>,
    rules: &Survivorship,
) -> Survived {
    let offers = gather(members, rules);
    let attributes = offers
        .chosen(rules)
        .map(|(_, (name, value, source, stamp))| (name.to_owned(), golden(value, source, stamp)))
        .collect();
    let mut preferences = offers.preferences;
    if let Some(dnc) = offers.dnc {
        preferences.insert(DO_NOT_CONTACT.to_owned(), dnc);
    }
    Survived {
        attributes,
        consents: offers
            .consents
            .into_iter()
            .map(|(k, (v, _))| (k, v))
            .collect(),
        preferences: preferences.into_iter().map(|(k, (v, _))| (k, v)).collect(),
    }
}

/// The golden values `held`, survived from an entity's members, once the records
/// `joined` join those members, none of which changed: what [`survive`] gives for all
/// of them together, worked out without reading the others. `version` bounds the
/// sequence numbers at which the members' values were set (the golden record's
/// version). `None` where the other members are needed after all: an attribute chosen
/// by frequency, or a tie that only the held value's own sequence number would break.
pub fn survive_onto<'a>(
    mut held: Survived,
    version: u64,
    joined: impl IntoIterator<Item = &'a SourceRecord>,
    rules: &Survivorship,
) -> Option<Survived> {
    let offers = gather(joined, rules);
    for (strategy, (name, value, source, stamp)) in offers.chosen(rules) {
        let wins = match held.attributes.get(name) {
            None => true,
            Some(old) => {
                let recent =
                    || rules.prefer_over_held(source, stamp, (&old.source, old.time), version);
                let order = match strategy {
                    Strategy::MostRecent => recent()?,
                    Strategy::SourceTrust => match rules
                        .trust_rank(&old.source.source)
                        .cmp(&rules.trust_rank(&source.source))
                    {
                        Ordering::Equal => recent()?,
                        decided => decided,
                    },
                    Strategy::MostComplete => {
                        match value.chars().count().cmp(&old.value.chars().count()) {
                            Ordering::Equal => recent()?,
                            decided => decided,
                        }
                    }
                    // How often a value is offered depends on every member.
                    Strategy::MostFrequent => return None,
                };
                order == Ordering::Greater
            }
        };
        if wins {
            held.attributes
                .insert(name.to_owned(), golden(value, source, stamp));
        }
    }
    // A held do-not-contact of `true` is the best of the members' `true`s; any other
    // held value means no member said `true`.
    let held_dnc = held
        .preferences
        .get(DO_NOT_CONTACT)
        .is_some_and(|v| v.value == "true");
    let mut preferences = offers.preferences;
    match offers.dnc {
        Some(dnc) => {
            // A `true` among the joined: it beats whatever else the members say.
            if !held_dnc {
                held.preferences.remove(DO_NOT_CONTACT);
            }
            preferences.insert(DO_NOT_CONTACT.to_owned(), dnc);
        }
        None if held_dnc => {
            preferences.remove(DO_NOT_CONTACT);
        }
        None => {}
    }
    for (item, (value, stamp)) in preferences {
        let wins = match held.preferences.get(&item) {
            None => true,
            Some(old) => {
                rules.prefer_over_held(&value.source, stamp, (&old.source, old.time), version)?
                    == Ordering::Greater
            }
        };
        if wins {
            held.preferences.insert(item, value);
        }
    }
    for (key, (candidate, stamp)) in offers.consents {
        let wins = match held.consents.get(&key) {
            None => true,
            Some(old) => {
                let order = match candidate.status.cmp(&old.status).reverse() {
                    Ordering::Equal => rules.prefer_over_held(
                        &candidate.source,
                        stamp,
                        (&old.source, old.time),
                        version,
                    )?,
                    decided => decided,
                };
                order == Ordering::Greater
            }
        };
        if wins {
            held.consents.insert(key, candidate);
        }
    }
    Some(held)
}

/// What an entity's active records offer: every set attribute, and each preference and
/// consent item's winner with the stamp it won by.
struct Offers<'a> {
    /// Sorted by attribute name.
    attributes: Vec<Offered<'a>>,
    preferences: BTreeMap<String, (GoldenValue, Stamp)>,
    /// The winner among the do-not-contact preferences that say `true`: it holds for the
    /// whole entity, whatever is more recent.
    dnc: Option<(GoldenValue, Stamp)>,
    consents: BTreeMap<String, (GoldenConsent, Stamp)>,
}

fn gather<'a>(
    members: impl IntoIterator<Item = &'a SourceRecord>,
    rules: &Survivorship,
) -> Offers<'a> {
    let mut attributes: Vec<Offered<'_>> = Vec::new();
    let mut preferences: BTreeMap<String, (GoldenValue, Stamp)> = BTreeMap::new();
    let mut consents: BTreeMap<String, (GoldenConsent, Stamp)> = BTreeMap::new();
    let mut dnc_held: BTreeMap<String, (GoldenValue, Stamp)> = BTreeMap::new();
    for record in members.into_iter().filter(|r| r.is_active()) {
        attributes.extend(
            record
                .live_attributes()
                .map(|(name, value, stamp)| (name, value, &record.key, stamp)),
        );
        for (item, value) in &record.preferences {
            offer(
                &mut preferences,
                item,
                &value.value,
                &record.key,
                value.stamp,
                rules,
            );
            if item == DO_NOT_CONTACT && value.value == "true" {
                offer(
                    &mut dnc_held,
                    item,
                    &value.value,
                    &record.key,
                    value.stamp,
                    rules,
                );
            }
        }
        for (key, consent) in &record.consents {
            let c = &consent.value;
            let candidate = GoldenConsent {
                purpose: c.purpose.clone(),
                channel: c.channel,
                status: c.status,
                legal_basis: c.legal_basis.clone(),
                expires_at: c.expires_at.clone(),
                evidence: c.evidence.clone(),
                source: record.key.clone(),
                time: consent.stamp.time,
            };
            // Most restrictive status wins; among equals, the most recent declaration.
            let wins = consents.get(key).is_none_or(|(held, held_stamp)| {
                candidate.status.cmp(&held.status).reverse().then_with(|| {
                    rules.prefer((&record.key, consent.stamp), (&held.source, *held_stamp))
                }) == Ordering::Greater
            });
            if wins {
                consents.insert(key.clone(), (candidate, consent.stamp));
            }
        }
    }
    // Grouped by attribute; which value an attribute gets does not depend on the order.
    attributes.sort_unstable_by(|a, b| a.0.cmp(b.0));
    Offers {
        attributes,
        preferences,
        dnc: dnc_held.remove(DO_NOT_CONTACT),
        consents,
    }
}

impl<'a> Offers<'a> {
    /// Each offered attribute's winner, by the attribute's strategy.
    fn chosen<'s>(
        &'s self,
        rules: &'s Survivorship,
    ) -> impl Iterator<Item = (Strategy, Offered<'a>)> + 's {
        self.attributes
            .chunk_by(|a, b| a.0 == b.0)
            .filter_map(|values| {
                let strategy = rules.strategy(values[0].0);
                choose(values, strategy, rules).map(|chosen| (strategy, chosen))
            })
    }
}

fn golden(value: &str, source: &SourceKey, stamp: Stamp) -> GoldenValue {
    GoldenValue {
        value: value.to_owned(),
        source: source.clone(),
        time: stamp.time,
    }
}

/// An attribute's value offered by a record: (name, value, record, stamp).
type Offered<'a> = (&'a str, &'a str, &'a SourceKey, Stamp);

/// Picks one of an attribute's offered values by the strategy; every tie falls to the
/// most recent rule, so the choice never depends on the order of the records.
fn choose<'a>(
    values: &[Offered<'a>],
    strategy: Strategy,
    rules: &Survivorship,
) -> Option<Offered<'a>> {
    let recent = |a: &Offered<'_>, b: &Offered<'_>| {
        rules
            .prefer((a.2, a.3), (b.2, b.3))
            .then_with(|| b.1.cmp(a.1))
    };
    let folded = |v: &str| crate::normalise::fold(v);
    let frequency = |v: &str| {
        values
            .iter()
            .filter(|(_, w, _, _)| folded(w) == folded(v))
            .count()
    };
    values.iter().copied().max_by(|a, b| match strategy {
        Strategy::MostRecent => recent(a, b),
        Strategy::SourceTrust => rules
            .trust_rank(&b.2.source)
            .cmp(&rules.trust_rank(&a.2.source))
            .then_with(|| recent(a, b)),
        Strategy::MostFrequent => frequency(a.1)
            .cmp(&frequency(b.1))
            .then_with(|| recent(a, b)),
        Strategy::MostComplete => {
            a.1.chars()
                .count()
                .cmp(&b.1.chars().count())
                .then_with(|| recent(a, b))
        }
    })
}

fn offer(
    map: &mut BTreeMap<String, (GoldenValue, Stamp)>,
    name: &str,
    value: &str,
    source: &SourceKey,
    stamp: Stamp,
    rules: &Survivorship,
) {
    let wins = map.get(name).is_none_or(|(held, held_stamp)| {
        rules.prefer((source, stamp), (&held.source, *held_stamp)) == Ordering::Greater
    });
    if wins {
        let golden = GoldenValue {
            value: value.to_owned(),
            source: source.clone(),
            time: stamp.time,
        };
        map.insert(name.to_owned(), (golden, stamp));
    }
}

#[cfg(test)]
mod tests {
    use cmdm_domain::event::{
        Channel, ConsentChange, ConsentStatus, PreferenceChange, ProfilePatch,
    };
    use cmdm_domain::{Payload, Timestamp};

    use super::*;

    fn record(source: &str, time: i64, name: &str) -> SourceRecord {
        let mut r = SourceRecord::new(SourceKey::new(source, "1").unwrap());
        let patch = ProfilePatch([("given_name".to_owned(), Some(name.to_owned()))].into());
        r.apply(
            &Payload::Profile(patch),
            Stamp {
                time: Timestamp(time),
                seq: time as u64,
            },
        );
        r
    }

    fn rules() -> Survivorship {
        Survivorship {
            source_trust: vec!["crm".into(), "web".into()],
            ..Survivorship::default()
        }
    }

    #[test]
    fn most_recent_wins_and_names_its_source() {
        let a = record("web", 10, "Jon");
        let b = record("pos", 20, "John");
        let golden = survive([&a, &b], &rules());
        assert_eq!(golden.attributes["given_name"].value, "John");
        assert_eq!(golden.attributes["given_name"].source, b.key);
        assert_eq!(golden, survive([&b, &a], &rules()));
    }

    #[test]
    fn equal_times_go_to_the_trusted_source() {
        let mut web = record("web", 10, "Jon");
        let crm = record("crm", 10, "John");
        // Arrival order (seq) must not beat trust.
        web.attributes.get_mut("given_name").unwrap().stamp.seq = 99;
        assert_eq!(
            survive([&web, &crm], &rules()).attributes["given_name"].value,
            "John"
        );
    }

    #[test]
    fn strategies_per_attribute() {
        let mut rules = rules();
        rules
            .attributes
            .insert("given_name".into(), Strategy::SourceTrust);
        let web = record("web", 10, "Jon");
        let pos = record("pos", 20, "Jonathan");
        let pos2 = {
            let mut r = record("pos", 30, "Jon");
            r.key.subject = "2".into();
            r
        };
        assert_eq!(
            survive([&web, &pos], &rules).attributes["given_name"].value,
            "Jon"
        );
        rules
            .attributes
            .insert("given_name".into(), Strategy::MostComplete);
        assert_eq!(
            survive([&web, &pos], &rules).attributes["given_name"].value,
            "Jonathan"
        );
        rules
            .attributes
            .insert("given_name".into(), Strategy::MostFrequent);
        let golden = survive([&web, &pos, &pos2], &rules);
        assert_eq!(golden.attributes["given_name"].value, "Jon");
        assert_eq!(
            golden.attributes["given_name"].source, pos2.key,
            "the latest of the agreeing"
        );
    }

    proptest::proptest! {
        #[test]
        fn any_arrival_order_gives_the_same_golden_record(
            times in proptest::collection::vec((0i64..5, 0usize..3, 0usize..4), 1..6),
            rotate in 0usize..6,
            strategy in 0usize..4,
        ) {
            let strategies = [Strategy::MostRecent, Strategy::SourceTrust, Strategy::MostFrequent, Strategy::MostComplete];
            let rules = Survivorship { default: strategies[strategy], ..rules() };
            let sources = ["crm", "web", "pos"];
            let names = ["Jon", "John", "Jonathan", "jon"];
            let records: Vec<SourceRecord> = times
                .iter()
                .enumerate()
                .map(|(i, (t, s, n))| {
                    let mut r = record(sources[*s], *t, names[*n]);
                    r.key.subject = i.to_string().into();
                    r
                })
                .collect();
            let mut shuffled: Vec<&SourceRecord> = records.iter().collect();
            let k = rotate % shuffled.len();
            shuffled.rotate_left(k);
            shuffled.reverse();
            proptest::prop_assert_eq!(survive(&records, &rules), survive(shuffled, &rules));
        }
    }

    /// A consent to marketing by e-mail, declared with nothing else.
    fn marketing_by_email(status: ConsentStatus) -> Payload {
        Payload::Consent(ConsentChange {
            purpose: "marketing".into(),
            channel: Channel::Email,
            status,
            legal_basis: None,
            evidence: None,
            expires_at: None,
            contact_point: None,
        })
    }

    /// A member offering a name, a family name, and maybe a consent and a
    /// do-not-contact, all set at `stamp`: (source, time, name, family name, consent,
    /// do-not-contact), each an index into a short list.
    fn member(
        i: usize,
        (source, time, name, family, consent, dnc): (usize, i64, usize, usize, usize, usize),
        seq: u64,
    ) -> SourceRecord {
        let names = ["Jon", "John", "Jonathan", "jon"];
        let stamp = Stamp {
            time: Timestamp(time),
            seq,
        };
        let mut r = SourceRecord::new(SourceKey::new(["crm", "web", "pos"][source], "1").unwrap());
        r.key.subject = i.to_string().into();
        let patch = ProfilePatch(
            [
                ("given_name".to_owned(), Some(names[name].to_owned())),
                ("family_name".to_owned(), Some(names[family].to_owned())),
            ]
            .into(),
        );
        r.apply(&Payload::Profile(patch), stamp);
        let statuses = [
            ConsentStatus::Withdrawn,
            ConsentStatus::Denied,
            ConsentStatus::Granted,
        ];
        if let Some(&status) = statuses.get(consent) {
            r.apply(&marketing_by_email(status), stamp);
        }
        if let Some(&flag) = [true, false].get(dnc) {
            r.apply(
                &Payload::Preference(PreferenceChange {
                    do_not_contact: Some(flag),
                    ..Default::default()
                }),
                stamp,
            );
        }
        r
    }

    fn offered()
    -> impl proptest::strategy::Strategy<Value = (usize, i64, usize, usize, usize, usize)> {
        (
            0usize..3,
            0i64..3,
            0usize..4,
            0usize..4,
            0usize..4,
            0usize..3,
        )
    }

    proptest::proptest! {
        /// Golden values worked out from the held ones and the records that joined are
        /// those survived from every member; they are worked out wherever no rule needs
        /// the other members.
        #[test]
        fn held_golden_values_and_the_joined_records_give_what_every_member_gives(
            old in proptest::collection::vec(offered(), 1..5),
            joined in proptest::collection::vec(offered(), 1..4),
            late in proptest::bool::ANY,
            strategy in 0usize..4,
        ) {
            let strategies = [Strategy::MostRecent, Strategy::SourceTrust, Strategy::MostFrequent, Strategy::MostComplete];
            let mut rules = Survivorship { default: strategies[strategy], ..rules() };
            // The family name by most recent whatever the default.
            rules.attributes.insert("family_name".into(), Strategy::MostRecent);
            let old: Vec<SourceRecord> = old
                .into_iter()
                .enumerate()
                .map(|(i, o)| member(i, o, i as u64 + 1))
                .collect();
            let version = old.len() as u64;
            // Late: values set before the golden record's version (a record moving in
            // with what it held), whose ties with held values cannot be broken.
            let joined: Vec<SourceRecord> = joined
                .into_iter()
                .enumerate()
                .map(|(j, o)| {
                    let seq = if late { j as u64 + 1 } else { version + 1 + j as u64 };
                    member(old.len() + j, o, seq)
                })
                .collect();
            let every = survive(old.iter().chain(&joined), &rules);
            match survive_onto(survive(&old, &rules), version, &joined, &rules) {
                Some(onto) => proptest::prop_assert_eq!(onto, every),
                None => proptest::prop_assert!(late || strategies[strategy] == Strategy::MostFrequent),
            }
        }
    }

    #[test]
    fn consent_is_most_restrictive_and_dnc_from_anyone_holds() {
        let mut a = record("web", 10, "Jon");
        let mut b = record("pos", 10, "Jon");
        let consent = marketing_by_email;
        a.apply(
            &consent(ConsentStatus::Withdrawn),
            Stamp {
                time: Timestamp(5),
                seq: 5,
            },
        );
        b.apply(
            &consent(ConsentStatus::Granted),
            Stamp {
                time: Timestamp(50),
                seq: 6,
            },
        );
        let dnc = |flag| {
            Payload::Preference(PreferenceChange {
                do_not_contact: Some(flag),
                ..Default::default()
            })
        };
        a.apply(
            &dnc(true),
            Stamp {
                time: Timestamp(5),
                seq: 7,
            },
        );
        b.apply(
            &dnc(false),
            Stamp {
                time: Timestamp(50),
                seq: 8,
            },
        );
        let golden = survive([&a, &b], &rules());
        assert_eq!(
            golden.consents["marketing/email"].status,
            ConsentStatus::Withdrawn
        );
        assert_eq!(golden.preferences["do_not_contact"].value, "true");
    }
}
