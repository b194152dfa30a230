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
//! The filter is built after the store opens, by one pass over the stored numbers
//! (customers' phones, and the callers in the contact index) on a thread of its own,
//! so a large store does not start slower (the pass takes about 0.6 s per million
//! numbers here). Until it is built every number is "maybe"; numbers written meanwhile
//! are kept and folded in. It is sized then for twice the numbers stored (at least
//! 65,536), at 16 bits each: well under 1 in 100 unknown numbers get a "maybe" (a test
//! holds it). A store that grows far beyond that answers "maybe" more often (about 1
//! in 6 at four times the size), which costs reads, never answers, until the next start
//! sizes it afresh.

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

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
    filter: OnceLock<Filter>,
    /// Numbers added before the filter was built, folded in when it is.
    early: Mutex<Vec<u64>>,
}

impl KnownNumbers {
    /// A filter not built yet: every number is "maybe" until [`KnownNumbers::build`].
    pub fn new() -> Self {
        Self {
            hasher: hashbrown::DefaultHashBuilder::default(),
            filter: OnceLock::new(),
            early: Mutex::new(Vec::new()),
        }
    }

    /// Adds a number the store is about to hold.
    pub fn insert(&self, number: &str) {
        let hash = self.hasher.hash_one(number);
        if let Some(f) = self.filter.get() {
            return f.insert(hash);
        }
        let mut early = self.early.lock().unwrap_or_else(|e| e.into_inner());
        // Built meanwhile? `build` publishes the filter under this lock.
        match self.filter.get() {
            Some(f) => f.insert(hash),
            None => early.push(hash),
        }
    }

    /// `false` only for a number the store does not hold.
    pub fn may_contain(&self, number: &str) -> bool {
        self.filter
            .get()
            .is_none_or(|f| f.may_contain(self.hasher.hash_one(number)))
    }

    /// Builds the filter from `numbers` (the store's, read once) and the numbers added
    /// meanwhile, and puts it to use.
    pub fn build(&self, numbers: impl IntoIterator<Item = impl AsRef<str>>) {
        let hashes: Vec<u64> = numbers
            .into_iter()
            .map(|n| self.hasher.hash_one(n.as_ref()))
            .collect();
        let mut early = self.early.lock().unwrap_or_else(|e| e.into_inner());
        let filter = Filter::for_numbers(2 * (hashes.len() + early.len()));
        for h in hashes.into_iter().chain(early.drain(..)) {
            filter.insert(h);
        }
        let _ = self.filter.set(filter);
    }

    #[cfg(test)]
    pub fn is_built(&self) -> bool {
        self.filter.get().is_some()
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
        let known = KnownNumbers::new();
        // Before the filter is built every number may be known.
        assert!(known.may_contain("+442079460000"));
        known.insert(&number(1_000_000));
        known.build((0..100_000).map(number));
        assert!(known.is_built());
        known.insert(&number(2_000_000));
        for i in (0..100_000).chain([1_000_000, 2_000_000]) {
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
        let known = KnownNumbers::new();
        known.build(std::iter::empty::<&str>());
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
