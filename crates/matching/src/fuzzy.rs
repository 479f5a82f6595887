//! The probabilistic matcher: Fellegi-Sunter scores against every member of each
//! candidate entity, so a record joins an entity only if it fits the whole entity.

use cmdm_domain::{FieldWeight, GoldenId, MatchExplanation, SourceRecord};
use serde::{Deserialize, Serialize};

use crate::compact::Compact;
use crate::model::{Model, Probe, ProbePlan};
use crate::prepare::{PrepareConfig, Prepared, prepare};
use crate::sketch::Sketch;
use crate::{BlockKey, EntityCandidate, MatchOutcome, Matcher, Member, PairVerdict, blocking};

/// Matcher settings besides the model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct MatcherConfig {
    pub prepare: PrepareConfig,
    /// A blocking key shared by more records than this is generic (a shop's phone number).
    pub generic_limit: usize,
    /// Most candidate records scored per record (those sharing the most keys).
    pub max_candidates: usize,
    /// A record that shares a single blocking key with the arriving one, a key held by
    /// more records than this, is no candidate: one key that common (an initial and a
    /// family-name sound among a million people) is weak evidence. At the generic limit
    /// or above, every record sharing a key is a candidate.
    pub weak_key_limit: usize,
}

impl Default for MatcherConfig {
    fn default() -> Self {
        MatcherConfig {
            prepare: PrepareConfig::default(),
            generic_limit: 100,
            max_candidates: 200,
            weak_key_limit: 25,
        }
    }
}

/// Fellegi-Sunter matching with entity-level decisions.
#[derive(Debug, Clone)]
pub struct FuzzyMatcher {
    model: Model,
    config: MatcherConfig,
    /// What every probe needs of the model, worked out once.
    plan: ProbePlan,
}

/// How a record fits one entity.
struct Fit {
    entity: GoldenId,
    /// Total weight against the best member.
    best: f64,
    best_member: usize,
    /// The lowest identity evidence against any member.
    weakest: f64,
}

impl FuzzyMatcher {
    /// A matcher over a validated model.
    pub fn new(model: Model, config: MatcherConfig) -> Result<Self, String> {
        model.validate()?;
        let plan = ProbePlan::of(&model);
        Ok(FuzzyMatcher {
            model,
            config,
            plan,
        })
    }

    /// The model in use.
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// How `record` fits `candidate`; `None` when no member can reach the review band
    /// (then the entity plays no part in the decision).
    fn fit(&self, probe: &Probe<'_>, candidate: &EntityCandidate<'_>) -> Option<Fit> {
        let floor = weight_of(self.model.thresholds.review);
        if !candidate
            .members
            .iter()
            .any(|m| Model::may_reach(probe, m.form, floor))
        {
            return None;
        }
        let mut best: Option<(f64, usize)> = None;
        let mut weakest = f64::INFINITY;
        for (i, member) in candidate.members.iter().enumerate() {
            let (weight, contradiction) = probe.quick_score(member.form);
            weakest = weakest.min(contradiction);
            if best.is_none_or(|(b, _)| weight > b) {
                best = Some((weight, i));
            }
        }
        let (best, best_member) = best?;
        Some(Fit {
            entity: candidate.entity,
            best,
            best_member,
            weakest,
        })
    }

    /// The full field-by-field score of a pair.
    fn explain_pair(&self, record: &Compact, member: Member<'_>) -> MatchExplanation {
        let score = self.model.score(record, member.form);
        MatchExplanation {
            rule: "fellegi-sunter".to_owned(),
            weight: round(score.weight),
            probability: round(score.probability()),
            fields: score
                .fields
                .into_iter()
                .map(|f| FieldWeight {
                    weight: round(f.weight),
                    ..f
                })
                .collect(),
            with: vec![member.key.clone()],
            weakest_evidence: 0.0,
        }
    }

    /// The explanation of a fit: the full field-by-field score of its best member.
    fn explain(
        &self,
        record: &Compact,
        fit: &Fit,
        candidate: &EntityCandidate<'_>,
    ) -> MatchExplanation {
        let member = candidate.members[fit.best_member];
        MatchExplanation {
            weakest_evidence: round(fit.weakest),
            ..self.explain_pair(record, member)
        }
    }

