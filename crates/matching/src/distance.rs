//! String distances for the comparison levels, without allocating for the short ASCII
//! values that prepared records hold; each gives exactly the answer of its `strsim`
//! counterpart (property tests below), to which longer or non-ASCII values go.

/// Longest value compared on the stack.
const SHORT: usize = 64;

fn short_ascii(a: &str, b: &str) -> bool {
    a.len() <= SHORT && b.len() <= SHORT && a.is_ascii() && b.is_ascii()
}

/// Jaro-Winkler similarity, as `strsim::jaro_winkler`.
pub fn jaro_winkler(a: &str, b: &str) -> f64 {
    if !short_ascii(a, b) {
        return strsim::jaro_winkler(a, b);
    }
    let (a, b) = (a.as_bytes(), b.as_bytes());
    winkler(jaro(a, b), a, b)
}

/// Winkler's boost of a Jaro similarity `sim` for the prefix (up to four bytes) that `a`
/// and `b` share, as `strsim` applies it: only above 0.7.
fn winkler(sim: f64, a: &[u8], b: &[u8]) -> f64 {
    if sim > 0.7 {
        let prefix = a.iter().take(4).zip(b).take_while(|(x, y)| x == y).count();
        sim + 0.1 * prefix as f64 * (1.0 - sim)
    } else {
        sim
    }
}

/// `jaro_winkler(a, b)` where it may reach `floor`, and 0 where it surely cannot: the
/// characters the two have in common bound the number of Jaro matches, which bounds the
/// similarity, so most pairs of unlike values are given up before the matching itself.
pub fn jaro_winkler_reaching(a: &str, b: &str, floor: f64) -> f64 {
    if !short_ascii(a, b) || a.is_empty() || b.is_empty() {
        return jaro_winkler(a, b);
    }
    let (x, y) = (a.as_bytes(), b.as_bytes());
    let mut counts = [0u8; 128];
    for &c in x {
        counts[usize::from(c)] += 1;
    }
    let mut common = 0usize;
    for &c in y {
        let count = &mut counts[usize::from(c)];
        if *count > 0 {
            *count -= 1;
            common += 1;
        }
    }
    // Jaro is at most this with every common character matched and none transposed, and
    // Winkler's boost only grows with it.
    let jaro = (common as f64 / x.len() as f64 + common as f64 / y.len() as f64 + 1.0) / 3.0;
    let bound = winkler(jaro, x, y);
    // Room for rounding: only a pair clearly below the floor is given up.
    if bound < floor - 1e-9 {
        0.0
    } else {
        jaro_winkler(a, b)
    }
}

/// Jaro similarity of two ASCII strings of at most 64 bytes, with the matched characters
/// kept as bits; the same steps and arithmetic as `strsim::generic_jaro`.
fn jaro(a: &[u8], b: &[u8]) -> f64 {
    let (a_len, b_len) = (a.len(), b.len());
    if a_len == 0 && b_len == 0 {
        return 1.0;
    } else if a_len == 0 || b_len == 0 {
        return 0.0;
    }
    let range = (a_len.max(b_len) / 2).saturating_sub(1);
    let (mut a_flags, mut b_flags) = (0u64, 0u64);
    let mut matches = 0usize;
    for (i, &x) in a.iter().enumerate() {
        let low = i.saturating_sub(range);
        let high = b_len.min(i + range + 1);
        for (j, &y) in b.iter().enumerate().take(high).skip(low) {
            if x == y && b_flags & (1 << j) == 0 {
                a_flags |= 1 << i;
                b_flags |= 1 << j;
                matches += 1;
                break;
            }
        }
    }
    if matches == 0 {
        return 0.0;
    }
    let mut transpositions = 0usize;
    let mut rest = b_flags;
    let mut flagged = a_flags;
    while flagged != 0 {
        let i = flagged.trailing_zeros() as usize;
        flagged &= flagged - 1;
        let j = rest.trailing_zeros() as usize;
        rest &= rest - 1;
        if a[i] != b[j] {
            transpositions += 1;
        }
    }
    transpositions /= 2;
    ((matches as f64 / a_len as f64)
        + (matches as f64 / b_len as f64)
        + ((matches - transpositions) as f64 / matches as f64))
        / 3.0
}

