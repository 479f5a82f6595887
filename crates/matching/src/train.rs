//! Unsupervised training: u from random record pairs, m and the prior by
//! expectation-maximisation over the blocked candidate pairs, no labels needed.

use std::collections::HashMap;

use crate::BlockKey;
use crate::blocking::{block_keys, identifies_person};
use crate::compact::{Compact, View};
use crate::model::{Kind, Model, TermFrequencies};
use crate::prepare::Prepared;
use crate::prepare::fields::{
    DATE_OF_BIRTH, EMAIL, FAMILY_NAME, GIVEN_NAME, NATIONAL_ID, PHONE, POSTCODE,
};
use crate::synth::SplitMix;

/// What training saw, for its report.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainingReport {
    pub records: usize,
    pub random_pairs: usize,
    pub candidate_pairs: usize,
    pub iterations: usize,
    pub prior: f64,
}

/// A training session: the pairs sharing a key with one of `tags`, estimating every
/// field except `fixed`.
struct Session {
    tags: &'static [&'static str],
    fixed: &'static [&'static str],
}

const SESSIONS: [Session; 4] = [
    Session {
        tags: &["dob-n:"],
        fixed: &[DATE_OF_BIRTH, GIVEN_NAME, FAMILY_NAME],
    },
    Session {
        tags: &["names:", "name-set:"],
        fixed: &[GIVEN_NAME, FAMILY_NAME],
    },
    Session {
        tags: &["em:", "ph:", "id:", "id-sorted:"],
        fixed: &[EMAIL, PHONE, NATIONAL_ID],
    },
    Session {
        tags: &["dob-pc:"],
        fixed: &[DATE_OF_BIRTH, POSTCODE],
    },
];

/// Each field's comparison level (`None`: a value missing) for each pair of records.
type PairLevels = Vec<Vec<Option<usize>>>;

/// Sessions with fewer pairs teach nothing reliable and are skipped.
const MIN_SESSION_PAIRS: usize = 50;

/// One EM round with u fixed: returns the new m (for `active` fields; others keep
/// theirs and take no part) and the new share of matches.
fn em_round(
    model: &Model,
    m: &[Vec<f64>],
    lambda: f64,
    vectors: &[Vec<Option<usize>>],
    active: &[bool],
) -> (Vec<Vec<f64>>, f64) {
    const SMOOTH: f64 = 1e-4;
    let prior_weight = (lambda / (1.0 - lambda)).log2();
    let weights: Vec<Vec<f64>> = model
        .fields
        .iter()
        .zip(m)
        .map(|(f, m)| {
            f.levels
                .iter()
                .zip(m)
                .map(|(l, m)| (m.max(1e-12) / l.u.max(1e-12)).log2())
                .collect()
        })
        .collect();
    let mut counts: Vec<Vec<f64>> = m.iter().map(|levels| vec![SMOOTH; levels.len()]).collect();
    let mut mass = 0.0;
    for vector in vectors {
        let w = prior_weight
            + vector
                .iter()
                .enumerate()
                .filter(|(f, _)| active[*f] || !active.iter().any(|a| *a))
                .filter_map(|(f, l)| l.map(|l| weights[f][l]))
                .sum::<f64>();
        let p = crate::model::probability(w);
        mass += p;
        for (f, level) in vector.iter().enumerate() {
            if let (true, Some(level)) = (active[f], level) {
                counts[f][*level] += p;
            }
        }
    }
    let new_m = counts
        .iter()
        .zip(m)
        .zip(active)
        .map(|((c, old), is_active)| {
            if *is_active {
                let total: f64 = c.iter().sum();
                c.iter().map(|x| (x / total).clamp(1e-6, 1.0)).collect()
            } else {
                old.clone()
            }
        })
        .collect();
    let lambda = if vectors.is_empty() {
        lambda
    } else {
        (mass / vectors.len() as f64).clamp(1e-6, 0.999)
    };
    (new_m, lambda)
}

/// What a training thread returned; its panic goes on in the thread that joins it.
fn joined<T>(handle: std::thread::ScopedJoinHandle<'_, T>) -> T {
    handle
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// One session's EM from the default m, with u fixed: the session's m and its rounds.
fn em_session(
    model: &Model,
    default_m: &[Vec<f64>],
    active: &[bool],
    vectors: &[Vec<Option<usize>>],
    max_iterations: usize,
) -> (Vec<Vec<f64>>, usize) {
    let mut m = default_m.to_vec();
    let mut lambda = 0.5;
    let mut rounds = 0;
    for _ in 0..max_iterations {
        rounds += 1;
        let (new_m, new_lambda) = em_round(model, &m, lambda, vectors, active);
        let change = new_m
            .iter()
            .flatten()
            .zip(m.iter().flatten())
            .map(|(a, b)| (a - b).abs())
            .fold((new_lambda - lambda).abs(), f64::max);
        m = new_m;
        lambda = new_lambda;
        if change < 1e-4 {
            break;
        }
    }
    (m, rounds)
}

/// Each field's level for a pair of records read out, `None` where either value is
/// missing.
fn levels<'a>(
    kinds: &'a [Kind],
    a: &'a [Option<View<'_>>],
    b: &'a [Option<View<'_>>],
) -> impl Iterator<Item = Option<usize>> + 'a {
    kinds
        .iter()
        .zip(a.iter().zip(b))
        .map(|(kind, pair)| match pair {
            (Some(a), Some(b)) => Some(kind.level_of(*a, *b)),
            _ => None,
        })
}

