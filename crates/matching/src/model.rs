//! The Fellegi-Sunter model: per field, comparison levels with m (agreement among
//! matches) and u (agreement among non-matches) probabilities; a pair's weight is the sum
//! of log2(m/u) of its levels plus the prior's log-odds. Stored as a versioned JSON file.

use std::collections::BTreeMap;

use crate::compact::{Compact, View};
use crate::distance::{
    jaro_winkler_reaching, levenshtein_at_most, osa_at_most_one, osa_distance, osa_lower_bound,
    within_one_edit,
};
use crate::prepare::{Prepared, fields};
use crate::sketch::{self, Place, Sketch, SketchLayout};
use cmdm_domain::FieldWeight;
use serde::{Deserialize, Serialize};

/// Version of the model file format this code reads and writes.
pub const MODEL_FORMAT: u32 = 1;

/// How a field's two values are compared; each kind has fixed levels, best first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Family or other names: exact, close spelling, similar or same sound, different.
    Name,
    /// Given names: also nicknames (Bob ~ Robert) and initials.
    GivenName,
    /// Dates `YYYY-MM-DD`: exact, one typo or day/month swapped, same year, different.
    Date,
    /// E-mail: exact, same mailbox name or one slip, different.
    Email,
    /// Phone E.164: exact, same last 8 digits or one slip, different.
    Phone,
    /// National ids and account numbers: exact, one typo, two typos, different.
    Identifier,
    /// Postcodes: exact, one typo, different.
    Postcode,
    /// Free text such as address lines: exact, close, similar, different.
    Text,
    /// Exact or not (gender, street number).
    Exact,
}

impl Kind {
    /// Level labels, best first.
    pub fn labels(self) -> &'static [&'static str] {
        match self {
            Kind::Name => &["exact", "close", "similar", "different"],
            Kind::GivenName => &[
                "exact",
                "close_or_nickname",
                "similar_or_initial",
                "different",
            ],
            Kind::Date => &["exact", "one_typo_or_swap", "same_year", "different"],
            Kind::Email => &["exact", "close", "different"],
            Kind::Phone => &["exact", "close", "different"],
            Kind::Identifier => &["exact", "one_typo", "two_typos", "different"],
            Kind::Postcode => &["exact", "one_typo", "different"],
            Kind::Text => &["exact", "close", "similar", "different"],
            Kind::Exact => &["exact", "different"],
        }
    }

    /// The comparison level of two normalised values (phonetic codes where names have them).
    pub fn level(self, a: &str, b: &str, phon_a: Option<&str>, phon_b: Option<&str>) -> usize {
        self.level_of(View::of(self, a, phon_a), View::of(self, b, phon_b))
    }

    /// The comparison level of two values of a compact record.
    pub fn level_of(self, a: View<'_>, b: View<'_>) -> usize {
        let (x, y) = (a.value, b.value);
        if x == y {
            return 0;
        }
        let same_sound = matches!((a.phonetic, b.phonetic), (Some(p), Some(q)) if p == q);
        match self {
            Kind::Name => {
                let jw = jaro_winkler_reaching(x, y, 0.80);
                if jw >= 0.92 {
                    1
                } else if jw >= 0.80 || same_sound {
                    2
                } else {
                    3
                }
            }
            Kind::GivenName => {
                let jw = jaro_winkler_reaching(x, y, 0.80);
                let initial =
                    (x.len() == 1 && y.starts_with(x)) || (y.len() == 1 && x.starts_with(y));
                if jw >= 0.92 || a.formal == b.formal {
                    1
                } else if jw >= 0.80 || same_sound || initial {
                    2
                } else {
                    3
                }
            }
            Kind::Date => {
                fn undashed(s: &str) -> impl Iterator<Item = u8> + '_ {
                    s.bytes().filter(|&c| c != b'-')
                }
                let within_one = if x.is_ascii() && y.is_ascii() {
                    let (mut da, mut db) = ([0u8; 16], [0u8; 16]);
                    match (fill(&mut da, undashed(x)), fill(&mut db, undashed(y))) {
                        (Some(p), Some(q)) => within_one_edit(p, q),
                        _ => osa_distance(&x.replace('-', ""), &y.replace('-', "")) <= 1,
                    }
                } else {
                    osa_distance(&x.replace('-', ""), &y.replace('-', "")) <= 1
                };
                let swapped = x.len() == 10
                    && y.len() == 10
                    && x[..4] == y[..4]
                    && x[5..7] == y[8..10]
                    && x[8..10] == y[5..7];
                if within_one || swapped {
                    1
                } else if x.get(..4) == y.get(..4) {
                    2
                } else {
                    3
                }
            }
            Kind::Email => {
                fn local(e: &str) -> Option<&str> {
                    e.split('@').next()
                }
                if local(x) == local(y) || levenshtein_at_most(x, y, 2) {
                    1
                } else {
                    2
                }
            }
            Kind::Phone => {
                fn tail(p: &str) -> Option<&str> {
                    p.get(p.len().saturating_sub(8)..)
                }
                if tail(x) == tail(y) || osa_at_most_one(x, y) {
                    1
                } else {
                    2
                }
            }
            // Values too far apart for level 2 by the characters they hold.
            Kind::Identifier if osa_lower_bound(x, y) > 2 => 3,
            Kind::Identifier => match osa_distance(x, y) {
                1 => 1,
                2 => 2,
                _ => 3,
            },
            Kind::Postcode => {
                if osa_at_most_one(x, y) {
                    1
                } else {
                    2
                }
            }
            Kind::Text => {
                let jw = jaro_winkler_reaching(x, y, 0.80);
                if jw >= 0.92 {
                    1
                } else if jw >= 0.80 {
                    2
                } else {
                    3
                }
            }
            Kind::Exact => 1,
        }
    }

    /// Relative cost of a comparison, so cheap fields are compared first when a pair may
    /// be given up early.
    fn cost(self) -> u8 {
        match self {
            Kind::Exact => 0,
            Kind::Date | Kind::Postcode | Kind::Phone => 1,
            Kind::Identifier | Kind::Email => 2,
            Kind::GivenName | Kind::Name | Kind::Text => 3,
        }
    }
}

