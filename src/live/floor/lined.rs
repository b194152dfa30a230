//! The floor's table of callbacks holding a place in a line, by id.
//!
//! A map of a million entries keyed by id would hold them in its own buckets: 64
//! bytes each, in a table that doubles past 917,504 entries (7/8 of 2^20), so a
//! million lined callbacks took 136 MB of buckets. Here the entries sit densely in a
//! vector and the hash table holds only their 4-byte positions: a million take 64 MB
//! of entries (48 bytes each) and 10 MB of table, whatever the power of two.

use std::hash::BuildHasher;
use std::sync::Arc;

use hashbrown::{DefaultHashBuilder, HashTable};

use super::matching::LinedCallback;

/// Callbacks by id: the subset of a map's interface the floor uses.
#[derive(Default)]
pub(in crate::live) struct LinedCallbacks {
    entries: Vec<(Arc<str>, LinedCallback)>,
    /// Positions in `entries`, hashed by their id.
    by_id: HashTable<u32>,
    hasher: DefaultHashBuilder,
    /// The queues' names, numbered by [`LinedCallbacks::intern`] (a plan has a
    /// handful; 4 bytes in each entry instead of a 16-byte shared name).
    names: Vec<Arc<str>>,
}

impl std::fmt::Debug for LinedCallbacks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(self.entries.iter().map(|(k, v)| (k, v)))
            .finish()
    }
}

/// A position in `entries`: a floor holds far fewer than 2^32 callbacks (each costs
/// well over a hundred bytes of memory).
fn position(i: usize) -> u32 {
    u32::try_from(i).expect("fewer than 2^32 lined callbacks")
}

impl LinedCallbacks {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The number [`LinedCallback::queue`] holds for the queue named `name`.
    pub fn intern(&mut self, name: &Arc<str>) -> u32 {
        if let Some(i) = self
            .names
            .iter()
            .position(|n| Arc::ptr_eq(n, name) || n == name)
        {
            return position(i);
        }
        self.names.push(name.clone());
        position(self.names.len() - 1)
    }

    /// The name of queue number `queue` ([`LinedCallbacks::intern`] gave it; numbers
    /// are never taken back).
    pub fn queue_name(&self, queue: u32) -> &Arc<str> {
        &self.names[queue as usize]
    }

    /// Room for `more` entries without growing (start-up sizes it once).
    pub fn reserve(&mut self, more: usize) {
        self.entries.reserve(more);
        let (entries, hasher) = (&self.entries, &self.hasher);
        self.by_id
            .reserve(more, |&i| hasher.hash_one(&*entries[i as usize].0));
    }

    fn find(&self, id: &str) -> Option<usize> {
        let hash = self.hasher.hash_one(id);
        self.by_id
            .find(hash, |&i| &*self.entries[i as usize].0 == id)
            .map(|&i| i as usize)
    }

    /// Puts `lined` under `id`; an entry there already keeps its key and hands back
    /// its value (as a map's `insert`).
    pub fn insert(&mut self, id: Arc<str>, lined: LinedCallback) -> Option<LinedCallback> {
        if let Some(i) = self.find(&id) {
            return Some(std::mem::replace(&mut self.entries[i].1, lined));
        }
        let hash = self.hasher.hash_one(&*id);
        let at = position(self.entries.len());
        self.entries.push((id, lined));
        let (entries, hasher) = (&self.entries, &self.hasher);
        self.by_id
            .insert_unique(hash, at, |&i| hasher.hash_one(&*entries[i as usize].0));
        None
    }

    /// Takes the entry out; the last entry moves into its place.
    pub fn remove_entry(&mut self, id: &str) -> Option<(Arc<str>, LinedCallback)> {
        let hash = self.hasher.hash_one(id);
        let entries = &self.entries;
        let found = self
            .by_id
            .find_entry(hash, |&i| &*entries[i as usize].0 == id)
            .ok()?;
        let (i, _) = found.remove();
        let i = i as usize;
        let last = self.entries.len() - 1;
        let removed = self.entries.swap_remove(i);
        if i != last {
            // The former last entry now sits at `i`: point its table slot there.
            let moved = self.hasher.hash_one(&*self.entries[i].0);
            if let Some(slot) = self.by_id.find_mut(moved, |&k| k as usize == last) {
                *slot = position(i);
            }
        }
        Some(removed)
    }

    pub fn contains_key(&self, id: &str) -> bool {
        self.find(id).is_some()
    }

    pub fn get(&self, id: &str) -> Option<&LinedCallback> {
        Some(&self.entries[self.find(id)?].1)
    }

    /// The entry and its queue's name.
    pub fn get_mut(&mut self, id: &str) -> Option<(&mut LinedCallback, &Arc<str>)> {
        let i = self.find(id)?;
        let lined = &mut self.entries[i].1;
        let name = &self.names[lined.queue as usize];
        Some((lined, name))
    }

    pub fn get_key_value(&self, id: &str) -> Option<(&Arc<str>, &LinedCallback)> {
        let (k, v) = &self.entries[self.find(id)?];
        Some((k, v))
    }

    /// The id, the entry and its queue's name.
    pub fn get_key_value_mut(
        &mut self,
        id: &str,
    ) -> Option<(&Arc<str>, &mut LinedCallback, &Arc<str>)> {
        let i = self.find(id)?;
        let (k, v) = &mut self.entries[i];
        let name = &self.names[v.queue as usize];
        Some((&*k, v, name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::live::floor::matching::CallbackLine;
    use crate::live::floor::Place;

    fn lined(n: u64) -> LinedCallback {
        LinedCallback {
            queue: 0,
            place: Place::new(0, chrono::DateTime::UNIX_EPOCH, n, true),
            state: CallbackLine::Ready,
        }
    }

    /// Inserts, replacements and removals in any order leave the table answering as
    /// a map does (checked against one after every step).
    #[test]
    fn the_table_answers_as_a_map_through_inserts_and_removals() {
        let mut table = LinedCallbacks::default();
        assert_eq!(table.intern(&Arc::from("general")), 0);
        let mut map: std::collections::HashMap<String, u64> = Default::default();
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for step in 0..20_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let id = format!("cb-{}", x % 600);
            if x.is_multiple_of(3) {
                let got = table
                    .remove_entry(&id)
                    .map(|(k, v)| (k.to_string(), v.place));
                let want = map.remove(&id).map(|n| (id.clone(), lined(n).place));
                assert_eq!(got, want, "step {step}");
            } else {
                let old = table.insert(Arc::from(id.as_str()), lined(step));
                assert_eq!(
                    old.map(|l| l.place),
                    map.insert(id.clone(), step).map(|n| lined(n).place)
                );
            }
            assert_eq!(table.len(), map.len());
            if step.is_multiple_of(1_000) {
                for i in 0..600 {
                    let id = format!("cb-{i}");
                    let got = table
                        .get_key_value(&id)
                        .map(|(k, v)| (k.to_string(), v.place));
                    assert_eq!(got, map.get(&id).map(|&n| (id.clone(), lined(n).place)));
                    assert_eq!(table.contains_key(&id), map.contains_key(&id));
                }
            }
        }
        // Reserving keeps every entry found.
        table.reserve(10_000);
        for (id, &n) in &map {
            assert_eq!(
                table.get_mut(id).map(|(l, _)| l.place),
                Some(lined(n).place)
            );
        }
    }
}
