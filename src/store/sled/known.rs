//! The numbers the store knows: every customer's phone and every contact's caller, as
//! a Bloom filter in memory. RouteCall reads a caller's customer (by phone) and their
//! recent contacts for every call; for a number the filter has never seen, both reads
//! are skipped, so a first-time caller costs no tree walks in sled.
//!
//! A Bloom filter never says "unknown" for a number it was given, only, rarely, "maybe"
//! for one it was not (then the reads happen as before, and find nothing). Numbers are
//! added before the write that stores them, and never removed (a deleted customer's
//! phone stays "maybe" until the next start), so every answer the filter gives is one
//! the store would have given.
//!
//! The filter is built when the store opens, from one pass over the stored numbers
//! (customers' phones, and the callers in the contact index), and sized then for twice
//! as many numbers (at least 65,536), at 16 bits each: well under 1 in 100 unknown
//! numbers get a "maybe" then (a test holds it). A store that grows far beyond that
//! answers "maybe" more often (about 1 in 6 at four times the size), which costs reads,
//! never answers, until the next start sizes it afresh.

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};

/// Bits per number the filter is sized for, and bits set per number (all in one
/// 512-bit block, so a lookup touches one cache line).
const BITS_PER_NUMBER: usize = 16;
const PROBES: u32 = 4;
const BLOCK_WORDS: usize = 8;
/// Numbers the filter is sized for at least.
const MIN_NUMBERS: usize = 1 << 16;

/// A blocked Bloom filter of fixed size.
struct Filter {
    words: Box<[AtomicU64]>,
    /// Blocks - 1 (a power of two minus one).
    block_mask: u64,
}

impl Filter {
    fn for_numbers(n: usize) -> Self {
        let bits = (n.max(MIN_NUMBERS) * BITS_PER_NUMBER).next_power_of_two();
        let words = bits / 64;
        Self {
            words: (0..words).map(|_| AtomicU64::new(0)).collect(),
            block_mask: (words / BLOCK_WORDS) as u64 - 1,
        }
    }

    /// The block's first word and the bit (0..512) of each probe.
    fn probes(&self, hash: u64) -> (usize, impl Iterator<Item = usize>) {
        let block = ((hash >> 32) & self.block_mask) as usize * BLOCK_WORDS;
        // The bits within the block from a second mixing of the hash, 9 bits each.
        let mixed = hash.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let bits = (0..PROBES).map(move |i| ((mixed >> (64 - 9 * (i + 1))) & 511) as usize);
        (block, bits)
    }

    fn insert(&self, hash: u64) {
        let (block, bits) = self.probes(hash);
        for bit in bits {
            self.words[block + bit / 64].fetch_or(1 << (bit % 64), Ordering::Release);
        }
    }

    fn may_contain(&self, hash: u64) -> bool {
        let (block, mut bits) = self.probes(hash);
        bits.all(|bit| {
            self.words[block + bit / 64].load(Ordering::Acquire) & (1 << (bit % 64)) != 0
        })
    }
}

/// See the module documentation.
pub(crate) struct KnownNumbers {
    hasher: hashbrown::DefaultHashBuilder,
    filter: Filter,
}

impl KnownNumbers {
    /// The filter of `numbers` (the store's, read once at start-up).
    pub fn build(numbers: impl IntoIterator<Item = impl AsRef<str>>) -> Self {
        let hasher = hashbrown::DefaultHashBuilder::default();
        let hashes: Vec<u64> = numbers
            .into_iter()
            .map(|n| hasher.hash_one(n.as_ref()))
            .collect();
        let filter = Filter::for_numbers(2 * hashes.len());
        for h in hashes {
            filter.insert(h);
        }
        Self { hasher, filter }
    }

    /// Adds a number the store is about to hold.
    pub fn insert(&self, number: &str) {
        self.filter.insert(self.hasher.hash_one(number));
    }

    /// `false` only for a number the store does not hold.
    pub fn may_contain(&self, number: &str) -> bool {
        self.filter.may_contain(self.hasher.hash_one(number))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn number(i: usize) -> String {
        format!("+1212{:07}", i)
    }

    #[test]
    fn every_number_given_is_known_and_few_others_are() {
        let known = KnownNumbers::build((0..100_000).map(number));
        known.insert(&number(2_000_000));
        for i in (0..100_000).chain([2_000_000]) {
            assert!(known.may_contain(&number(i)), "{i}");
        }
        let others = 100_000;
        let false_positives = (3_000_000..3_000_000 + others)
            .filter(|&i| known.may_contain(&number(i)))
            .count();
        // Sized for twice the numbers at 16 bits each: well under 1% answer "maybe".
        assert!(
            false_positives < others / 100,
            "{false_positives} of {others}"
        );
    }

    #[test]
    fn a_filter_grown_past_its_size_still_knows_every_number() {
        let known = KnownNumbers::build(std::iter::empty::<&str>());
        for i in 0..4 * MIN_NUMBERS {
            known.insert(&number(i));
        }
        assert!((0..4 * MIN_NUMBERS).all(|i| known.may_contain(&number(i))));
        let false_positives = (10_000_000..10_000_000 + MIN_NUMBERS)
            .filter(|&i| known.may_contain(&number(i)))
            .count();
        // Four times over its size it still skips most reads (measured: 16% maybe).
        assert!(false_positives < MIN_NUMBERS / 4, "{false_positives}");
    }
}