/// Copies bytes into a buffer; `None` when they do not fit.
fn fill(buffer: &mut [u8; 16], bytes: impl Iterator<Item = u8>) -> Option<&[u8]> {
    let mut n = 0;
    for byte in bytes {
        *buffer.get_mut(n)? = byte;
        n += 1;
    }
    Some(&buffer[..n])
}

/// One comparison level's probabilities.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Level {
    pub label: String,
    /// P(level | the records are the same person).
    pub m: f64,
    /// P(level | they are not).
    pub u: f64,
}

impl Level {
    /// The level's weight, log2(m/u).
    pub fn weight(&self) -> f64 {
        self.weight_against(self.u)
    }

    /// The weight of agreeing on a value that a share `share` of records hold:
    /// log2(m/share), for the exact level of a field with term frequencies.
    pub fn weight_against(&self, share: f64) -> f64 {
        (self.m.max(1e-12) / share.max(1e-12)).log2()
    }
}

/// How common each value of a field is, so that agreeing on a common value (William,
/// 1 January) counts for less than agreeing on a rare one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TermFrequencies {
    /// Value → share of records holding it (values seen at least twice).
    pub values: BTreeMap<String, f64>,
    /// The share assumed for a value not in the table.
    pub unseen: f64,
}

impl TermFrequencies {
    /// The share of records holding `value`.
    pub fn of(&self, value: &str) -> f64 {
        self.values.get(value).copied().unwrap_or(self.unseen)
    }
}

/// The model of one field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FieldModel {
    pub field: String,
    pub kind: Kind,
    pub levels: Vec<Level>,
    /// When present, an exact agreement weighs log2(m / share of the value).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub term_frequencies: Option<TermFrequencies>,
}

