//! A record's sketch: a few bits of each of its fields, 48 bytes in all, enough to bound
//! the best score it could reach against a probe without reading its compact form.
//!
//! Most candidates a blocking key finds are strangers (against a million records, about
//! 76 records are screened per arriving one and 0.3 % pass). Reading each one's compact
//! form is a cache miss or two; its sketch sits in the match index next to its entity, in
//! memory read anyway, and rules most of them out.
//!
//! Per field, the sketch keeps what proves a level cannot be reached:
//! - a date `YYYY-MM-DD`: its eight digits, from which its level is worked out exactly;
//! - an e-mail or phone: a hash of the part whose equality gives level 1 (the mailbox
//!   name, the last eight digits) and how many of the value's characters fall in each of
//!   16 groups. An edit changes at most one character on either side, so counts that
//!   differ by more than the allowed edits prove the values further apart;
//! - a postcode or a text (an address line, a city): a hash of the value, its length and
//!   which of 18 groups its characters fall in. A group one value has and the other lacks
//!   holds a character nothing matches, which bounds Jaro's matches and so the
//!   Jaro-Winkler similarity of texts; a postcode one edit away lacks at most one group;
//! - any other field: a hash of the value, which proves two values unequal.
//!
//! The bound takes, per field, the best weight among the levels the sketches leave
//! possible, summed in the model's order: never below the score (`quick_score`), whose
//! per-field weights it dominates one by one.

use std::hash::BuildHasher;

use crate::compact::{Compact, View};
use crate::model::{Kind, Model};

/// A record's sketch under one `SketchLayout`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sketch([u64; WORDS]);

const WORDS: usize = 6;

/// How many groups an `Edits` part counts characters in, and the bits of each count.
const GROUPS: usize = 16;
const COUNT_BITS: usize = 3;
const MAX_COUNT: u64 = (1 << COUNT_BITS) - 1;

/// A `Chars` part: the value's hash in its low 8 bits, then its length, then which of
/// `PRESENCE` groups its characters fall in.
const LENGTH_SHIFT: u32 = 8;
/// The longest length a `Chars` part tells; longer values are 63 too.
const MAX_LENGTH: u64 = 63;
const PRESENCE_SHIFT: u32 = 14;
const PRESENCE: usize = 18;
const PRESENCE_MASK: u64 = (1 << PRESENCE) - 1;

/// A date part that is not `YYYY-MM-DD` (a raw value kept unparsed): nothing is proved.
const UNKNOWN_DATE: u64 = 0xFFFF_FFFF;

/// What one field keeps: absent is always 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    /// A hash of the value in 8 bits.
    Hash,
    /// The eight digits of a `YYYY-MM-DD` date, each plus one in four bits.
    Date,
    /// A 16-bit hash of the part whose equality gives level 1, then the value's
    /// character counts (48 bits), for values whose level 1 also takes at most `edits`
    /// edits (insertions, deletions, substitutions, swaps of neighbours).
    Edits { edits: u32 },
    /// An 8-bit hash of the value, its length in characters (six bits) and which of 18
    /// groups its characters fall in: for a postcode, whose level 1 takes at most one
    /// edit (`jaro` false), or a text compared by Jaro-Winkler similarity (`jaro`).
    Chars { jaro: bool },
}

impl Part {
    fn of(kind: Kind) -> Part {
        match kind {
            Kind::Date => Part::Date,
            // Within two Levenshtein edits.
            Kind::Email => Part::Edits { edits: 2 },
            // Within one edit or swap of neighbours.
            Kind::Phone => Part::Edits { edits: 1 },
            Kind::Postcode => Part::Chars { jaro: false },
            Kind::Text => Part::Chars { jaro: true },
            _ => Part::Hash,
        }
    }

    fn bits(self) -> usize {
        match self {
            Part::Hash => 8,
            Part::Date => 32,
            Part::Edits { .. } => 64,
            Part::Chars { .. } => 32,
        }
    }
}

/// Where one field's part lies in a sketch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Place {
    part: Part,
    word: usize,
    shift: u32,
}

impl Place {
    fn get(self, sketch: &Sketch) -> u64 {
        let bits = self.part.bits();
        let mask = if bits == 64 {
            u64::MAX
        } else {
            (1 << bits) - 1
        };
        (sketch.0[self.word] >> self.shift) & mask
    }

    fn set(self, sketch: &mut Sketch, value: u64) {
        sketch.0[self.word] |= value << self.shift;
    }