    /// Whether no member of `a` contradicts any member of `b`.
    fn compatible(&self, a: &[&Compact], b: &[Member<'_>]) -> bool {
        let t = &self.model.thresholds;
        a.iter().all(|x| {
            b.iter()
                .all(|y| self.model.quick_score(x, y.form).1 >= t.conflict_weight)
        })
    }
}

/// Log2 odds from a probability.
fn weight_of(probability: f64) -> f64 {
    (probability / (1.0 - probability)).log2()
}

/// Explanations keep six significant decimals so the log stays compact and stable.
fn round(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

impl Matcher for FuzzyMatcher {
    fn prepare(&self, record: &SourceRecord) -> Prepared {
        prepare(record, &self.config.prepare)
    }

    fn compact(&self, record: &Prepared) -> Compact {
        self.model.compact(record)
    }

    fn block_keys(&self, record: &Prepared) -> Vec<BlockKey> {
        blocking::block_keys(record)
    }

    fn contact_point(&self, raw: &str) -> Option<String> {
        let code = &self.config.prepare.default_country_code;
        let mut out = String::with_capacity(7 + raw.len() + code.len());
        if raw.contains('@') {
            out.push_str("email:");
            crate::normalise::email_onto(raw, out)
        } else {
            out.push_str("phone:");
            crate::normalise::phone_onto(raw, code, out)
        }
    }

    fn generic_limit(&self) -> usize {
        self.config.generic_limit
    }

    fn max_candidates(&self) -> usize {
        self.config.max_candidates
    }

    fn weak_key_limit(&self) -> usize {
        self.config.weak_key_limit
    }

    fn probe<'a>(&self, record: &'a Compact) -> Probe<'a> {
        self.model.probe_with(record, &self.plan)
    }

    fn sketch(&self, record: &Compact) -> Sketch {
        self.plan.layout().sketch(record)
    }