/// The decision thresholds, as match probabilities.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Thresholds {
    /// At or above: link automatically.
    pub link: f64,
    /// At or above (and below `link`): open a steward review task.
    pub review: f64,
    /// Contradiction of the `conflict_fields` (sum of their negative weights) below which two records
    /// contradict each other: an entity does not take a record that contradicts any of
    /// its members, even when another member matches (chains do not collapse).
    pub conflict_weight: f64,
    /// The fields that say who a person is, as opposed to where they live or how to reach
    /// them: people sharing an address, a phone or a family name differ on these.
    #[serde(default = "default_conflict_fields")]
    pub conflict_fields: Vec<String>,
}

fn default_conflict_fields() -> Vec<String> {
    [
        fields::GIVEN_NAME,
        fields::MIDDLE_NAME,
        fields::DATE_OF_BIRTH,
        fields::NATIONAL_ID,
    ]
    .iter()
    .map(|f| (*f).to_owned())
    .collect()
}

/// A versioned Fellegi-Sunter model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Model {
    pub format: u32,
    /// Free text: how the model was made (`default`, `trained on … at …`).
    pub name: String,
    /// Prior probability that a candidate pair (records sharing a blocking key) matches.
    pub prior: f64,
    pub thresholds: Thresholds,
    pub fields: Vec<FieldModel>,
}

/// A record's comparison plan, made once for all the records it is compared with: each
/// of its fields with every level's weight against its value worked out (term
/// frequencies looked up once), the fields in comparison order for screening, and what
/// the fields not yet compared can add at most.
#[derive(Debug, Clone)]
pub struct Probe<'a> {
    form: &'a Compact,
    /// The record's fields in the model's order (the order scores are summed in).
    steps: Vec<Step<'a>>,
    /// Screening order: cheap fields first, each with what it and the fields after it
    /// can add at most.
    screening: Vec<(usize, f64)>,
    /// Sketch screening order: the sketched fields that can take away the most first,
    /// each with what it and the sketched fields after it can add at most.
    sketch_screening: Vec<(usize, f64)>,
    /// The prior and the most the fields without a place in the sketch can add.
    sketch_base: f64,
    prior: f64,
}

/// What every probe needs of a model, worked out once: the sketch layout, and each
/// field's level weights, with an exact agreement's weight by value where the field has
/// term frequencies (the same sums as the model's, so scores agree to the bit).
#[derive(Debug, Clone)]
pub struct ProbePlan {
    layout: SketchLayout,
    fields: Vec<FieldPlan>,
    /// The sketched fields, those that can take away the most first (what a field proved
    /// different takes away at most: its best weight less its worst).
    sketch_order: Vec<usize>,
}

#[derive(Debug, Clone)]
struct FieldPlan {
    /// Each level's weight (a model has at most four levels; past them, never reached).
    weights: [f64; 4],
    levels: usize,
    /// Whether the field is one of the thresholds' `conflict_fields`.
    conflict: bool,
    /// An exact agreement's weight by the value agreed on, and for a value not listed.
    exact: Option<(foldhash::HashMap<String, f64>, f64)>,
    /// The best weight of the other levels for each set of them a sketch may leave.
    best_by_set: sketch::BestBySet,
}

impl ProbePlan {
    /// The plan of a model.
    pub fn of(model: &Model) -> Self {
        let fields: Vec<FieldPlan> = model
            .fields
            .iter()
            .map(|f| {
                let mut weights = [f64::NEG_INFINITY; 4];
                for (level, l) in f.levels.iter().enumerate().take(4) {
                    weights[level] = l.weight();
                }
                let exact = f
                    .levels
                    .first()
                    .zip(f.term_frequencies.as_ref())
                    .map(|(l, tf)| {
                        let by_value = tf
                            .values
                            .iter()
                            .map(|(value, &share)| (value.clone(), l.weight_against(share)))
                            .collect();
                        (by_value, l.weight_against(tf.unseen))
                    });
                let levels = f.levels.len().min(4);
                FieldPlan {
                    weights,
                    levels,
                    conflict: model.thresholds.conflict_fields.contains(&f.field),
                    exact,
                    best_by_set: sketch::best_by_set(&weights, levels),
                }
            })
            .collect();
        let layout = SketchLayout::of(model);
        let loss = |f: &FieldPlan| {
            let weights = &f.weights[..f.levels];
            let best = weights.iter().copied().fold(0.0, f64::max);
            best - weights.iter().copied().fold(f64::INFINITY, f64::min)
        };
        let mut sketch_order: Vec<usize> = (0..fields.len())
            .filter(|&i| layout.place(i).is_some())
            .collect();
        sketch_order.sort_by(|&x, &y| {
            loss(&fields[y])
                .total_cmp(&loss(&fields[x]))
                .then(x.cmp(&y))
        });
        ProbePlan {
            layout,
            fields,
            sketch_order,
        }
    }