/// Record pairs sharing a non-generic key accepted by `keep`.
fn pairs_sharing(
    keys: &[Vec<BlockKey>],
    generic_limit: usize,
    keep: impl Fn(&BlockKey) -> bool,
) -> Vec<(usize, usize)> {
    let mut blocks: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, record_keys) in keys.iter().enumerate() {
        for key in record_keys.iter().filter(|k| keep(k)) {
            blocks.entry(key.0.as_str()).or_default().push(i);
        }
    }
    let mut pairs = Vec::new();
    for members in blocks
        .values()
        .filter(|m| m.len() > 1 && m.len() <= generic_limit)
    {
        for (x, &i) in members.iter().enumerate() {
            for &j in &members[x + 1..] {
                pairs.push((i.min(j), i.max(j)));
            }
        }
    }
    pairs.sort_unstable();
    pairs.dedup();
    pairs
}

/// Each field's table of value shares, for the kinds where values repeat (`None` for
/// the other kinds, which keep theirs).
fn term_frequencies(model: &Model, records: &[Prepared]) -> Vec<Option<Option<TermFrequencies>>> {
    const MAX_VALUES: usize = 50_000;
    model
        .fields
        .iter()
        .map(|field| {
            if matches!(field.kind, Kind::Email | Kind::Phone | Kind::Identifier) {
                return None;
            }
            let mut counts: HashMap<&str, usize> = HashMap::new();
            for r in records {
                if let Some(v) = r.get(&field.field) {
                    *counts.entry(v).or_default() += 1;
                }
            }
            let total: usize = counts.values().sum();
            if total < 2 {
                return Some(None);
            }
            let mut repeated: Vec<(&str, usize)> =
                counts.into_iter().filter(|(_, c)| *c >= 2).collect();
            repeated.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
            repeated.truncate(MAX_VALUES);
            Some(Some(TermFrequencies {
                values: repeated
                    .into_iter()
                    .map(|(v, c)| (v.to_owned(), c as f64 / total as f64))
                    .collect(),
                unseen: 1.0 / total as f64,
            }))
        })
        .collect()
}

