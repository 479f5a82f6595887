//! Filters of the keys a tree may hold, kept in memory so that a batch's reads of keys
//! no tree holds (a new event's dedup key, a new record's key and data key) seldom reach
//! sled: each such read costs a walk down the tree, and most of a load's reads are such.
//!
//! A filter never forgets a key. It learns every key a batch puts from the moment the
//! store opens, and the keys stored before from one scan of the tree ([`KeyFilter::build`]);
//! it answers only once built. So "absent" is always right, and "may hold" is wrong for
//! about one key in a hundred that no tree holds for each layer the filter has grown to
//! ([`Layers`]), and for deleted keys: sled is asked then.

use std::hash::BuildHasher;

/// How the filter hashes keys: fixed, as nothing hashed is kept beyond the process.
const HASHER: foldhash::fast::FixedState = foldhash::fast::FixedState::with_seed(0x6a09_e667);

/// Keys put before the filter is built are remembered by their hashes, up to this many;
/// past it the filter gives up and is never used (the store then reads sled as before).
const MAX_RECORDED: usize = 1 << 20;

/// The smallest layer's capacity, in keys.
const MIN_CAPACITY: usize = 1 << 16;

/// The 64-bit hash a filter keeps of a key.
pub(crate) fn hash(key: &[u8]) -> u64 {
    HASHER.hash_one(key)
}

/// What a tree's filter knows.
#[derive(Debug)]
pub(crate) enum KeyFilter {
    /// Not built yet: the hashes of the keys put since the store opened.
    Recording(Vec<u64>),
    /// Built: every key the tree may hold went into it.
    Built(Layers),
    /// Too many keys were put before a build: the filter is never used.
    Off,
}

impl Default for KeyFilter {
    fn default() -> Self {
        KeyFilter::Recording(Vec::new())
    }
}

impl KeyFilter {
    /// Learns a key the tree may hold from now on.
    pub fn insert(&mut self, hash: u64) {
        match self {
            KeyFilter::Recording(recorded) if recorded.len() >= MAX_RECORDED => {
                *self = KeyFilter::Off;
            }
            KeyFilter::Recording(recorded) => recorded.push(hash),
            KeyFilter::Built(layers) => layers.insert(hash),
            KeyFilter::Off => {}
        }
    }

    /// Builds the filter from the hashes of the keys stored in the tree (read after the
    /// store opened) and those put since. Built once; a second build changes nothing.
    pub fn build(&mut self, stored: &[u64]) {
        if let KeyFilter::Recording(recorded) = self {
            let mut layers = Layers::with_capacity(2 * (stored.len() + recorded.len()));
            for &hash in stored.iter().chain(recorded.iter()) {
                layers.insert(hash);
            }
            *self = KeyFilter::Built(layers);
        }
    }

    /// Whether the tree surely holds no such key (`false`: it may, or the filter cannot
    /// tell yet).
    pub fn surely_absent(&self, hash: u64) -> bool {
        match self {
            KeyFilter::Built(layers) => !layers.may_hold(hash),
            KeyFilter::Recording(_) | KeyFilter::Off => false,
        }
    }

    /// Whether the filter waits for its build.
    pub fn is_recording(&self) -> bool {
        matches!(self, KeyFilter::Recording(_))
    }
}

/// Bloom filters that grow by layers: a full layer is kept and a new one twice the
/// capacity of all before it takes the keys that follow. A key may be held if any layer
/// says so; each layer, full, answers wrongly for about 1 % of other keys.
#[derive(Debug)]
pub(crate) struct Layers {
    layers: Vec<Layer>,
}

impl Layers {
    fn with_capacity(keys: usize) -> Self {
        Layers {
            layers: vec![Layer::with_capacity(keys.max(MIN_CAPACITY))],
        }
    }

    fn insert(&mut self, hash: u64) {
        let last = self.layers.last().expect("one layer at least");
        if last.keys >= last.capacity {
            let before: usize = self.layers.iter().map(|l| l.capacity).sum();
            self.layers.push(Layer::with_capacity(2 * before));
        }
        self.layers
            .last_mut()
            .expect("one layer at least")
            .insert(hash);
    }

    fn may_hold(&self, hash: u64) -> bool {
        self.layers.iter().any(|layer| layer.may_hold(hash))
    }
}

/// A split block Bloom filter (as Parquet's): a key sets one bit in each of a block's
/// eight words, so that a lookup reads one 32-byte block. About ten bits a key.
#[derive(Debug)]
struct Layer {
    blocks: Vec<[u32; 8]>,
    capacity: usize,
    keys: usize,
}

/// Odd constants that pick a key's bit in each word of its block.
const SALT: [u32; 8] = [
    0x47b6_137b,
    0x4497_4d91,
    0x8824_ad5b,
    0xa2b7_289d,
    0x7054_95c7,
    0x2df1_424b,
    0x9efc_4947,
    0x5c6b_fb31,
];

impl Layer {
    fn with_capacity(keys: usize) -> Self {
        // 256 bits a block, about ten a key.
        let blocks = keys.div_ceil(24).max(1);
        Layer {
            blocks: vec![[0; 8]; blocks],
            capacity: keys,
            keys: 0,
        }
    }

    /// The key's block (from the hash's upper half) and its bit in each word (from the
    /// lower half).
    fn place(&self, hash: u64) -> (usize, [u32; 8]) {
        let block = ((hash >> 32) * self.blocks.len() as u64) >> 32;
        let low = hash as u32;
        (
            block as usize,
            SALT.map(|salt| 1 << (low.wrapping_mul(salt) >> 27)),
        )
    }

    fn insert(&mut self, hash: u64) {
        let (at, mask) = self.place(hash);
        for (word, bit) in self.blocks[at].iter_mut().zip(mask) {
            *word |= bit;
        }
        self.keys += 1;
    }

    fn may_hold(&self, hash: u64) -> bool {
        let (at, mask) = self.place(hash);
        self.blocks[at]
            .iter()
            .zip(mask)
            .all(|(word, bit)| word & bit != 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: u64) -> Vec<u8> {
        format!("synth\0csv-{i}").into_bytes()
    }

    #[test]
    fn a_built_filter_holds_every_key_it_learnt_and_few_others() {
        let mut filter = KeyFilter::default();
        // Put before the build, stored before it, and put after it (past the first
        // layer's capacity, so that layers are added).
        for i in 0..1_000 {
            filter.insert(hash(&key(i)));
        }
        assert!(
            !filter.surely_absent(hash(&key(5_000_000))),
            "not built yet"
        );
        let stored: Vec<u64> = (1_000..50_000).map(|i| hash(&key(i))).collect();
        filter.build(&stored);
        for i in 50_000..400_000 {
            filter.insert(hash(&key(i)));
        }
        let KeyFilter::Built(layers) = &filter else {
            panic!("built")
        };
        assert!(layers.layers.len() > 1, "grew by layers");
        for i in 0..400_000 {
            assert!(!filter.surely_absent(hash(&key(i))), "key {i} forgotten");
        }
        let wrong = (1_000_000..1_100_000)
            .filter(|&i| !filter.surely_absent(hash(&key(i))))
            .count();
        assert!(wrong < 3_000, "{wrong} of 100,000 absent keys said held");
    }

    #[test]
    fn too_many_keys_before_a_build_turn_the_filter_off() {
        let mut filter = KeyFilter::default();
        for i in 0..=MAX_RECORDED as u64 {
            filter.insert(hash(&key(i)));
        }
        filter.build(&[]);
        assert!(matches!(filter, KeyFilter::Off));
        assert!(!filter.surely_absent(hash(&key(u64::MAX))));
    }
}