    /// The model's sketch layout.
    pub fn layout(&self) -> &SketchLayout {
        &self.layout
    }
}

/// One field of a probe.
#[derive(Debug, Clone)]
struct Step<'a> {
    /// The field's position in the model.
    field: usize,
    kind: Kind,
    view: View<'a>,
    /// Each level's weight against the probed value (a model has at most four levels).
    weights: [f64; 4],
    /// Whether the field is one of the thresholds' `conflict_fields`.
    conflict: bool,
    /// Where the field lies in a sketch, with the probed value's part there.
    sketched: Option<(Place, u64)>,
    /// The best weight for each set of levels a sketch may leave possible.
    best_by_set: sketch::BestBySet,
    /// How many levels the field's kind has.
    levels: usize,
    /// The most the field can add: its best weight, or nothing (an absent value).
    best: f64,
}

impl<'a> Probe<'a> {
    /// The probed record.
    pub fn form(&self) -> &'a Compact {
        self.form
    }

    /// `Model::quick_score(self.form(), b)`, to the bit: the same weights summed in the
    /// same order, without looking anything up.
    pub fn quick_score(&self, b: &Compact) -> (f64, f64) {
        let mut weight = self.prior;
        let mut contradiction = 0.0;
        for step in &self.steps {
            if let Some(vb) = b.view(step.field) {
                let w = step.weights[step.kind.level_of(step.view, vb)];
                weight += w;
                if w < 0.0 && step.conflict {
                    contradiction += w;
                }
            }
        }
        (weight, contradiction)
    }

    /// The most a record with sketch `b` can score against the probed one: per field the
    /// best weight of the levels the sketches leave possible, summed in the model's order,
    /// so never below `quick_score` (rounding is monotone).
    pub fn sketch_bound(&self, b: &Sketch) -> f64 {
        let mut bound = self.prior;
        for step in &self.steps {
            bound += match step.sketched {
                Some((place, a)) => {
                    sketch::bound(place, a, b, step.weights[0], &step.best_by_set, step.levels)
                }
                None => step.best,
            };
        }
        bound
    }

    /// Whether a record with sketch `b` may score at least `floor`: false only where
    /// `Model::may_reach` is false too, without reading the record's compact form. Sums
    /// `sketch_bound`'s terms, the ones that can take away most first, and gives up as
    /// soon as the rest cannot make up the gap.
    pub fn sketch_may_reach(&self, b: &Sketch, floor: f64) -> bool {
        // `may_reach` sums in another order and leaves 1e-6 for rounding: leave more.
        may_sum_to(
            self.sketch_base,
            &self.sketch_screening,
            floor - 1e-5,
            |s| {
                let step = &self.steps[s];
                step.sketched.map_or(0.0, |(place, a)| {
                    sketch::bound(place, a, b, step.weights[0], &step.best_by_set, step.levels)
                })
            },
        )
    }
}

/// Whether `start` and the terms of the steps in `order` may sum to `floor`: each step
/// comes with what it and the steps after it can add at most, so the sum is given up as
/// soon as that cannot make up the gap.
fn may_sum_to(
    start: f64,
    order: &[(usize, f64)],
    floor: f64,
    mut term: impl FnMut(usize) -> f64,
) -> bool {
    let mut sum = start;
    for &(s, headroom) in order {
        if sum + headroom < floor {
            return false;
        }
        sum += term(s);
    }
    sum >= floor
}

/// A pair's score with its explanation.
#[derive(Debug, Clone, PartialEq)]
pub struct PairScore {
    /// Log2 odds that the pair matches.
    pub weight: f64,
    pub fields: Vec<FieldWeight>,
}