/// Whether the Levenshtein distance is at most `k`, as `strsim::levenshtein(a, b) <= k`.
pub fn levenshtein_at_most(a: &str, b: &str, k: usize) -> bool {
    if a.len().abs_diff(b.len()) > k && a.is_ascii() && b.is_ascii() {
        return false;
    }
    if !short_ascii(a, b) {
        return strsim::levenshtein(a, b) <= k;
    }
    let (a, b) = (a.as_bytes(), b.as_bytes());
    // One edit adds or removes at most one character each way, so it changes at most two
    // of the bits saying which characters occur (`c % 64`: a clash only weakens the test).
    let present = |s: &[u8]| s.iter().fold(0u64, |bits, &c| bits | 1 << (c & 63));
    if (present(a) ^ present(b)).count_ones() as usize > 2 * k {
        return false;
    }
    // Only cells within `k` of the diagonal can lie on a path of cost at most `k`; the
    // others count as more than `k` (`FAR`).
    const FAR: usize = usize::MAX / 2;
    if b.is_empty() {
        return a.len() <= k;
    }
    let mut row = [FAR; SHORT + 1];
    for (j, cell) in row.iter_mut().enumerate().take(b.len().min(k) + 1) {
        *cell = j;
    }
    for (i, &x) in a.iter().enumerate() {
        let i = i + 1;
        // Never empty: `b` is not, and the lengths differ by at most `k`.
        let (low, high) = (i.saturating_sub(k).max(1), b.len().min(i + k));
        let mut diagonal = row[low - 1];
        row[low - 1] = if low == 1 { i } else { FAR };
        let mut row_min = row[low - 1];
        for j in low..=high {
            let above = row[j];
            row[j] = (above + 1)
                .min(row[j - 1] + 1)
                .min(diagonal + usize::from(x != b[j - 1]));
            diagonal = above;
            row_min = row_min.min(row[j]);
        }
        // Every later row is at least this row's smallest cell.
        if row_min > k {
            return false;
        }
    }
    row[b.len()] <= k
}

/// The optimal string alignment distance, as `strsim::osa_distance`.
pub fn osa_distance(a: &str, b: &str) -> usize {
    if !short_ascii(a, b) {
        return strsim::osa_distance(a, b);
    }
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.is_empty() {
        return b.len();
    }
    if b.is_empty() {
        return a.len();
    }
    // Three rows of the table, taken in turn (distances of values this short fit a
    // byte): no row is copied.
    let width = b.len() + 1;
    let mut rows = [[0u8; SHORT + 1]; 3];
    for (j, cell) in rows[1].iter_mut().enumerate().take(width) {
        *cell = j as u8;
    }
    for i in 0..a.len() {
        let [before, previous, current] = rows_at(&mut rows, i);
        current[0] = i as u8 + 1;
        for j in 0..b.len() {
            let cost = u8::from(a[i] != b[j]);
            let mut best = (previous[j + 1] + 1)
                .min(current[j] + 1)
                .min(previous[j] + cost);
            if i > 0 && j > 0 && a[i] == b[j - 1] && a[i - 1] == b[j] {
                best = best.min(before[j - 1] + 1);
            }
            current[j + 1] = best;
        }
    }
    usize::from(rows[(a.len() + 1) % 3][b.len()])
}

/// The rows of the table for the first `i - 1`, `i` and `i + 1` bytes of `a`, as three
/// distinct borrows (`rows[1]` starts as the row for none).
fn rows_at(rows: &mut [[u8; SHORT + 1]; 3], i: usize) -> [&mut [u8; SHORT + 1]; 3] {
    let [r0, r1, r2] = rows;
    match i % 3 {
        0 => [r0, r1, r2],
        1 => [r1, r2, r0],
        _ => [r2, r0, r1],
    }
}

/// A lower bound of the optimal string alignment distance, cheap to reach: the
/// characters one value has that the other lacks, counted with repeats (an insertion,
/// deletion or substitution supplies or removes at most one of them, a swap none), or
/// for values not ASCII the difference in length.
pub fn osa_lower_bound(a: &str, b: &str) -> usize {
    if !(a.is_ascii() && b.is_ascii()) {
        return a.chars().count().abs_diff(b.chars().count());
    }
    let mut counts = [0i32; 128];
    for &c in a.as_bytes() {
        counts[usize::from(c)] += 1;
    }
    for &c in b.as_bytes() {
        counts[usize::from(c)] -= 1;
    }
    // Each count read once, through the characters that hold it (not all 128).
    let (mut more, mut fewer) = (0, 0);
    for &c in a.as_bytes() {
        let count = &mut counts[usize::from(c)];
        if *count > 0 {
            more += *count;
            *count = 0;
        }
    }
    for &c in b.as_bytes() {
        let count = &mut counts[usize::from(c)];
        if *count < 0 {
            fewer -= *count;
            *count = 0;
        }
    }
    more.max(fewer) as usize
}

/// Whether the optimal string alignment distance of two strings is at most one (one
/// insertion, deletion, substitution or swap of neighbours), as
/// `strsim::osa_distance(a, b) <= 1`.
pub fn osa_at_most_one(a: &str, b: &str) -> bool {
    if a.is_ascii() && b.is_ascii() {
        within_one_edit(a.as_bytes(), b.as_bytes())
    } else {
        strsim::osa_distance(a, b) <= 1
    }
}

