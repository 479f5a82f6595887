//! Unsupervised training: u from random record pairs, m and the prior by
//! expectation-maximisation over the blocked candidate pairs, no labels needed.

use std::collections::HashMap;

use crate::blocking::block_keys;
use crate::model::{Kind, Model, TermFrequencies};
use crate::prepare::Prepared;

/// What training saw, for its report.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainingReport {
    pub records: usize,
    pub random_pairs: usize,
    pub candidate_pairs: usize,
    pub iterations: usize,
    pub prior: f64,
}

/// A small deterministic generator (SplitMix64), so training is repeatable.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Fills each field's table of value shares, for the kinds where values repeat.
fn add_term_frequencies(model: &mut Model, records: &[Prepared]) {
    const MAX_VALUES: usize = 50_000;
    for field in &mut model.fields {
        if matches!(field.kind, Kind::Email | Kind::Phone | Kind::Identifier) {
            continue;
        }
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for r in records {
            if let Some(v) = r.get(&field.field) {
                *counts.entry(v).or_default() += 1;
            }
        }
        let total: usize = counts.values().sum();
        if total < 2 {
            field.term_frequencies = None;
            continue;
        }
        let mut repeated: Vec<(&str, usize)> =
            counts.into_iter().filter(|(_, c)| *c >= 2).collect();
        repeated.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        repeated.truncate(MAX_VALUES);
        field.term_frequencies = Some(TermFrequencies {
            values: repeated
                .into_iter()
                .map(|(v, c)| (v.to_owned(), c as f64 / total as f64))
                .collect(),
            unseen: 1.0 / total as f64,
        });
    }
}

/// Candidate pairs: records sharing a blocking key, skipping keys shared by more than
/// `generic_limit` records (as live matching does).
pub fn candidate_pairs(records: &[Prepared], generic_limit: usize) -> Vec<(usize, usize)> {
    let mut blocks: HashMap<String, Vec<usize>> = HashMap::new();
    for (i, r) in records.iter().enumerate() {
        for key in block_keys(r) {
            blocks.entry(key.0).or_default().push(i);
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
    let partials: Vec<(Vec<Vec<f64>>, usize)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|w| {
                let mut counts = empty.clone();
                scope.spawn(move || {
                    let mut rng = SplitMix(0x00C0_FFEE + w as u64);
                    let mut sampled = 0;
                    let share = random_pairs / workers + usize::from(w < random_pairs % workers);
                    for _ in 0..if n >= 2 { share } else { 0 } {
                        let (i, j) = (rng.below(n), rng.below(n));
                        if i == j {
                            continue;
                        }
                        sampled += 1;
                        let levels = model_ref.levels(&records[i], &records[j]);
                        for (f, level) in levels.into_iter().enumerate() {
                            if let Some(level) = level {
                                counts[f][level] += 1.0;
                            }
                        }
                    }
                    (counts, sampled)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
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

    // m and the prior: EM over the candidate pairs, u held fixed.
    let pairs = candidate_pairs(records, generic_limit);
    let vectors: Vec<Vec<Option<usize>>> = pairs
        .iter()
        .map(|&(i, j)| model.levels(&records[i], &records[j]))
        .collect();
    let mut iterations = 0;
    for _ in 0..max_iterations {
        iterations += 1;
        let prior_weight = model.prior_weight();
        let weights: Vec<Vec<f64>> = model
            .fields
            .iter()
            .map(|f| f.levels.iter().map(crate::model::Level::weight).collect())
            .collect();
        let mut m_counts: Vec<Vec<f64>> = model
            .fields
            .iter()
            .map(|f| vec![SMOOTH; f.levels.len()])
            .collect();
        let mut match_mass = 0.0;
        for vector in &vectors {
            let w: f64 = prior_weight
                + vector
                    .iter()
                    .enumerate()
                    .filter_map(|(f, l)| l.map(|l| weights[f][l]))
                    .sum::<f64>();
            let p = crate::model::probability(w);
            match_mass += p;
            for (f, level) in vector.iter().enumerate() {
                if let Some(level) = level {
                    m_counts[f][*level] += p;
                }
            }
        }
        let mut change: f64 = 0.0;
        for (f, counts) in m_counts.iter().enumerate() {
            let total: f64 = counts.iter().sum();
            for (level, count) in counts.iter().enumerate() {
                let m = (count / total).clamp(1e-6, 1.0);
                change = change.max((model.fields[f].levels[level].m - m).abs());
                model.fields[f].levels[level].m = m;
            }
        }
        if !vectors.is_empty() {
            let prior = (match_mass / vectors.len() as f64).clamp(1e-6, 0.999);
            change = change.max((model.prior - prior).abs());
            model.prior = prior;
        }
        if change < 1e-4 {
            break;
        }
    }
    add_term_frequencies(model, records);
    // EM's prior is the share of matches among candidate pairs; the model's prior is the
    // chance that two records drawn at random match, which does not count the blocking
    // fields' agreement twice.
    let all_pairs = (n as f64) * (n as f64 - 1.0) / 2.0;
    if all_pairs > 0.0 && !vectors.is_empty() {
        let matches = model.prior * vectors.len() as f64;
        model.prior = (matches / all_pairs).clamp(1e-9, 0.5);
    }
    TrainingReport {
        records: n,
        random_pairs: sampled,
        candidate_pairs: pairs.len(),
        iterations,
        prior: model.prior,
    }
}