    /// The part of `view`, a value of a field of `kind`: never 0.
    pub(crate) fn encode(self, kind: Kind, view: View<'_>) -> u64 {
        let value = view.value;
        match self.part {
            Part::Hash => hash(value) % 255 + 1,
            Part::Date => date_digits(value).unwrap_or(UNKNOWN_DATE),
            Part::Edits { .. } => {
                let key = match kind {
                    Kind::Email => value.split('@').next(),
                    // As `Kind::level_of` takes a phone's tail: `None` off a boundary.
                    _ => value.get(value.len().saturating_sub(8)..),
                };
                let key = key.map_or(0, |k| hash(k) | 1);
                (key % 65_535 + 1) << 48 | counts(value)
            }
            Part::Chars { .. } => {
                let (length, groups) = value.chars().fold((0, 0), |(length, groups), c| {
                    (length + 1, groups | 1 << group(c, PRESENCE))
                });
                let length = u64::min(length, MAX_LENGTH);
                groups << PRESENCE_SHIFT | length << LENGTH_SHIFT | (hash(value) % 255 + 1)
            }
        }
    }

    /// The levels of a pair of values whose parts are `a` and `b` (both present) that the
    /// parts leave possible, as a set of bits; `levels` is how many the kind has.
    fn possible(self, a: u64, b: u64, levels: usize) -> u32 {
        let all = (1 << levels) - 1;
        let not_exact = all & !1;
        match self.part {
            Part::Hash if a == b => all,
            Part::Hash => not_exact,
            Part::Date if a == UNKNOWN_DATE || b == UNKNOWN_DATE => all,
            Part::Date => 1 << date_level(a, b),
            Part::Edits { .. } if a >> 48 == b >> 48 => all,
            Part::Edits { edits } if count_distance(a, b) <= edits => not_exact,
            // Neither the key nor the edits: the last level, "different", only.
            Part::Edits { .. } => 1 << (levels - 1),
            Part::Chars { .. } if a & 0xFF == b & 0xFF => all,
            Part::Chars { jaro: false } => {
                // One edit changes the length by one at most, and leaves at most one
                // group on either side that the other lacks.
                let (la, lb) = (length(a), length(b));
                let (only_a, only_b) = groups_apart(a, b);
                if la.abs_diff(lb) <= 1 && only_a <= 1 && only_b <= 1 {
                    not_exact
                } else {
                    1 << (levels - 1)
                }
            }
            Part::Chars { jaro: true } => {
                // Text levels: 1 from 0.92, 2 from 0.8, 3 below (`Kind::level_of`).
                let possible = match jaro_winkler_bound(a, b) {
                    Some(bound) if bound < 0.8 - 1e-9 => 1 << 3,
                    Some(bound) if bound < 0.92 - 1e-9 => 1 << 2 | 1 << 3,
                    _ => not_exact,
                } & all;
                // A model whose text field has fewer levels than its kind: nothing proved.
                if possible == 0 { not_exact } else { possible }
            }
        }
    }
}

/// Which fields of a model a sketch holds, and where.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SketchLayout {
    /// By the model's field positions; `None` for a field that did not fit.
    places: Vec<Option<Place>>,
    kinds: Vec<Kind>,
}

impl SketchLayout {
    /// Lays out `model`'s fields, widest parts first (e-mails and phones, then dates,
    /// postcodes and texts, then hashes), in model order within a width, each in the
    /// first word with room, as many as fit in 48 bytes.
    pub fn of(model: &Model) -> Self {
        let kinds: Vec<Kind> = model.fields.iter().map(|f| f.kind).collect();
        let mut order: Vec<usize> = (0..kinds.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(Part::of(kinds[i]).bits()));
        let mut places = vec![None; kinds.len()];
        let mut used = [0usize; WORDS];
        for i in order {
            let part = Part::of(kinds[i]);
            // Widest first, each in the first word with room: none straddles two words.
            let Some(word) = (0..WORDS).find(|&w| used[w] + part.bits() <= 64) else {
                continue;
            };
            places[i] = Some(Place {
                part,
                word,
                shift: used[word] as u32,
            });
            used[word] += part.bits();
        }
        SketchLayout { places, kinds }
    }

    /// The sketch of a compact record of the model this layout was made for.
    pub fn sketch(&self, form: &Compact) -> Sketch {
        let mut sketch = Sketch::default();
        for (i, place) in self.places.iter().enumerate() {
            if let (Some(place), Some(view)) = (place, form.view(i)) {
                place.set(&mut sketch, place.encode(self.kinds[i], view));
            }
        }
        sketch
    }