impl PairScore {
    /// How strongly some fields contradict the match: the sum of their negative weights
    /// (an agreeing middle initial does not undo a different birth date).
    pub fn contradiction_of(&self, fields: &[String]) -> f64 {
        self.fields
            .iter()
            .filter(|f| fields.contains(&f.field))
            .map(|f| f.weight.min(0.0))
            .sum()
    }

    /// The match probability.
    pub fn probability(&self) -> f64 {
        probability(self.weight)
    }
}

/// Probability from log2 odds.
pub fn probability(weight: f64) -> f64 {
    1.0 / (1.0 + (-weight).exp2())
}

fn level(label: &str, m: f64, u: f64) -> Level {
    Level {
        label: label.to_owned(),
        m,
        u,
    }
}

fn field(field: &str, kind: Kind, mu: &[(f64, f64)]) -> FieldModel {
    let levels = kind
        .labels()
        .iter()
        .zip(mu)
        .map(|(l, (m, u))| level(l, *m, *u))
        .collect();
    FieldModel {
        field: field.to_owned(),
        kind,
        levels,
        term_frequencies: None,
    }
}

impl Model {
    /// The shipped default: generic m and u values for person data, before any training.
    pub fn default_person() -> Self {
        use fields::*;
        let name_mu = [(0.85, 0.005), (0.07, 0.005), (0.04, 0.03), (0.04, 0.96)];
        let text_mu = [(0.80, 0.02), (0.08, 0.02), (0.04, 0.06), (0.08, 0.90)];
        Model {
            format: MODEL_FORMAT,
            name: "default person model".to_owned(),
            prior: 1e-4,
            thresholds: Thresholds {
                link: 0.95,
                review: 0.5,
                conflict_weight: -8.0,
                conflict_fields: default_conflict_fields(),
            },
            fields: vec![
                field(
                    GIVEN_NAME,
                    Kind::GivenName,
                    &[(0.80, 0.01), (0.10, 0.01), (0.05, 0.05), (0.05, 0.93)],
                ),
                field(
                    MIDDLE_NAME,
                    Kind::GivenName,
                    &[(0.80, 0.02), (0.05, 0.01), (0.10, 0.10), (0.05, 0.87)],
                ),
                field(FAMILY_NAME, Kind::Name, &name_mu),
                field(
                    DATE_OF_BIRTH,
                    Kind::Date,
                    &[(0.88, 0.0005), (0.08, 0.005), (0.02, 0.02), (0.02, 0.9745)],
                ),
                field(
                    EMAIL,
                    Kind::Email,
                    &[(0.90, 1e-7), (0.05, 1e-4), (0.05, 0.9999)],
                ),
                field(
                    PHONE,
                    Kind::Phone,
                    &[(0.85, 1e-6), (0.05, 1e-4), (0.10, 0.9999)],
                ),
                field(
                    NATIONAL_ID,
                    Kind::Identifier,
                    &[(0.92, 1e-8), (0.05, 1e-6), (0.01, 1e-4), (0.02, 0.9999)],
                ),
                field(
                    POSTCODE,
                    Kind::Postcode,
                    &[(0.85, 0.01), (0.07, 0.05), (0.08, 0.94)],
                ),
                field(STREET_NUMBER, Kind::Exact, &[(0.85, 0.02), (0.15, 0.98)]),
                field("address_line1", Kind::Text, &text_mu),
                field("address_line2", Kind::Text, &text_mu),
                field("city", Kind::Text, &text_mu),
                field("state", Kind::Exact, &[(0.95, 0.2), (0.05, 0.8)]),
                field(GENDER, Kind::Exact, &[(0.97, 0.5), (0.03, 0.5)]),
            ],
        }
    }

    /// Adds a free-text comparison for an attribute the model does not know yet.
    pub fn ensure_field(&mut self, name: &str) {
        if !self.fields.iter().any(|f| f.field == name) {
            let mu = [(0.80, 0.02), (0.08, 0.02), (0.04, 0.06), (0.08, 0.90)];
            self.fields.push(field(name, Kind::Text, &mu));
        }
    }

