//! The first matcher: records link when a normalised e-mail or phone agrees exactly.

use std::collections::BTreeSet;

use cmdm_domain::{MatchExplanation, SourceRecord};

use crate::{BlockKey, Candidate, MatchOutcome, Matcher, normalise};

/// Links on an exact normalised e-mail or phone.
#[derive(Debug, Clone)]
pub struct ExactMatcher {
    default_country_code: String,
}

impl ExactMatcher {
    /// A matcher that reads national phone numbers with this calling code (`44`, `1`, …).
    pub fn new(default_country_code: &str) -> Self {
        ExactMatcher {
            default_country_code: default_country_code.to_owned(),
        }
    }
}

impl Matcher for ExactMatcher {
    fn block_keys(&self, record: &SourceRecord) -> Vec<BlockKey> {
        let mut keys = Vec::new();
        if let Some(email) = record.value("email").and_then(normalise::email) {
            keys.push(BlockKey(format!("email:{email}")));
        }
        if let Some(phone) = record
            .value("phone")
            .and_then(|p| normalise::phone(p, &self.default_country_code))
        {
            keys.push(BlockKey(format!("phone:{phone}")));
        }
        keys
    }

    fn decide(&self, record: &SourceRecord, candidates: &[Candidate]) -> MatchOutcome {
        let mut outcome = MatchOutcome::default();
        for candidate in candidates.iter().filter(|c| c.record != record.key) {
            let explanation =
                outcome
                    .entities
                    .entry(candidate.entity)
                    .or_insert_with(|| MatchExplanation {
                        rule: "exact-identifier".to_owned(),
                        ..MatchExplanation::default()
                    });
            let kinds: BTreeSet<String> = explanation
                .agreed
                .iter()
                .cloned()
                .chain(
                    candidate
                        .shared
                        .iter()
                        .filter_map(|k| k.0.split_once(':').map(|(kind, _)| kind.to_owned())),
                )
                .collect();
            explanation.agreed = kinds.into_iter().collect();
            explanation.with.push(candidate.record.clone());
        }
        outcome
    }
}

#[cfg(test)]
mod tests {
    use cmdm_domain::event::ProfilePatch;
    use cmdm_domain::{GoldenId, Payload, SourceKey, Stamp, Timestamp};

    use super::*;

    fn record(subject: &str, email: &str, phone: &str) -> SourceRecord {
        let mut r = SourceRecord::new(SourceKey::new("web", subject).unwrap());
        let patch = [("email", email), ("phone", phone)]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), Some(v.to_owned())))
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
    fn keys_are_normalised() {
        let m = ExactMatcher::new("44");
        let keys = m.block_keys(&record("1", "Ann@X.org", "01632 960001"));
        assert_eq!(
            keys,
            vec![
                BlockKey("email:ann@x.org".into()),
                BlockKey("phone:+441632960001".into())
            ]
        );
    }

    #[test]
    fn decide_groups_candidates_by_entity_and_ignores_itself() {
        let m = ExactMatcher::new("44");
        let me = record("1", "ann@x.org", "01632 960001");
        let other = SourceKey::new("pos", "9").unwrap();
        let candidates = vec![
            Candidate {
                record: me.key.clone(),
                entity: GoldenId(1),
                shared: vec![],
            },
            Candidate {
                record: other.clone(),
                entity: GoldenId(7),
                shared: vec![BlockKey("email:ann@x.org".into())],
            },
        ];
        let outcome = m.decide(&me, &candidates);
        assert_eq!(outcome.entities.len(), 1);
        let why = &outcome.entities[&GoldenId(7)];
        assert_eq!(why.agreed, vec!["email".to_owned()]);
        assert_eq!(why.with, vec![other]);
    }
}
