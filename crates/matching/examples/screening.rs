//! How selective screening is: of the records sharing a non-generic blocking key with a
//! record, how many pass its sketch bound, and how many of those the compact forms'
//! screen keeps (the ones scoring can reach the review band with). Every tenth record of
//! `cmdm generate`'s people (`PEOPLE`, default 200,000, 0.3 duplicates each) is probed
//! against all the others with the default model.
//!
//! `cargo run --release -p cmdm-matching --example screening -- [PEOPLE]`
use std::collections::{HashMap, HashSet};

use cmdm_domain::SourceKey;
use cmdm_matching::synth::generate;
use cmdm_matching::{FuzzyMatcher, Matcher, MatcherConfig, Model};

fn main() {
    let people: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(200_000);
    let records = generate(people, 0.3, 42);
    let matcher = FuzzyMatcher::new(Model::default_person(), MatcherConfig::default()).unwrap();
    let prepared: Vec<_> = records
        .iter()
        .enumerate()
        .map(|(i, r)| {
            matcher.prepare(&r.source_record(SourceKey {
                source: "b".into(),
                subject: i.to_string().into(),
            }))
        })
        .collect();
    let forms: Vec<_> = prepared.iter().map(|p| matcher.compact(p)).collect();
    let sketches: Vec<_> = forms.iter().map(|f| matcher.sketch(f)).collect();
    let mut index: HashMap<String, Vec<u32>> = HashMap::new();
    for (i, p) in prepared.iter().enumerate() {
        for key in matcher.block_keys(p) {
            index.entry(key.0).or_default().push(i as u32);
        }
    }
    let limit = matcher.generic_limit();
    let (mut cands, mut sk, mut sc, mut same_sk, mut same_sc, mut same) =
        (0u64, 0u64, 0u64, 0u64, 0u64, 0u64);
    for i in (0..records.len()).step_by(10) {
        let probe = matcher.probe(&forms[i]);
        let mut seen = HashSet::new();
        for key in matcher.block_keys(&prepared[i]) {
            let Some(m) = index.get(&key.0).filter(|m| m.len() <= limit) else {
                continue;
            };
            for &j in m {
                let j = j as usize;
                if j == i || !seen.insert(j) {
                    continue;
                }
                let twin = records[j].person == records[i].person;
                cands += 1;
                same += twin as u64;
                if matcher.screen_sketch(&probe, &sketches[j]) {
                    sk += 1;
                    same_sk += twin as u64;
                    if matcher.screen(&probe, &forms[j]) {
                        sc += 1;
                        same_sc += twin as u64;
                    }
                }
            }
        }
    }
    println!("candidates {cands} (the same person {same})");
    println!("pass the sketch {sk} (the same person {same_sk})");
    println!("pass the screen {sc} (the same person {same_sc})");
    println!("sketch passes per screen pass {:.2}", sk as f64 / sc as f64);
}