    /// Prior log2 odds.
    pub fn prior_weight(&self) -> f64 {
        (self.prior / (1.0 - self.prior)).log2()
    }

    /// A prepared record laid out for this model's fields.
    pub fn compact(&self, p: &Prepared) -> Compact {
        Compact::new(self, p)
    }

    /// Each field's level and weight for a pair, without allocating: the hot path.
    fn each_weight(
        &self,
        a: &Compact,
        b: &Compact,
        mut visit: impl FnMut(&FieldModel, usize, f64),
    ) {
        for (i, f) in self.fields.iter().enumerate() {
            let (Some(va), Some(vb)) = (a.view(i), b.view(i)) else {
                continue;
            };
            let level = f.kind.level_of(va, vb);
            let l = &f.levels[level];
            let w = match (&f.term_frequencies, level) {
                (Some(tf), 0) => l.weight_against(tf.of(va.value)),
                _ => l.weight(),
            };
            visit(f, level, w);
        }
    }

    /// A pair's total weight (prior included) and its contradiction on `conflict_fields`.
    pub fn quick_score(&self, a: &Compact, b: &Compact) -> (f64, f64) {
        let mut weight = self.prior_weight();
        let mut contradiction = 0.0;
        let conflict_fields = &self.thresholds.conflict_fields;
        self.each_weight(a, b, |f, _, w| {
            weight += w;
            if w < 0.0 && conflict_fields.contains(&f.field) {
                contradiction += w;
            }
        });
        (weight, contradiction)
    }

    /// Scores a pair, keeping each field's level and weight.
    pub fn score(&self, a: &Compact, b: &Compact) -> PairScore {
        let mut weight = self.prior_weight();
        let mut fields = Vec::new();
        self.each_weight(a, b, |f, level, w| {
            weight += w;
            fields.push(FieldWeight {
                field: f.field.clone(),
                level: f.levels[level].label.clone(),
                weight: w,
            });
        });
        PairScore { weight, fields }
    }