/// Trains `model` on `records` in place: u from `random_pairs` random pairs, then m and
/// the prior by EM over the candidate pairs, at most `max_iterations` rounds.
pub fn train(
    model: &mut Model,
    records: &[Prepared],
    random_pairs: usize,
    max_iterations: usize,
    generic_limit: usize,
) -> TrainingReport {
    const SMOOTH: f64 = 1e-4;
    let n = records.len();
    // u: how often each level occurs between two records drawn at random. The pairs are
    // drawn from fixed seeds, split over the available cores.
    let workers = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .clamp(1, 8);
    let empty: Vec<Vec<f64>> = model
        .fields
        .iter()
        .map(|f| vec![SMOOTH; f.levels.len()])
        .collect();
    let model_ref: &Model = model;
    // Every record's compact form and blocking keys, the records split over the cores.
    let per_record: Vec<(Compact, Vec<BlockKey>)> = std::thread::scope(|scope| {
        let chunk = n.div_ceil(workers).max(1);
        let parts: Vec<_> = records
            .chunks(chunk)
            .map(|part| {
                scope.spawn(move || {
                    part.iter()
                        .map(|r| (model_ref.compact(r), block_keys(r)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        parts.into_iter().flat_map(joined).collect()
    });
    let (forms, keys): (Vec<Compact>, Vec<Vec<BlockKey>>) = per_record.into_iter().unzip();
    // Every record's fields read out of its compact form once: pairs compare these.
    let views: Vec<Vec<Option<View<'_>>>> = forms
        .iter()
        .map(|form| (0..model_ref.fields.len()).map(|f| form.view(f)).collect())
        .collect();
    let kinds: Vec<Kind> = model_ref.fields.iter().map(|f| f.kind).collect();
    let (views, kinds) = (&views, &kinds);
    let pair_levels = |pairs: &[(usize, usize)]| -> PairLevels {
        pairs
            .iter()
            .map(|&(i, j)| levels(kinds, &views[i], &views[j]).collect())
            .collect()
    };
    // u on the workers; meanwhile, on this thread, the candidate pairs of each EM
    // session and of the prior, their levels, and the term frequencies (none of which
    // depends on u).
    let (partials, sessions, prior_pairs, prior_vectors, frequencies) =
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..workers)
                .map(|w| {
                    let mut counts = empty.clone();
                    scope.spawn(move || {
                        let mut rng = SplitMix(0x00C0_FFEE + w as u64);
                        let mut sampled = 0;
                        let share =
                            random_pairs / workers + usize::from(w < random_pairs % workers);
                        for _ in 0..if n >= 2 { share } else { 0 } {
                            let (i, j) = (rng.below(n), rng.below(n));
                            if i == j {
                                continue;
                            }
                            sampled += 1;
                            for (f, level) in levels(kinds, &views[i], &views[j]).enumerate() {
                                if let Some(level) = level {
                                    counts[f][level] += 1.0;
                                }
                            }
                        }
                        (counts, sampled)
                    })
                })
                .collect();
            // m: expectation-maximisation in sessions, each over the pairs that share one
            // kind of blocking key, estimating only the fields that kind of key does not
            // involve (as Splink does): pairs found through a field agree on it and would
            // overstate its m.
            let sessions: Vec<(Vec<bool>, PairLevels)> = SESSIONS
                .iter()
                .filter_map(|session| {
                    let pairs = pairs_sharing(&keys, generic_limit, |k| {
                        session.tags.iter().any(|t| k.0.starts_with(t))
                    });
                    (pairs.len() >= MIN_SESSION_PAIRS).then(|| {
                        let active: Vec<bool> = model_ref
                            .fields
                            .iter()
                            .map(|f| !session.fixed.contains(&f.field.as_str()))
                            .collect();
                        (active, pair_levels(&pairs))
                    })
                })
                .collect();
            let prior_pairs = pairs_sharing(&keys, generic_limit, identifies_person);
            let prior_vectors = pair_levels(&prior_pairs);
            let frequencies = term_frequencies(model_ref, records);
            let partials: Vec<(Vec<Vec<f64>>, usize)> = handles.into_iter().map(joined).collect();
            (partials, sessions, prior_pairs, prior_vectors, frequencies)
        });
    let mut u_counts = empty;
    let mut sampled = 0;
    for (counts, n) in partials {
        sampled += n;
        for (total, part) in u_counts.iter_mut().zip(counts) {
            for (t, p) in total.iter_mut().zip(part) {
                *t += p - SMOOTH;
            }
        }
    }
    for (f, counts) in u_counts.iter().enumerate() {
        let total: f64 = counts.iter().sum();
        for (level, count) in counts.iter().enumerate() {
            model.fields[f].levels[level].u = (count / total).clamp(1e-9, 1.0);
        }
    }

    // The sessions' EM runs, each on a thread of its own (they share only the model).
    let default_m: Vec<Vec<f64>> = model
        .fields
        .iter()
        .map(|f| f.levels.iter().map(|l| l.m).collect())
        .collect();
    let model_ref: &Model = model;
    let default_m = &default_m;
    let outcomes: Vec<(Vec<Vec<f64>>, usize)> = std::thread::scope(|scope| {
        let handles: Vec<_> = sessions
            .iter()
            .map(|(active, vectors)| {
                scope.spawn(move || {
                    em_session(model_ref, default_m, active, vectors, max_iterations)
                })
            })
            .collect();
        handles.into_iter().map(joined).collect()
    });
    let mut estimates: Vec<Vec<Vec<f64>>> = vec![Vec::new(); model.fields.len()];
    let mut iterations = 0;
    for ((active, vectors), (m, rounds)) in sessions.iter().zip(outcomes) {
        iterations += rounds;
        for (f, is_active) in active.iter().enumerate() {
            if *is_active && vectors.iter().any(|v| v[f].is_some()) {
                estimates[f].push(m[f].clone());
            }
        }
    }
    for (f, field_estimates) in estimates.iter().enumerate() {
        if field_estimates.is_empty() {
            continue;
        }
        for (level, l) in model.fields[f].levels.iter_mut().enumerate() {
            let mean = field_estimates.iter().map(|e| e[level]).sum::<f64>()
                / field_estimates.len() as f64;
            l.m = mean.clamp(1e-6, 1.0);
        }
    }
    for (field, frequencies) in model.fields.iter_mut().zip(frequencies) {
        if let Some(frequencies) = frequencies {
            field.term_frequencies = frequencies;
        }
    }

    // The prior: the share of matches among the person-identifying candidate pairs, with
    // m and u now fixed, scaled to the chance that two records drawn at random match.
    let vectors = prior_vectors;
    let m_now: Vec<Vec<f64>> = model
        .fields
        .iter()
        .map(|f| f.levels.iter().map(|l| l.m).collect())
        .collect();
    let none_active = vec![false; model.fields.len()];
    let mut lambda = 0.5;
    for _ in 0..max_iterations {
        let (_, new_lambda) = em_round(model, &m_now, lambda, &vectors, &none_active);
        let done = (new_lambda - lambda).abs() < 1e-6;
        lambda = new_lambda;
        if done {
            break;
        }
    }
    let all_pairs = (n as f64) * (n as f64 - 1.0) / 2.0;
    if all_pairs > 0.0 && !vectors.is_empty() {
        model.prior = (lambda * vectors.len() as f64 / all_pairs).clamp(1e-9, 0.5);
    }
    TrainingReport {
        records: n,
        random_pairs: sampled,
        candidate_pairs: prior_pairs.len(),
        iterations,
        prior: model.prior,
    }
}
