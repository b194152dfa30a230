//! The (phone, queue) -> open callback lookup behind dedupe and auto-cancel.
//!
//! It holds only the shared callback ids: the phone and queue it is keyed on are read
//! from the open callbacks themselves, so a million open callbacks cost one 16-byte
//! slot each here instead of two copied strings and a 64-byte slot (at start-up that
//! was 190 MB of fresh memory for the kernel to zero).

use std::collections::HashMap;
use std::hash::BuildHasher;

use hashbrown::hash_table::Entry;
use hashbrown::{DefaultHashBuilder, HashTable};

use super::Id;
use crate::domain::callback::Callback;

/// The open callbacks the index reads keys from.
pub(super) type Open = HashMap<Id, Box<Callback>>;

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

    fn hash(&self, phone: &str, queue: &str) -> u64 {
        self.hasher.hash_one((phone, queue))
    }

    /// The open callback for this number in this queue.
    pub(super) fn get<'a>(&'a self, open: &Open, phone: &str, queue: &str) -> Option<&'a Id> {
        self.ids
            .find(self.hash(phone, queue), |id| same(open, id, phone, queue))
    }

    /// Makes `id` (with this phone and queue) the callback for its number and queue,
    /// replacing an earlier one. Every id in the index must be in `open` (except `id`
    /// itself, which may be added there afterwards).
    pub(super) fn insert(&mut self, open: &Open, id: Id, phone: &str, queue: &str) {
        let hash = self.hash(phone, queue);
        let hasher = &self.hasher;
        let rehash = |k: &Id| {
            open.get(k).map_or(0, |c| {
                hasher.hash_one((c.phone.as_str(), c.queue_id.as_str()))
            })
        };
        match self
            .ids
            .entry(hash, |k| **k == *id || same(open, k, phone, queue), rehash)
        {
            Entry::Occupied(mut e) => *e.get_mut() = id,
            Entry::Vacant(e) => {
                e.insert(id);
            }
        }
    }

    /// Drops `id` if it is still the callback for its number and queue.
    pub(super) fn remove(&mut self, id: &str, phone: &str, queue: &str) {
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

fn same(open: &Open, id: &Id, phone: &str, queue: &str) -> bool {
    open.get(id)
        .is_some_and(|c| c.phone == phone && c.queue_id == queue)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn add(open: &mut Open, index: &mut NumberIndex, id: &str, phone: &str, queue: &str) {
        let cb = Callback::pending_for_test(id, phone, queue);
        let id: Id = Id::from(id);
        index.insert(open, id.clone(), phone, queue);
        open.insert(id, Box::new(cb));
    }

    /// The id the index gives for this number and queue.
    fn found<'a>(index: &'a NumberIndex, open: &Open, phone: &str, queue: &str) -> Option<&'a str> {
        index.get(open, phone, queue).map(|id| &**id)
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
        index.remove("a", "+15550100", "sales");
        assert_eq!(found(&index, &open, "+15550100", "sales"), Some("b"));
        index.remove("b", "+15550100", "sales");
        assert_eq!(found(&index, &open, "+15550100", "sales"), None);
        assert_eq!(index.len(), 0);
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
