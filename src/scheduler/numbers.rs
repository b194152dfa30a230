//! The (phone, queue) -> open callback lookup behind dedupe and auto-cancel, and the
//! compact form numbers take in the scheduler's index.
//!
//! It holds only the shared callback ids: the phone and queue it is keyed on are read
//! from the scheduler's index entries themselves, so a million open callbacks cost one
//! 16-byte slot each here instead of two copied strings and a 64-byte slot.

use std::collections::BTreeMap;
use std::hash::BuildHasher;

use hashbrown::hash_table::Entry as Slot;
use hashbrown::{DefaultHashBuilder, HashTable};

use super::{Entry, Id};

/// The open callbacks the index reads keys from (the scheduler's index entries, by id:
/// a B-tree built whole at start-up has full nodes, where a hash table of a million
/// entries would be twice their size in buckets).
pub(super) type Open = BTreeMap<Id, Entry>;

/// A phone number as the scheduler's index holds it: an E.164 number (`+` and 1 to 15
/// digits, no leading zero) packed into an integer, which is exact and allocates
/// nothing; anything else (an import may carry other text) as its text, boxed twice so
/// the enum stays 16 bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum Phone {
    E164(u64),
    #[allow(clippy::box_collection, reason = "a thin pointer keeps the enum small")]
    Other(Box<Box<str>>),
}

impl Phone {
    pub(super) fn of(s: &str) -> Self {
        match s.strip_prefix('+') {
            Some(d)
                if (1..=15).contains(&d.len())
                    && !d.starts_with('0')
                    && d.bytes().all(|b| b.is_ascii_digit()) =>
            {
                d.parse()
                    .map_or_else(|_| Phone::Other(Box::new(s.into())), Phone::E164)
            }
            _ => Phone::Other(Box::new(s.into())),
        }
    }
}

#[derive(Default)]
pub(super) struct NumberIndex {
    ids: HashTable<Id>,
    hasher: DefaultHashBuilder,
}

impl NumberIndex {
    pub(super) fn with_capacity(n: usize) -> Self {
        Self {
            ids: HashTable::with_capacity(n),
            hasher: DefaultHashBuilder::default(),
        }
    }

    fn hash(&self, phone: &Phone, queue: &str) -> u64 {
        self.hasher.hash_one((phone, queue))
    }

    /// The open callback for this number in this queue.
    pub(super) fn get<'a>(&'a self, open: &Open, phone: &Phone, queue: &str) -> Option<&'a Id> {
        self.ids
            .find(self.hash(phone, queue), |id| same(open, id, phone, queue))
    }

    /// Makes `id` (with this phone and queue) the callback for its number and queue,
    /// replacing an earlier one. Every id in the index must be in `open` (except `id`
    /// itself, which may be added there afterwards).
    pub(super) fn insert(&mut self, open: &Open, id: Id, phone: &Phone, queue: &str) {
        let hash = self.hash(phone, queue);
        let hasher = &self.hasher;
        let rehash = |k: &Id| {
            open.get(k)
                .map_or(0, |c| hasher.hash_one((&c.phone, &*c.queue)))
        };
        match self
            .ids
            .entry(hash, |k| **k == *id || same(open, k, phone, queue), rehash)
        {
            Slot::Occupied(mut e) => *e.get_mut() = id,
            Slot::Vacant(e) => {
                e.insert(id);
            }
        }
    }

    /// Drops `id` if it is still the callback for its number and queue.
    pub(super) fn remove(&mut self, id: &str, phone: &Phone, queue: &str) {
        let hash = self.hash(phone, queue);
        if let Ok(e) = self.ids.find_entry(hash, |k| &**k == id) {
            e.remove();
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.ids.len()
    }
}

fn same(open: &Open, id: &Id, phone: &Phone, queue: &str) -> bool {
    open.get(id)
        .is_some_and(|c| c.phone == *phone && &*c.queue == queue)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn add(open: &mut Open, index: &mut NumberIndex, id: &str, phone: &str, queue: &str) {
        let cb = crate::domain::callback::Callback::pending_for_test(id, phone, queue);
        let entry = Entry::of(&crate::store::OpenCallbackRef::of(&cb), queue.into(), None);
        let id: Id = Id::from(id);
        index.insert(open, id.clone(), &Phone::of(phone), queue);
        open.insert(id, entry);
    }

    /// The id the index gives for this number and queue.
    fn found<'a>(index: &'a NumberIndex, open: &Open, phone: &str, queue: &str) -> Option<&'a str> {
        index.get(open, &Phone::of(phone), queue).map(|id| &**id)
    }

    #[test]
    fn finds_the_callback_of_a_number_in_a_queue_only() {
        let mut open = Open::new();
        let mut index = NumberIndex::default();
        add(&mut open, &mut index, "a", "+15550100", "sales");
        add(&mut open, &mut index, "b", "+15550100", "support");
        add(&mut open, &mut index, "c", "+15550101", "sales");
        assert_eq!(found(&index, &open, "+15550100", "sales"), Some("a"));
        assert_eq!(found(&index, &open, "+15550100", "support"), Some("b"));
        assert_eq!(found(&index, &open, "+15550101", "sales"), Some("c"));
        assert_eq!(found(&index, &open, "+15550101", "support"), None);
    }

    #[test]
    fn a_later_callback_for_the_same_number_and_queue_replaces_the_first() {
        let mut open = Open::new();
        let mut index = NumberIndex::default();
        add(&mut open, &mut index, "a", "+15550100", "sales");
        add(&mut open, &mut index, "b", "+15550100", "sales");
        assert_eq!(index.len(), 1);
        assert_eq!(found(&index, &open, "+15550100", "sales"), Some("b"));
        // Removing the replaced one leaves the current one in place.
        index.remove("a", &Phone::of("+15550100"), "sales");
        assert_eq!(found(&index, &open, "+15550100", "sales"), Some("b"));
        index.remove("b", &Phone::of("+15550100"), "sales");
        assert_eq!(found(&index, &open, "+15550100", "sales"), None);
        assert_eq!(index.len(), 0);
    }

    #[test]
    fn index_entries_stay_small() {
        assert_eq!(std::mem::size_of::<Phone>(), 16);
        assert!(std::mem::size_of::<Entry>() <= 64);
    }

    #[test]
    fn numbers_pack_exactly_and_other_text_stays_text() {
        assert_eq!(Phone::of("+15550100"), Phone::E164(15_550_100));
        assert_eq!(
            Phone::of("+999999999999999"),
            Phone::E164(999_999_999_999_999)
        );
        // Not E.164: kept as text, so two different texts never meet.
        for odd in [
            "15550100",
            "+015550100",
            "+1555010012345678",
            "+1-555",
            "+",
            "",
        ] {
            assert_eq!(Phone::of(odd), Phone::Other(Box::new(odd.into())), "{odd}");
        }
        assert_ne!(Phone::of("+15550100"), Phone::of("+155501000"));
    }

    #[test]
    fn grows_past_its_capacity_and_still_finds_everything() {
        let mut open = Open::new();
        let mut index = NumberIndex::with_capacity(2);
        for i in 0..1_000 {
            add(
                &mut open,
                &mut index,
                &format!("cb{i}"),
                &format!("+1555{i:07}"),
                "q",
            );
        }
        for i in 0..1_000 {
            let phone = format!("+1555{i:07}");
            assert_eq!(
                found(&index, &open, &phone, "q"),
                Some(format!("cb{i}").as_str())
            );
        }
    }
}
