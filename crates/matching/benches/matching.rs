//! Matching one new record against a large population, in memory: normalise, block,
//! look up candidates, score against each and decide. The population size comes from
//! `CMDM_BENCH_RECORDS` (default 1,000,000 synthetic records with duplicates).

use std::collections::HashMap;
use std::hint::black_box;
use std::time::Instant;

use cmdm_domain::{GoldenId, SourceKey, SourceRecord};
use cmdm_matching::synth::{SynthRecord, generate};
use cmdm_matching::{
    Compact, EntityCandidate, FuzzyMatcher, MatchOutcome, Matcher, MatcherConfig, Member, Model,
    Prepared, Sketch,
};
use criterion::{Criterion, criterion_group, criterion_main};

fn source_record(i: usize, r: &SynthRecord) -> SourceRecord {
    r.source_record(SourceKey {
        source: "bench".into(),
        subject: i.to_string().into(),
    })
}

struct Population {
    matcher: FuzzyMatcher,
    prepared: Vec<Prepared>,
    forms: Vec<Compact>,
    sketches: Vec<Sketch>,
    index: HashMap<String, Vec<u32>>,
}

impl Population {
    fn build(records: &[SynthRecord]) -> Self {
        let matcher = FuzzyMatcher::new(Model::default_person(), MatcherConfig::default())
            .expect("default model");
        let prepared: Vec<Prepared> = records
            .iter()
            .enumerate()
            .map(|(i, r)| matcher.prepare(&source_record(i, r)))
            .collect();
        let mut index: HashMap<String, Vec<u32>> = HashMap::new();
        for (i, p) in prepared.iter().enumerate() {
            for key in matcher.block_keys(p) {
                index.entry(key.0).or_default().push(i as u32);
            }
        }
        let forms: Vec<Compact> = prepared.iter().map(|p| matcher.compact(p)).collect();
        let sketches = forms.iter().map(|f| matcher.sketch(f)).collect();
        Population {
            matcher,
            prepared,
            forms,
            sketches,
            index,
        }
    }

    /// What the engine does for one arriving record, minus storage.
    fn match_one(&self, record: &SourceRecord) -> MatchOutcome {
        let prepared = self.matcher.prepare(record);
        let limit = self.matcher.generic_limit();
        // Per record found: the keys it shares, and how many records hold the last one.
        let mut shared: HashMap<u32, (usize, usize)> = HashMap::new();
        for key in self.matcher.block_keys(&prepared) {
            if let Some(members) = self.index.get(&key.0).filter(|m| m.len() <= limit) {
                for m in members {
                    let entry = shared.entry(*m).or_default();
                    *entry = (entry.0 + 1, members.len());
                }
            }
        }
        // As the engine does: a record sharing one key that many records hold is left out.
        let weak = self.matcher.weak_key_limit();
        let shared = shared
            .into_iter()
            .filter(|&(_, (n, holders))| n > 1 || holders <= weak)
            .map(|(m, (n, _))| (m, n));
        let found = cmdm_matching::closest(shared, self.matcher.max_candidates());
        // As the engine does: one probe, and entities that cannot reach the review band
        // left out.
        let form = self.matcher.compact(&prepared);
        let probe = self.matcher.probe(&form);
        // As the engine does: a candidate's form read only where its sketch passes.
        let candidates: Vec<EntityCandidate> = found
            .into_iter()
            .filter(|&i| {
                self.matcher
                    .screen_sketch(&probe, &self.sketches[i as usize])
                    && self.matcher.screen(&probe, &self.forms[i as usize])
            })
            .map(|i| EntityCandidate {
                entity: GoldenId(u64::from(i)),
                members: vec![Member {
                    key: &self.prepared[i as usize].key,
                    form: &self.forms[i as usize],
                }],
            })
            .collect();
        self.matcher.decide(&probe, None, &candidates)
    }
}

fn bench(c: &mut Criterion) {
    let records: usize = std::env::var("CMDM_BENCH_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let people = (records as f64 / 1.3) as usize;
    let started = Instant::now();
    let mut all = generate(people + 2_000, 0.3, 42);
    // Queries: records held out of the population (new people and duplicates of people
    // already in it).
    let queries: Vec<SourceRecord> = all
        .split_off(all.len() - 2_000)
        .iter()
        .enumerate()
        .map(|(i, r)| source_record(i, r))
        .collect();
    all.truncate(records);
    let population = Population::build(&all);
    eprintln!(
        "population of {} records built in {:.1} s",
        population.prepared.len(),
        started.elapsed().as_secs_f64()
    );

    // Percentiles, which criterion does not report.
    let mut times: Vec<f64> = queries
        .iter()
        .map(|q| {
            let t = Instant::now();
            black_box(population.match_one(q));
            t.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    times.sort_by(f64::total_cmp);
    let pct = |p: f64| times[((times.len() - 1) as f64 * p) as usize];
    eprintln!(
        "match one record against {}: p50 {:.1} µs, p99 {:.1} µs, max {:.1} µs ({} queries)",
        population.prepared.len(),
        pct(0.5),
        pct(0.99),
        pct(1.0),
        times.len()
    );

    let mut next = 0;
    c.bench_function(
        &format!("match_one_against_{}", population.prepared.len()),
        |b| {
            b.iter(|| {
                next = (next + 1) % queries.len();
                black_box(population.match_one(&queries[next]))
            })
        },
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