    pub(crate) fn place(&self, field: usize) -> Option<Place> {
        self.places.get(field).copied().flatten()
    }
}

/// The best of a field's weights for levels 1 to 3 for each set of them (a bit per level,
/// the set shifted right by one) that sketches may leave possible; an exact agreement's
/// weight, which may depend on the value, is taken apart.
pub(crate) type BestBySet = [f64; 8];

/// `BestBySet` of a field's first `levels` weights; an empty set has no weight.
pub(crate) fn best_by_set(weights: &[f64; 4], levels: usize) -> BestBySet {
    std::array::from_fn(|set| {
        (1..levels.min(4))
            .filter(|level| (set << 1) & (1 << level) != 0)
            .map(|level| weights[level])
            .fold(f64::NEG_INFINITY, f64::max)
    })
}

/// The best weight over the levels a probe's part `a` and a candidate's sketch leave
/// possible (`exact` for level 0, `best` by set for the others, of a field with `levels`
/// levels); 0 where the candidate has no value (nothing is added then).
pub(crate) fn bound(
    place: Place,
    a: u64,
    b: &Sketch,
    exact: f64,
    best: &BestBySet,
    levels: usize,
) -> f64 {
    let b = place.get(b);
    if b == 0 {
        return 0.0;
    }
    let possible = place.possible(a, b, levels) as usize;
    let rest = best[possible >> 1];
    if possible & 1 != 0 {
        rest.max(exact)
    } else {
        rest
    }
}

fn hash(text: &str) -> u64 {
    foldhash::fast::FixedState::with_seed(0x736b_6574).hash_one(text)
}

/// The group of `groups` a character falls in, by a hash of it.
fn group(c: char, groups: usize) -> u32 {
    (((u64::from(c).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) * groups as u64) >> 32) as u32
}

/// How many of the value's characters fall in each of `GROUPS` groups, each count in
/// `COUNT_BITS` bits, stopping at `MAX_COUNT`.
fn counts(value: &str) -> u64 {
    let mut n = [0u64; GROUPS];
    for c in value.chars() {
        let group = group(c, GROUPS) as usize;
        n[group] = (n[group] + 1).min(MAX_COUNT);
    }
    n.iter()
        .enumerate()
        .fold(0, |bits, (group, &k)| bits | k << (COUNT_BITS * group))
}

/// The fewest edits that can turn a value with counts `a` into one with counts `b`: an
/// insertion, deletion or substitution adds or removes at most one character on either
/// side, a swap of neighbours none, so the edits are at least the characters one side
/// has more of. A count that stopped at `MAX_COUNT`, or a group shared by characters,
/// only makes the difference seem smaller.
fn count_distance(a: u64, b: u64) -> u32 {
    excess(a, b).max(excess(b, a))
}

/// The sum over the 16 three-bit counts in the low 48 bits of `a` and `b` of how many
/// more `a` has, worked out eight counts at a time: each count is taken with three free
/// bits above it, where `8 + x - y` cannot borrow from its neighbour and its fourth bit
/// tells whether `x >= y`.
fn excess(a: u64, b: u64) -> u32 {
    /// The even counts (the octal digits 0, 2, …, 14), and the lowest bit of each.
    const EVEN: u64 = 0o0707_0707_0707_0707;
    const ONES: u64 = 0o0101_0101_0101_0101;
    let half = |x: u64, y: u64| -> u64 {
        let t = ((x & EVEN) | ONES << 3) - (y & EVEN);
        let ahead = (t >> 3) & ONES;
        let difference = t & (ahead * 7);
        // The eight differences, each below 8, summed in the top six-bit lane.
        (difference.wrapping_mul(ONES) >> 42) & 0x3F
    };
    (half(a, b) + half(a >> 3, b >> 3)) as u32
}

/// The most Jaro-Winkler similarity two values with `Chars` parts `a` and `b` may have,
/// where the parts tell: Jaro's matches are at most the characters the two have in common,
/// and with every one matched, none transposed and a four-character common prefix the
/// similarity is the highest it can be with that many matches.
fn jaro_winkler_bound(a: u64, b: u64) -> Option<f64> {
    let (la, lb) = (length(a), length(b));
    if la == MAX_LENGTH || lb == MAX_LENGTH || la == 0 || lb == 0 {
        return None;
    }
    // Each group one value has and the other lacks holds a character of it matched by none.
    let (only_a, only_b) = groups_apart(a, b);
    let m = la.saturating_sub(only_a).min(lb.saturating_sub(only_b)) as f64;
    if m == 0.0 {
        return Some(0.0);
    }
    let jaro = (m / la as f64 + m / lb as f64 + 1.0) / 3.0;
    Some(if jaro > 0.7 {
        jaro + 0.4 * (1.0 - jaro)
    } else {
        jaro
    })
}