    fn decide(
        &self,
        probe: &Probe<'_>,
        home: Option<&EntityCandidate<'_>>,
        candidates: &[EntityCandidate<'_>],
    ) -> MatchOutcome {
        let t = &self.model.thresholds;
        let record = probe.form();
        let mut fits: Vec<(Fit, &EntityCandidate<'_>)> = candidates
            .iter()
            .filter(|c| home.is_none_or(|h| h.entity != c.entity))
            .filter_map(|c| self.fit(probe, c).map(|f| (f, c)))
            .collect();
        // Strongest first; ties to the older entity, so the outcome never depends on order.
        fits.sort_by(|(a, _), (b, _)| b.best.total_cmp(&a.best).then(a.entity.cmp(&b.entity)));
        let mut outcome = MatchOutcome::default();
        // Members of the entity the record belongs to after this decision.
        let mut joined: Vec<&Compact> = home
            .map(|h| h.members.iter().map(|m| m.form).collect())
            .unwrap_or_default();
        let mut placed = home.is_some();
        for (fit, candidate) in &fits {
            let p = crate::model::probability(fit.best);
            let fits_whole_entity = fit.weakest >= t.conflict_weight;
            let explanation = || self.explain(record, fit, candidate);
            if p >= t.link && fits_whole_entity && self.compatible(&joined, &candidate.members) {
                if placed {
                    outcome.merge.push((fit.entity, explanation()));
                } else {
                    outcome.link = Some((fit.entity, explanation()));
                    placed = true;
                }
                joined.extend(candidate.members.iter().map(|m| m.form));
            } else if p >= t.review {
                outcome.review.push((fit.entity, explanation()));
            }
        }
        outcome
    }

    fn screen(&self, probe: &Probe<'_>, other: &Compact) -> bool {
        Model::may_reach(probe, other, weight_of(self.model.thresholds.review))
    }

    fn screen_sketch(&self, probe: &Probe<'_>, other: &Sketch) -> bool {
        probe.sketch_may_reach(other, weight_of(self.model.thresholds.review))
    }

    fn compare(&self, a: &Prepared, b: &Prepared) -> PairVerdict {
        let t = &self.model.thresholds;
        let (ca, cb) = (self.model.compact(a), self.model.compact(b));
        let contradiction = self.model.quick_score(&ca, &cb).1;
        PairVerdict {
            explanation: MatchExplanation {
                weakest_evidence: round(contradiction),
                ..self.explain_pair(
                    &ca,
                    Member {
                        key: &b.key,
                        form: &cb,
                    },
                )
            },
            link: t.link,
            review: t.review,
            contradict: contradiction < t.conflict_weight,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prepare::tests::record;

    fn matcher() -> FuzzyMatcher {
        FuzzyMatcher::new(Model::default_person(), MatcherConfig::default()).unwrap()
    }

    /// What the engine does with an arriving record: one probe, then the decision.
    fn decide(
        m: &FuzzyMatcher,
        record: &Prepared,
        candidates: &[EntityCandidate<'_>],
    ) -> MatchOutcome {
        let form = m.compact(record);
        m.decide(&m.probe(&form), None, candidates)
    }

    fn person(id: &str, pairs: &[(&str, &str)]) -> Prepared {
        matcher().prepare(&record(id, pairs))
    }

    fn entity<'a>(id: u64, members: &'a [Prepared], forms: &'a [Compact]) -> EntityCandidate<'a> {
        EntityCandidate {
            entity: GoldenId(id),
            members: members
                .iter()
                .zip(forms)
                .map(|(p, form)| Member { key: &p.key, form })
                .collect(),
        }
    }

    fn forms(members: &[Prepared]) -> Vec<Compact> {
        members.iter().map(|p| matcher().compact(p)).collect()
    }

    #[test]
    fn typos_still_link_and_strangers_do_not() {
        let m = matcher();
        let jon = person(
            "1",
            &[
                ("given_name", "Jon"),
                ("family_name", "Smyth"),
                ("date_of_birth", "1980-02-03"),
                ("postcode", "2119"),
            ],
        );
        let john = person(
            "2",
            &[
                ("given_name", "John"),
                ("family_name", "Smith"),
                ("date_of_birth", "1980-02-03"),
                ("postcode", "2119"),
            ],
        );
        let other = person(
            "3",
            &[
                ("given_name", "Mary"),
                ("family_name", "Jones"),
                ("date_of_birth", "1971-10-13"),
                ("postcode", "2119"),
            ],
        );
        let jon_forms = forms(std::slice::from_ref(&jon));
        let outcome = decide(
            &m,
            &john,
            &[entity(1, std::slice::from_ref(&jon), &jon_forms)],
        );
        let (id, why) = outcome.link.expect("links");
        assert_eq!(id, GoldenId(1));
        assert!(
            why.fields
                .iter()
                .any(|f| f.field == "date_of_birth" && f.level == "exact")
        );
        assert!(
            decide(
                &m,
                &other,
                &[entity(1, std::slice::from_ref(&jon), &jon_forms)]
            )
            .link
            .is_none()
        );
    }

    #[test]
    fn a_record_must_fit_the_whole_entity() {
        let m = matcher();
        // B resembles A and C; A and C are clearly different people.
        let a = person(
            "a",
            &[
                ("given_name", "Ann"),
                ("family_name", "Lee"),
                ("email", "ann.lee@x.org"),
                ("date_of_birth", "1990-01-01"),
            ],
        );
        let c = person(
            "c",
            &[
                ("given_name", "Bob"),
                ("family_name", "Stone"),
                ("phone", "01632960001"),
                ("date_of_birth", "1955-07-30"),
            ],
        );
        let b = person(
            "b",
            &[
                ("given_name", "Ann"),
                ("family_name", "Lee"),
                ("email", "ann.lee@x.org"),
                ("phone", "01632960001"),
            ],
        );
        let outcome = decide(
            &m,
            &b,
            &[
                entity(
                    1,
                    std::slice::from_ref(&a),
                    &forms(std::slice::from_ref(&a)),
                ),
                entity(
                    2,
                    std::slice::from_ref(&c),
                    &forms(std::slice::from_ref(&c)),
                ),
            ],
        );
        assert_eq!(outcome.link.map(|l| l.0), Some(GoldenId(1)));
        assert!(
            outcome.merge.is_empty(),
            "A and C must not be merged through B"
        );
    }
}