/// `osa_at_most_one` on bytes.
pub fn within_one_edit(a: &[u8], b: &[u8]) -> bool {
    let (short, long) = if a.len() <= b.len() { (a, b) } else { (b, a) };
    if long.len() - short.len() > 1 {
        return false;
    }
    let prefix = short.iter().zip(long).take_while(|(x, y)| x == y).count();
    if short.len() == long.len() {
        if prefix == short.len() {
            return true;
        }
        // One substitution, or neighbours swapped.
        let (s, l) = (&short[prefix..], &long[prefix..]);
        s[1..] == l[1..] || (s.len() >= 2 && s[0] == l[1] && s[1] == l[0] && s[2..] == l[2..])
    } else {
        // One insertion into the shorter.
        short[prefix..] == long[prefix + 1..]
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn jaro_winkler_is_strsims(a in "[a-e ]{0,12}", b in "[a-e ]{0,12}") {
            prop_assert_eq!(jaro_winkler(&a, &b).to_bits(), strsim::jaro_winkler(&a, &b).to_bits());
        }

        #[test]
        fn jaro_winkler_reaching_gives_up_only_below_the_floor(
            a in "[a-m ]{0,12}",
            b in "[a-m ]{0,12}",
            floor in 0.0f64..1.0,
        ) {
            let exact = jaro_winkler(&a, &b);
            let reaching = jaro_winkler_reaching(&a, &b, floor);
            if exact >= floor {
                prop_assert_eq!(reaching.to_bits(), exact.to_bits());
            } else {
                prop_assert!(reaching < floor);
            }
        }

        #[test]
        fn jaro_winkler_is_strsims_on_long_values(a in "[a-c]{50,70}", b in "[a-c]{50,70}") {
            prop_assert_eq!(jaro_winkler(&a, &b).to_bits(), strsim::jaro_winkler(&a, &b).to_bits());
        }

        #[test]
        fn levenshtein_bound_is_strsims(a in "[a-d@.]{0,14}", b in "[a-d@.]{0,14}", k in 0usize..4) {
            prop_assert_eq!(levenshtein_at_most(&a, &b, k), strsim::levenshtein(&a, &b) <= k);
        }

        #[test]
        fn levenshtein_bound_is_strsims_on_e_mails(
            a in "[a-z0-9]{1,8}[.]?[a-z0-9]{0,6}@[a-z]{2,6}[.](com|co[.]uk)",
            b in "[a-z0-9]{1,8}[.]?[a-z0-9]{0,6}@[a-z]{2,6}[.](com|co[.]uk)",
            k in 0usize..4,
        ) {
            prop_assert_eq!(levenshtein_at_most(&a, &b, k), strsim::levenshtein(&a, &b) <= k);
            // Close pairs too, which random ones rarely are.
            let near = format!("{}x{}", &a[..1], &a[1..]);
            prop_assert_eq!(levenshtein_at_most(&a, &near, k), strsim::levenshtein(&a, &near) <= k);
        }

        #[test]
        fn osa_is_strsims(a in "[a-d0-2]{0,12}", b in "[a-d0-2]{0,12}") {
            prop_assert_eq!(osa_distance(&a, &b), strsim::osa_distance(&a, &b));
        }

        #[test]
        fn osa_is_strsims_on_long_values(a in "[a-c]{50,64}", b in "[a-c]{0,64}") {
            prop_assert_eq!(osa_distance(&a, &b), strsim::osa_distance(&a, &b));
        }

        #[test]
        fn osa_lower_bound_is_never_above_the_distance(
            a in "[a-c0-2]{0,12}",
            b in "[a-c0-2]{0,12}",
            c in "[aé0]{0,6}",
        ) {
            prop_assert!(osa_lower_bound(&a, &b) <= strsim::osa_distance(&a, &b));
            prop_assert!(osa_lower_bound(&a, &c) <= strsim::osa_distance(&a, &c));
            // Blind to order: a value and its reverse hold the same characters.
            let swapped: String = a.chars().rev().collect();
            prop_assert_eq!(osa_lower_bound(&a, &swapped), 0);
            // The characters either holds more of than the other, counted plainly.
            let mut counts = std::collections::BTreeMap::<char, i32>::new();
            a.chars().for_each(|c| *counts.entry(c).or_default() += 1);
            b.chars().for_each(|c| *counts.entry(c).or_default() -= 1);
            let more: i32 = counts.values().filter(|n| **n > 0).sum();
            let fewer: i32 = -counts.values().filter(|n| **n < 0).sum::<i32>();
            prop_assert_eq!(osa_lower_bound(&a, &b), more.max(fewer) as usize);
        }

        #[test]
        fn within_one_edit_agrees_with_strsim(a in "[a-c0-2-]{0,9}", b in "[a-c0-2-]{0,9}") {
            prop_assert_eq!(osa_at_most_one(&a, &b), strsim::osa_distance(&a, &b) <= 1);
        }
    }

    #[test]
    fn non_ascii_goes_to_strsim() {
        assert_eq!(
            jaro_winkler("zoë", "zoe").to_bits(),
            strsim::jaro_winkler("zoë", "zoe").to_bits()
        );
        assert_eq!(
            osa_distance("zoë", "zeo"),
            strsim::osa_distance("zoë", "zeo")
        );
    }
}