/// The length a `Chars` part tells.
fn length(part: u64) -> u64 {
    part >> LENGTH_SHIFT & MAX_LENGTH
}

/// How many of `PRESENCE` groups of characters only `a`'s value has characters in, and
/// only `b`'s.
fn groups_apart(a: u64, b: u64) -> (u64, u64) {
    let (sa, sb) = (
        a >> PRESENCE_SHIFT & PRESENCE_MASK,
        b >> PRESENCE_SHIFT & PRESENCE_MASK,
    );
    (
        u64::from((sa & !sb).count_ones()),
        u64::from((sb & !sa).count_ones()),
    )
}

/// The digits of a `YYYY-MM-DD` date, each plus one in four bits, first digit highest.
fn date_digits(value: &str) -> Option<u64> {
    let b = value.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let mut digits = 0u64;
    for (i, &c) in b.iter().enumerate() {
        if i == 4 || i == 7 {
            continue;
        }
        if !c.is_ascii_digit() {
            return None;
        }
        digits = digits << 4 | u64::from(c - b'0' + 1);
    }
    Some(digits)
}

/// `Kind::Date.level_of` for two `YYYY-MM-DD` dates given by their digits.
fn date_level(a: u64, b: u64) -> usize {
    if a == b {
        return 0;
    }
    // The digits that differ, one bit each: equal lengths are within one edit (as
    // `within_one_edit` counts them) when one digit differs or two neighbours swapped.
    let apart = a ^ b;
    let differing = (apart | apart >> 1 | apart >> 2 | apart >> 3) & 0x1111_1111;
    let low = differing.trailing_zeros();
    let neighbours_swapped = differing == 0x11 << low && {
        let (x, y) = ((a >> low) & 0xFF, (b >> low) & 0xFF);
        x == (y & 0xF) << 4 | y >> 4
    };
    let year = |d: u64| d >> 16;
    let (month, day) = (|d: u64| (d >> 8) & 0xFF, |d: u64| d & 0xFF);
    let swapped = year(a) == year(b) && month(a) == day(b) && day(a) == month(b);
    if differing.count_ones() <= 1 || neighbours_swapped || swapped {
        1
    } else if year(a) == year(b) {
        2
    } else {
        3
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::compact::View;

    fn level(kind: Kind, x: &str, y: &str) -> usize {
        kind.level_of(View::of(kind, x, None), View::of(kind, y, None))
    }

    fn possible(kind: Kind, x: &str, y: &str) -> u32 {
        let place = Place {
            part: Part::of(kind),
            word: 0,
            shift: 0,
        };
        let (a, b) = (
            place.encode(kind, View::of(kind, x, None)),
            place.encode(kind, View::of(kind, y, None)),
        );
        place.possible(a, b, kind.labels().len())
    }

    proptest! {
        /// Whatever the values, the level `level_of` finds is one the parts leave possible.
        #[test]
        fn the_true_level_is_always_possible(
            kind in prop::sample::select(vec![
                Kind::Name, Kind::GivenName, Kind::Date, Kind::Email, Kind::Phone,
                Kind::Identifier, Kind::Postcode, Kind::Text, Kind::Exact,
            ]),
            x in "(19[89][0-9]-[01][0-9]-[0-3][0-9]|[a-c@.]{1,8}|[+0-3]{1,10}|é[a-b]{0,3})",
            edit in "[a-c0-3@.é]{0,2}",
            at in 0usize..12,
            mode in 0u8..4,
        ) {
            // Values close to each other as often as far apart: an edit of `x`.
            let chars: Vec<char> = x.chars().collect();
            let at = at.min(chars.len());
            let mut y: Vec<char> = chars.clone();
            match mode {
                0 => y.splice(at..at, edit.chars()).for_each(drop),
                1 => { y.drain(at..(at + 1).min(chars.len())); }
                2 if at + 1 < chars.len() => y.swap(at, at + 1),
                _ => y = edit.chars().collect(),
            }
            let y: String = y.into_iter().collect();
            for (a, b) in [(x.as_str(), y.as_str()), (y.as_str(), x.as_str())] {
                if a.is_empty() || b.is_empty() {
                    continue;
                }
                let true_level = level(kind, a, b);
                prop_assert!(possible(kind, a, b) & (1 << true_level) != 0,
                    "{kind:?} {a:?} {b:?}: level {true_level}");
            }
        }
    }

    fn count_distance_by_count(a: u64, b: u64) -> u32 {
        let (mut more, mut fewer) = (0, 0);
        for group in 0..GROUPS {
            let shift = COUNT_BITS * group;
            let (x, y) = ((a >> shift) & MAX_COUNT, (b >> shift) & MAX_COUNT);
            more += x.saturating_sub(y);
            fewer += y.saturating_sub(x);
        }
        more.max(fewer) as u32
    }

    proptest! {
        #[test]
        fn count_distance_is_the_larger_excess_count_by_count(
            a in 0u64..(1 << 48),
            b in 0u64..(1 << 48),
            key in any::<u16>(),
        ) {
            let with_key = |x: u64| u64::from(key) << 48 | x;
            prop_assert_eq!(count_distance(with_key(a), with_key(b)), count_distance_by_count(a, b));
            let c = counts("anthony.guzman201@icloud.com");
            prop_assert_eq!(count_distance(c, a), count_distance_by_count(c, a));
        }
    }

    #[test]
    fn dates_are_levelled_exactly() {
        for (x, y) in [
            ("1980-02-03", "1980-02-03"),
            ("1980-02-03", "1980-03-02"),
            ("1980-02-03", "1980-02-13"),
            ("1980-02-03", "1980-02-30"),
            ("1980-02-03", "1980-11-23"),
            ("1980-02-03", "1971-02-03"),
            ("1980-02-03", "1908-02-03"),
        ] {
            assert_eq!(
                possible(Kind::Date, x, y),
                1 << level(Kind::Date, x, y),
                "{x} {y}"
            );
        }
        // A raw date proves nothing.
        assert_eq!(possible(Kind::Date, "1980-02-03", "3 feb 1980"), 0b1111);
    }

    #[test]
    fn strangers_contact_points_are_proved_different() {
        assert_eq!(
            possible(
                Kind::Email,
                "anthony.guzman201@icloud.com",
                "kyle.russell672@hotmail.com"
            ),
            0b100
        );
        assert_eq!(
            possible(Kind::Phone, "+447921439629", "+447093353275"),
            0b100
        );
        // Namesakes' mailboxes, three edits apart (most of their character pairs shared).
        assert_eq!(
            possible(
                Kind::Email,
                "anthony.guzman201@icloud.com",
                "anthony.guzman57@icloud.com"
            ),
            0b100
        );
        // One slip each: not proved different.
        assert_ne!(
            possible(
                Kind::Email,
                "kyle.russell672@hotmail.com",
                "kyle.russel672@hotmail.com"
            ),
            0b100
        );
        assert_ne!(
            possible(Kind::Phone, "+447093353275", "+447093352375"),
            0b100
        );
    }

    #[test]
    fn strangers_addresses_and_postcodes_are_proved_different() {
        // Text: Jaro-Winkler below 0.8, the last level.
        assert_eq!(possible(Kind::Text, "belfast", "westminster"), 0b1000);
        assert_eq!(
            possible(Kind::Text, "10 richmond road", "102 main street") & 0b0010,
            0,
            "not level 1"
        );
        assert_eq!(possible(Kind::Postcode, "NL19 7PY", "UD18 5EA"), 0b100);
        // Near values: their levels stay possible.
        assert_eq!(
            possible(Kind::Text, "10 richmond road", "10 richmond rd") & 0b0110,
            0b0110
        );
        assert_ne!(possible(Kind::Postcode, "NL19 7PY", "NL19 7YP"), 0b100);
        assert_ne!(possible(Kind::Postcode, "NL19 7PY", "NL197PY"), 0b100);
        // Too long to count: nothing proved.
        let long = "a".repeat(70);
        assert_eq!(possible(Kind::Text, &long, "b"), 0b1110);
    }

    #[test]
    fn the_default_model_fits_in_one_sketch() {
        let layout = SketchLayout::of(&Model::default_person());
        assert!(layout.places.iter().all(Option::is_some));
        // No two parts overlap.
        let mut used = [0u64; WORDS];
        for place in layout.places.iter().flatten() {
            let mut one = Sketch::default();
            place.set(
                &mut one,
                if place.part.bits() == 64 {
                    u64::MAX
                } else {
                    (1 << place.part.bits()) - 1
                },
            );
            for (u, w) in used.iter_mut().zip(one.0) {
                assert_eq!(*u & w, 0);
                *u |= w;
            }
        }
    }
}