    /// A record made ready to be compared with many others (the plan is worked out
    /// for this call: a matcher keeps one and calls `probe_with`).
    pub fn probe<'a>(&self, record: &'a Compact) -> Probe<'a> {
        self.probe_with(record, &ProbePlan::of(self))
    }

    /// `probe` with what every probe needs of the model worked out once by the caller.
    pub fn probe_with<'a>(&self, record: &'a Compact, plan: &ProbePlan) -> Probe<'a> {
        let steps: Vec<Step<'a>> = self
            .fields
            .iter()
            .zip(&plan.fields)
            .enumerate()
            .filter_map(|(i, (f, planned))| {
                let view = record.view(i)?;
                let mut weights = planned.weights;
                if let Some((by_value, unseen)) = &planned.exact {
                    weights[0] = by_value.get(view.value).copied().unwrap_or(*unseen);
                }
                Some(Step {
                    field: i,
                    kind: f.kind,
                    view,
                    weights,
                    conflict: planned.conflict,
                    sketched: plan
                        .layout
                        .place(i)
                        .map(|place| (place, place.encode(f.kind, view))),
                    best_by_set: planned.best_by_set,
                    levels: planned.levels,
                    best: weights.iter().copied().fold(0.0, f64::max),
                })
            })
            .collect();
        let mut screening: Vec<(usize, f64)> = (0..steps.len()).map(|s| (s, 0.0)).collect();
        screening.sort_by_key(|&(s, _)| (steps[s].kind.cost(), steps[s].field));
        let mut after = 0.0;
        for (s, headroom) in screening.iter_mut().rev() {
            after += steps[*s].weights.iter().copied().fold(0.0, f64::max);
            *headroom = after;
        }
        // The plan's order, of the fields the record has (steps are in field order).
        let mut sketch_screening: Vec<(usize, f64)> = plan
            .sketch_order
            .iter()
            .filter_map(|field| steps.binary_search_by_key(field, |step| step.field).ok())
            .map(|s| (s, 0.0))
            .collect();
        let mut after = 0.0;
        for (s, headroom) in sketch_screening.iter_mut().rev() {
            after += steps[*s].best;
            *headroom = after;
        }
        let prior = self.prior_weight();
        let sketch_base = prior
            + steps
                .iter()
                .filter(|step| step.sketched.is_none())
                .map(|step| step.best)
                .sum::<f64>();
        Probe {
            form: record,
            steps,
            screening,
            sketch_screening,
            sketch_base,
            prior,
        }
    }

    /// Whether `b` may score at least `floor` against the probed record: compares the
    /// cheap fields first and gives up as soon as the rest cannot make up the gap. Never
    /// false for a pair whose `quick_score` reaches `floor`.
    pub fn may_reach(probe: &Probe<'_>, b: &Compact, floor: f64) -> bool {
        // Sums run in another order than `quick_score`'s: leave room for rounding.
        may_sum_to(probe.prior, &probe.screening, floor - 1e-6, |s| {
            let step = &probe.steps[s];
            b.view(step.field)
                .map_or(0.0, |vb| step.weights[step.kind.level_of(step.view, vb)])
        })
    }

    /// Checks the file's shape: format, levels matching their kinds, probabilities.
    pub fn validate(&self) -> Result<(), String> {
        if self.format != MODEL_FORMAT {
            return Err(format!(
                "model format {} (this hub reads {MODEL_FORMAT})",
                self.format
            ));
        }
        if !(0.0..1.0).contains(&self.prior) || self.prior <= 0.0 {
            return Err("prior must be between 0 and 1".into());
        }
        let t = &self.thresholds;
        if !(0.0 < t.review && t.review <= t.link && t.link < 1.0) {
            return Err("thresholds must satisfy 0 < review <= link < 1".into());
        }
        if !t.conflict_weight.is_finite() {
            return Err("thresholds.conflict_weight must be a number".into());
        }
        for f in &self.fields {
            let labels = f.kind.labels();
            if f.levels.len() != labels.len()
                || f.levels
                    .iter()
                    .zip(labels)
                    .any(|(l, want)| l.label != *want)
            {
                return Err(format!("field `{}`: levels must be {labels:?}", f.field));
            }
            if f.levels
                .iter()
                .any(|l| !(l.m > 0.0 && l.m <= 1.0 && l.u > 0.0 && l.u <= 1.0))
            {
                return Err(format!("field `{}`: m and u must be in (0, 1]", f.field));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::prepare::{PrepareConfig, prepare, tests::record};

    fn person(pairs: &[(&str, String)]) -> Prepared {
        let pairs: Vec<(&str, &str)> = pairs
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| (*k, v.as_str()))
            .collect();
        prepare(&record("p", &pairs), &PrepareConfig::default())
    }

    fn fields() -> impl Strategy<Value = Vec<(&'static str, String)>> {
        (
            "(|ann|anna|bob|robert|jon|john)",
            "(|smith|smyth|smithe|jones)",
            "(|1980-02-03|1980-03-02|1980-02-13|1971-10-13)",
            "(|ann@x.org|anne@x.org|bob@y.com)",
            "(|01632960001|01632960002|07700900123)",
            "(|SW1A1AA|SW1A1AB|2119)",
            "(|leeds|leed|york)",
        )
            .prop_map(|(g, f, d, e, p, pc, c)| {
                vec![
                    ("given_name", g),
                    ("family_name", f),
                    ("date_of_birth", d),
                    ("email", e),
                    ("phone", p),
                    ("postcode", pc),
                    ("city", c),
                ]
            })
    }

    proptest! {
        /// The early give-up of `may_reach` never drops a pair that reaches the floor,
        /// with term frequencies (an exact agreement's weight depends on the value) too.
        #[test]
        fn may_reach_never_drops_a_pair_that_reaches_the_floor(
            a in fields(),
            b in fields(),
            floor in -30.0f64..30.0,
            with_frequencies in any::<bool>(),
        ) {
            let mut model = Model::default_person();
            if with_frequencies {
                let given = model.fields.iter_mut().find(|f| f.field == "given_name").unwrap();
                given.term_frequencies = Some(TermFrequencies {
                    values: [("ann".to_owned(), 0.3), ("bob".to_owned(), 0.0001)].into(),
                    unseen: 0.01,
                });
            }
            let (ca, cb) = (model.compact(&person(&a)), model.compact(&person(&b)));
            let (weight, _) = model.quick_score(&ca, &cb);
            if weight >= floor {
                prop_assert!(Model::may_reach(&model.probe(&ca), &cb, floor));
            }
        }

        /// A sketch's bound is never below the pair's score, so the sketch screen never
        /// drops a pair the full screen keeps.
        #[test]
        fn a_sketch_bounds_the_score_from_above(
            a in fields(),
            b in fields(),
            floor in -30.0f64..30.0,
            with_frequencies in any::<bool>(),
        ) {
            let mut model = Model::default_person();
            if with_frequencies {
                for field in &mut model.fields {
                    field.term_frequencies = Some(TermFrequencies {
                        values: [("ann".to_owned(), 0.3), ("1980-02-03".to_owned(), 0.2)].into(),
                        unseen: 0.01,
                    });
                }
            }
            let plan = ProbePlan::of(&model);
            let (ca, cb) = (model.compact(&person(&a)), model.compact(&person(&b)));
            let probe = model.probe_with(&ca, &plan);
            let sketch = plan.layout().sketch(&cb);
            prop_assert!(probe.sketch_bound(&sketch) >= probe.quick_score(&cb).0);
            if Model::may_reach(&probe, &cb, floor) {
                prop_assert!(probe.sketch_may_reach(&sketch, floor));
            }
        }

        /// A probe scores a pair to the bit as the model does (decisions compare scores
        /// with thresholds, and explanations are stored).
        #[test]
        fn a_probe_scores_as_the_model_does(
            a in fields(),
            b in fields(),
            with_frequencies in any::<bool>(),
        ) {
            let mut model = Model::default_person();
            if with_frequencies {
                for field in &mut model.fields {
                    field.term_frequencies = Some(TermFrequencies {
                        values: [
                            ("ann".to_owned(), 0.3),
                            ("smith".to_owned(), 0.0001),
                            ("leeds".to_owned(), 0.02),
                        ]
                        .into(),
                        unseen: 0.01,
                    });
                }
            }
            let (ca, cb) = (model.compact(&person(&a)), model.compact(&person(&b)));
            let (weight, contradiction) = model.quick_score(&ca, &cb);
            let (by_probe, contradiction_by_probe) = model.probe(&ca).quick_score(&cb);
            prop_assert_eq!(weight.to_bits(), by_probe.to_bits());
            prop_assert_eq!(contradiction.to_bits(), contradiction_by_probe.to_bits());
        }
    }

    #[test]
    fn levels_by_kind() {
        assert_eq!(Kind::Name.level("smith", "smith", None, None), 0);
        assert_eq!(Kind::Name.level("smith", "smiht", None, None), 1);
        assert_eq!(Kind::Name.level("smith", "jones", None, None), 3);
        assert_eq!(Kind::GivenName.level("bob", "robert", None, None), 1);
        assert_eq!(Kind::GivenName.level("r", "robert", None, None), 2);
        assert_eq!(Kind::Date.level("1956-04-09", "1956-09-04", None, None), 1);
        assert_eq!(Kind::Date.level("1956-04-09", "1956-04-19", None, None), 1);
        assert_eq!(Kind::Date.level("1956-04-09", "1956-12-30", None, None), 2);
        assert_eq!(Kind::Identifier.level("1804974", "1804947", None, None), 1);
        assert_eq!(Kind::Identifier.level("1804974", "9999999", None, None), 3);
    }

    #[test]
    fn the_default_model_is_valid_and_round_trips() {
        let model = Model::default_person();
        model.validate().unwrap();
        let json = serde_json::to_string(&model).unwrap();
        assert_eq!(serde_json::from_str::<Model>(&json).unwrap(), model);
        let mut bad = model.clone();
        bad.format = 99;
        assert!(bad.validate().is_err());
    }
}
