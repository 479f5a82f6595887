//! The matching core: normalise, block, score, decide, survive. Pure code, no I/O: the
//! engine hands it prepared records and candidate entities and stores what it decides.

pub mod blocking;
pub mod compact;
pub mod distance;
pub mod fuzzy;
pub mod model;
pub mod normalise;
pub mod prepare;
pub mod sketch;
pub mod survive;
pub mod synth;
pub mod train;

use cmdm_domain::{GoldenId, MatchExplanation, SourceKey, SourceRecord};

pub use compact::Compact;
pub use fuzzy::{FuzzyMatcher, MatcherConfig};
pub use model::{Model, Probe};
pub use prepare::{PrepareConfig, Prepared};
pub use sketch::{Sketch, SketchLayout};
pub use survive::{Strategy, Survivorship, survive, survive_onto};

/// The `max` records sharing the most blocking keys, ties to the smallest key, so the
/// choice never depends on the order they were found in; returned in no particular order
/// (ranking them is only needed, and only paid for, when there are more than `max`).
pub fn closest<K: Ord>(shared: impl IntoIterator<Item = (K, usize)>, max: usize) -> Vec<K> {
    let mut ranked: Vec<(K, usize)> = shared.into_iter().collect();
    let order = |a: &(K, usize), b: &(K, usize)| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0));
    if ranked.len() > max && max > 0 {
        ranked.select_nth_unstable_by(max - 1, order);
    }
    ranked.truncate(max);
    ranked.into_iter().map(|(k, _)| k).collect()
}

/// A blocking key such as `em:ann@example.org`: records sharing one are candidates.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BlockKey(pub String);

/// A member of a candidate entity: its source key and its compact form (borrowed from
/// wherever the caller keeps them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member<'a> {
    pub key: &'a SourceKey,
    pub form: &'a Compact,
}

/// An entity found through shared blocking keys, with all its members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntityCandidate<'a> {
    pub entity: GoldenId,
    pub members: Vec<Member<'a>>,
}

/// What the matcher decided for one record.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MatchOutcome {
    /// The entity to join (none: start a new entity). Never set when a home was given.
    pub link: Option<(GoldenId, MatchExplanation)>,
    /// Further entities that are the same person and compatible: merge them.
    pub merge: Vec<(GoldenId, MatchExplanation)>,
    /// Entities the record may belong to: a steward decides.
    pub review: Vec<(GoldenId, MatchExplanation)>,
}

/// How two records compare, against the thresholds the matcher decides with.
#[derive(Debug, Clone, PartialEq)]
pub struct PairVerdict {
    /// Field levels and weights, total weight and probability.
    pub explanation: MatchExplanation,
    /// Probability at or above which a record links automatically.
    pub link: f64,
    /// Probability at or above which (below `link`) a steward reviews.
    pub review: f64,
    /// Whether the two contradict each other on identity fields (then never linked).
    pub contradict: bool,
}

/// The matcher interface the engine calls; implementations are pure and deterministic.
pub trait Matcher: Send + Sync {
    /// Normalises a record for blocking and comparison.
    fn prepare(&self, record: &SourceRecord) -> Prepared;

    /// The compact form of a prepared record, which `decide` compares members in.
    fn compact(&self, record: &Prepared) -> Compact;

    /// The blocking keys of a prepared record.
    fn block_keys(&self, record: &Prepared) -> Vec<BlockKey>;

    /// Keys shared by more records than this are generic and produce no candidates.
    fn generic_limit(&self) -> usize;

    /// At most this many candidate records are scored for one record: those sharing the
    /// most blocking keys with it.
    fn max_candidates(&self) -> usize;

    /// A record sharing only one key with the arriving record, a key held by more
    /// records than this, is no candidate.
    fn weak_key_limit(&self) -> usize;

    /// The record whose compact form is `record`, made ready to be compared with its
    /// candidates: made once per decision, for `screen` and `decide`.
    fn probe<'a>(&self, record: &'a Compact) -> Probe<'a>;

    /// Decides where the probed record belongs. `home` is the entity it already belongs
    /// to, if any; `candidates` are the other entities found through its blocking keys.
    fn decide(
        &self,
        record: &Probe<'_>,
        home: Option<&EntityCandidate<'_>>,
        candidates: &[EntityCandidate<'_>],
    ) -> MatchOutcome;

    /// A quick test of another record against the probed one, false only for a record
    /// that cannot reach the review band with it: an entity none of whose members passes
    /// plays no part in `decide`, so callers may leave it out without changing the
    /// outcome.
    fn screen(&self, record: &Probe<'_>, other: &Compact) -> bool;

    /// The sketch of a compact record, which `screen_sketch` reads.
    fn sketch(&self, record: &Compact) -> Sketch;

    /// `screen` from another record's sketch alone, cheaper and coarser: false only where
    /// `screen` is false too.
    fn screen_sketch(&self, record: &Probe<'_>, other: &Sketch) -> bool;

    /// Compares two records field by field, for explanations and search.
    fn compare(&self, a: &Prepared, b: &Prepared) -> PairVerdict;

    /// The normalised key of a contact point: `email:…` or `phone:+…` (E.164), or `None`
    /// when the text is neither an e-mail address nor a phone number.
    fn contact_point(&self, raw: &str) -> Option<String>;
}

/// The blocking key under which records holding a contact point are found.
pub fn contact_point_block(contact_point: &str) -> Option<String> {
    if let Some(email) = contact_point.strip_prefix("email:") {
        Some(format!("em:{email}"))
    } else {
        contact_point
            .strip_prefix("phone:")
            .map(|phone| format!("ph:{phone}"))
    }
}

#[cfg(test)]
mod tests {
    use super::closest;

    #[test]
    fn closest_keeps_the_most_shared_and_ties_to_the_smallest_key() {
        let found = [("d", 1), ("a", 1), ("c", 3), ("b", 1), ("e", 2)];
        let mut kept = closest(found, 3);
        kept.sort();
        assert_eq!(kept, ["a", "c", "e"]);
        let mut reversed = closest(found.into_iter().rev(), 3);
        reversed.sort();
        assert_eq!(reversed, kept, "the order found in does not matter");
        assert_eq!(closest(found, 10).len(), 5);
    }
}
