//! The scheduler's index of open callbacks: one small entry per pending or dispatched
//! callback in a slab, found by id, by (number, queue) and by timer through 4-byte
//! handles.
//!
//! Why this shape: a restart or takeover with a million open callbacks builds this
//! index before serving, so its size and build time are the start-up's. An entry is
//! 64 bytes in one vector; each lookup holds a `u32` handle (the id table and the
//! number table about 5 bytes a callback each, the timer set about 20), where maps
//! keyed by the shared id string cost three to four times that, and building them
//! meant sorting a million ids first.

use std::collections::BTreeSet;
use std::hash::BuildHasher;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use hashbrown::hash_table::Entry as Slot;
use hashbrown::{DefaultHashBuilder, HashTable};

use super::numbers::Phone;
use crate::domain::callback::CallbackState;

/// A callback id as the in-memory lookups hold it: one allocation shared by the index
/// and the floor's line (a million open callbacks at start-up).
pub(super) type Id = Arc<str>;

/// An entry's place in the slab.
type Handle = u32;

/// What the scheduler holds of an open callback: enough to time it, count it for the
/// wallboards and find it by number. Its record stays in the store and is read when
/// the callback is acted on; its place in line (priority, virtual enqueue time) is the
/// floor's.
pub(super) struct Entry {
    pub id: Id,
    pub phone: Phone,
    /// Not dialed before this instant (the wallboards count due and overdue from it).
    pub not_before: DateTime<Utc>,
    /// Its instant in the timer set, when `timed`.
    timer: DateTime<Utc>,
    timed: bool,
    pub state: CallbackState,
    /// Index of its queue id in [`Index::queues`].
    queue: u32,
}

impl Entry {
    pub fn timer(&self) -> Option<DateTime<Utc>> {
        self.timed.then_some(self.timer)
    }

    /// Index of its queue id in [`Index::queue_names`].
    pub fn queue_index(&self) -> u32 {
        self.queue
    }
}

/// The fields of an open callback the index keeps (see [`Entry`]).
pub(super) struct Fields<'a> {
    pub phone: &'a str,
    pub queue: &'a str,
    pub not_before: DateTime<Utc>,
    pub state: CallbackState,
}

/// The entry in slot `h`, if any (for closures that borrow the slots apart from the
/// tables they search).
fn slot(slots: &[Option<Entry>], h: Handle) -> Option<&Entry> {
    slots.get(h as usize).and_then(Option::as_ref)
}

/// The id-table hash of the entry in slot `h` (0 for an empty slot, which no table
/// holds).
fn id_hash(slots: &[Option<Entry>], hasher: &DefaultHashBuilder, h: Handle) -> u64 {
    slot(slots, h).map_or(0, |e| hasher.hash_one(&*e.id))
}

/// The number-table hash of the entry in slot `h` (0 for an empty slot).
fn number_hash(slots: &[Option<Entry>], hasher: &DefaultHashBuilder, h: Handle) -> u64 {
    slot(slots, h).map_or(0, |e| hasher.hash_one((&e.phone, e.queue)))
}

#[derive(Default)]
pub(super) struct Index {
    slots: Vec<Option<Entry>>,
    free: Vec<Handle>,
    len: usize,
    by_id: HashTable<Handle>,
    /// (number, queue) -> the open callback for that number in that queue. Two open
    /// callbacks for one number and queue (possible only in imported data) resolve to
    /// the greater id, the later one, whatever the order they were indexed in.
    by_number: HashTable<Handle>,
    /// Each timed entry's next instant of interest, earliest first.
    timers: BTreeSet<(DateTime<Utc>, Handle)>,
    /// The first slot of a bulk load ([`Index::load`]) not yet filed by id, number
    /// and timer ([`Index::finish_load`] does).
    loading_from: Option<usize>,
    /// The queue ids the entries name, one allocation per queue.
    queues: Vec<Arc<str>>,
    hasher: DefaultHashBuilder,
}

impl Index {
    pub fn len(&self) -> usize {
        self.len
    }

    /// Makes room for `n` more entries (a bulk load that knows its size grows each
    /// table once instead of rehashing it at every doubling).
    pub fn reserve(&mut self, n: usize) {
        self.slots.reserve(n);
        self.reserve_lookups(n);
    }

    /// Makes room for `n` more entries in the id and number tables.
    fn reserve_lookups(&mut self, n: usize) {
        let (slots, hasher) = (&self.slots, &self.hasher);
        self.by_id.reserve(n, |&k| id_hash(slots, hasher, k));
        self.by_number
            .reserve(n, |&k| number_hash(slots, hasher, k));
    }

    fn entry_at(&self, h: Handle) -> Option<&Entry> {
        slot(&self.slots, h)
    }

    fn handle(&self, id: &str) -> Option<Handle> {
        self.handle_hashed(self.hasher.hash_one(id), id)
    }

    fn handle_hashed(&self, hash: u64, id: &str) -> Option<Handle> {
        let slots = &self.slots;
        self.by_id
            .find(hash, |&h| slot(slots, h).is_some_and(|e| &*e.id == id))
            .copied()
    }

    pub fn get(&self, id: &str) -> Option<&Entry> {
        self.handle(id).and_then(|h| self.entry_at(h))
    }

    pub fn contains(&self, id: &str) -> bool {
        self.handle(id).is_some()
    }

    /// The queue ids entries name, in the order of [`Entry::queue_index`].
    pub fn queue_names(&self) -> Vec<&str> {
        self.queues.iter().map(|q| &**q).collect()
    }

    /// The queue id an entry names.
    pub fn queue_of(&self, e: &Entry) -> &Arc<str> {
        &self.queues[e.queue as usize]
    }

    /// Every entry, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &Entry> {
        self.slots.iter().flatten()
    }

    /// The shared queue id of this name.
    pub fn queue_named(&mut self, queue: &str) -> Arc<str> {
        let i = self.queue_index(queue);
        self.queues[i as usize].clone()
    }

    fn queue_index(&mut self, queue: &str) -> u32 {
        // A plan names a handful of queues: a linear search.
        if let Some(i) = self.queues.iter().position(|q| &**q == queue) {
            return i as u32;
        }
        self.queues.push(Arc::from(queue));
        (self.queues.len() - 1) as u32
    }

    /// The open callback for this number in this queue.
    pub fn by_number(&self, phone: &Phone, queue: &str) -> Option<&Id> {
        let q = self.queues.iter().position(|n| &**n == queue)? as u32;
        let slots = &self.slots;
        let h = self
            .by_number
            .find(self.hasher.hash_one((phone, q)), |&h| {
                slot(slots, h).is_some_and(|e| e.phone == *phone && e.queue == q)
            })
            .copied()?;
        self.entry_at(h).map(|e| &e.id)
    }

    /// Indexes an open callback (new, or replacing its entry) with its timer. Returns
    /// its shared id.
    pub fn upsert(&mut self, id: &str, fields: Fields<'_>, timer: Option<DateTime<Utc>>) -> Id {
        let (h, id) = self.put(id, fields);
        self.set_timer_at(h, timer);
        id
    }

    /// [`Self::upsert`] for a bulk load (start-up): the entry only goes in its slot;
    /// [`Self::finish_load`] files the loaded entries by id, number and timer in one
    /// go, and must follow before any lookup or other change. So the scan that feeds
    /// the load does a vector push per callback, and the lookups are built after it,
    /// while another thread fills the lines.
    pub fn load(&mut self, id: &str, fields: Fields<'_>, timer: Option<DateTime<Utc>>) -> Id {
        let phone = Phone::of(fields.phone);
        self.load_entry(id, phone, fields, timer)
    }

    /// [`Self::load`] with the number in its compact form already (`fields.phone` is
    /// not read).
    pub fn load_entry(
        &mut self,
        id: &str,
        phone: Phone,
        fields: Fields<'_>,
        timer: Option<DateTime<Utc>>,
    ) -> Id {
        let queue = self.queue_index(fields.queue);
        self.loading_from.get_or_insert(self.slots.len());
        let id = Id::from(id);
        self.slots.push(Some(Entry {
            id: id.clone(),
            phone,
            not_before: fields.not_before,
            timer: timer.unwrap_or(DateTime::<Utc>::MIN_UTC),
            timed: timer.is_some(),
            state: fields.state,
            queue,
        }));
        self.len += 1;
        id
    }

    /// Files the entries of a bulk load by id (an id loaded twice keeps its last
    /// entry), by number, and by timer (a B-tree built whole from sorted keys, with full
    /// nodes; one filled an insert at a time has half-full ones).
    pub fn finish_load(&mut self) {
        let Some(from) = self.loading_from.take() else {
            return;
        };
        let loaded = from..self.slots.len();
        // The slots are in place already: only the tables grow (reserving slots here
        // would reallocate the whole vector to twice its length).
        self.reserve_lookups(loaded.len());
        let mut timers = Vec::with_capacity(loaded.len());
        for h in loaded.clone() {
            let h = h as Handle;
            let Some(e) = self.slots[h as usize].as_ref() else {
                continue;
            };
            let hash = self.hasher.hash_one(&*e.id);
            let (slots, hasher) = (&self.slots, &self.hasher);
            let rehash = |&k: &Handle| id_hash(slots, hasher, k);
            let same = |&k: &Handle| slot(slots, k).is_some_and(|o| o.id == e.id);
            let replaced = match self.by_id.entry(hash, same, rehash) {
                Slot::Occupied(mut o) => Some(std::mem::replace(o.get_mut(), h)),
                Slot::Vacant(v) => {
                    v.insert(h);
                    None
                }
            };
            if let Some(old) = replaced {
                // Loaded earlier in this load (the same callback read twice): not filed
                // yet, so only its slot goes.
                self.slots[old as usize] = None;
                self.free.push(old);
                self.len -= 1;
            }
        }
        for h in loaded {
            let h = h as Handle;
            if let Some(e) = self.slots[h as usize].as_ref() {
                if e.timed {
                    timers.push((e.timer, h));
                }
                self.file_number(h);
            }
        }
        timers.sort_unstable();
        let mut built: BTreeSet<_> = timers.into_iter().collect();
        self.timers.append(&mut built);
    }

    /// Puts the entry in its slot (reusing the id's) and files it by id and number.
    fn put(&mut self, id: &str, fields: Fields<'_>) -> (Handle, Id) {
        let queue = self.queue_index(fields.queue);
        let phone = Phone::of(fields.phone);
        let hash = self.hasher.hash_one(id);
        let h = match self.handle_hashed(hash, id) {
            Some(h) => {
                // Its number or queue may have changed: file it afresh.
                self.unfile_number(h);
                if let Some(e) = self.slots[h as usize].as_mut() {
                    e.phone = phone;
                    e.queue = queue;
                    e.not_before = fields.not_before;
                    e.state = fields.state;
                }
                h
            }
            None => {
                let entry = Entry {
                    id: Id::from(id),
                    phone,
                    not_before: fields.not_before,
                    timer: DateTime::<Utc>::MIN_UTC,
                    timed: false,
                    state: fields.state,
                    queue,
                };
                let h = match self.free.pop() {
                    Some(h) => {
                        self.slots[h as usize] = Some(entry);
                        h
                    }
                    None => {
                        self.slots.push(Some(entry));
                        (self.slots.len() - 1) as Handle
                    }
                };
                let (slots, hasher) = (&self.slots, &self.hasher);
                self.by_id
                    .insert_unique(hash, h, |&k| id_hash(slots, hasher, k));
                self.len += 1;
                h
            }
        };
        self.file_number(h);
        let id = self.slots[h as usize]
            .as_ref()
            .map_or_else(|| Id::from(id), |e| e.id.clone());
        (h, id)
    }

    /// Makes `h` the callback for its number and queue unless one with a greater id
    /// is.
    fn file_number(&mut self, h: Handle) {
        let (slots, hasher) = (&self.slots, &self.hasher);
        let Some(e) = slot(slots, h) else {
            return;
        };
        let hash = hasher.hash_one((&e.phone, e.queue));
        let rehash = |&k: &Handle| number_hash(slots, hasher, k);
        let same = |&k: &Handle| {
            k == h || slot(slots, k).is_some_and(|o| o.phone == e.phone && o.queue == e.queue)
        };
        match self.by_number.entry(hash, same, rehash) {
            Slot::Occupied(mut o) => {
                let held = *o.get();
                let keeps = slot(slots, held).is_some_and(|o| held != h && o.id > e.id);
                if !keeps {
                    *o.get_mut() = h;
                }
            }
            Slot::Vacant(v) => {
                v.insert(h);
            }
        }
    }

    /// Drops `h` from the number table if it is the callback there.
    fn unfile_number(&mut self, h: Handle) {
        let hash = number_hash(&self.slots, &self.hasher, h);
        if let Ok(o) = self.by_number.find_entry(hash, |&k| k == h) {
            o.remove();
        }
    }

    fn set_timer_at(&mut self, h: Handle, at: Option<DateTime<Utc>>) {
        let Some(e) = self.slots.get_mut(h as usize).and_then(Option::as_mut) else {
            return;
        };
        if e.timed {
            self.timers.remove(&(e.timer, h));
        }
        e.timed = at.is_some();
        if let Some(t) = at {
            e.timer = t;
            self.timers.insert((t, h));
        }
    }

    /// Files an entry's timer at `at` (replacing its own; `None` clears it).
    pub fn set_timer(&mut self, id: &str, at: Option<DateTime<Utc>>) {
        if let Some(h) = self.handle(id) {
            self.set_timer_at(h, at);
        }
    }

    /// The earliest timer.
    pub fn next_timer(&self) -> Option<DateTime<Utc>> {
        self.timers.first().map(|(t, _)| *t)
    }

    /// Takes the earliest timer if it is due by `now`: the entry's id (its timer is
    /// then cleared).
    pub fn pop_due(&mut self, now: DateTime<Utc>) -> Option<Id> {
        loop {
            let &(t, h) = self.timers.first()?;
            if t > now {
                return None;
            }
            self.timers.pop_first();
            // Every change keeps the set and the entries in step; a timer that is not
            // its entry's own would be skipped, never fired for another callback.
            match self.slots.get_mut(h as usize).and_then(Option::as_mut) {
                Some(e) if e.timed && e.timer == t => {
                    e.timed = false;
                    return Some(e.id.clone());
                }
                _ => continue,
            }
        }
    }

    /// Drops an entry and its lookups; returns it.
    pub fn remove(&mut self, id: &str) -> Option<Entry> {
        let h = self.handle(id)?;
        self.unfile_number(h);
        let hash = self.hasher.hash_one(id);
        if let Ok(o) = self.by_id.find_entry(hash, |&k| k == h) {
            o.remove();
        }
        let e = self.slots.get_mut(h as usize)?.take()?;
        if e.timed {
            self.timers.remove(&(e.timer, h));
        }
        self.free.push(h);
        self.len -= 1;
        Some(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).expect("in range")
    }

    fn fields<'a>(phone: &'a str, queue: &'a str) -> Fields<'a> {
        Fields {
            phone,
            queue,
            not_before: at(0),
            state: CallbackState::Pending,
        }
    }

    fn add(index: &mut Index, id: &str, phone: &str, queue: &str) {
        index.upsert(id, fields(phone, queue), None);
    }

    /// The id the index gives for this number and queue.
    fn found<'a>(index: &'a Index, phone: &str, queue: &str) -> Option<&'a str> {
        index.by_number(&Phone::of(phone), queue).map(|id| &**id)
    }

    #[test]
    fn finds_the_callback_of_a_number_in_a_queue_only() {
        let mut index = Index::default();
        add(&mut index, "a", "+15550100", "sales");
        add(&mut index, "b", "+15550100", "support");
        add(&mut index, "c", "+15550101", "sales");
        assert_eq!(found(&index, "+15550100", "sales"), Some("a"));
        assert_eq!(found(&index, "+15550100", "support"), Some("b"));
        assert_eq!(found(&index, "+15550101", "sales"), Some("c"));
        assert_eq!(found(&index, "+15550101", "support"), None);
        assert_eq!(found(&index, "+15550100", "billing"), None);
    }

    #[test]
    fn two_open_callbacks_for_one_number_and_queue_resolve_to_the_later_in_any_order() {
        for order in [["a", "b"], ["b", "a"]] {
            let mut index = Index::default();
            for id in order {
                add(&mut index, id, "+15550100", "sales");
            }
            assert_eq!(found(&index, "+15550100", "sales"), Some("b"), "{order:?}");
            // Removing the other one leaves the current one in place.
            index.remove("a");
            assert_eq!(found(&index, "+15550100", "sales"), Some("b"));
            index.remove("b");
            assert_eq!(found(&index, "+15550100", "sales"), None);
            assert_eq!(index.len(), 0);
        }
    }

    #[test]
    fn an_entry_that_changes_number_is_found_by_its_new_number_only() {
        let mut index = Index::default();
        add(&mut index, "a", "+15550100", "sales");
        add(&mut index, "a", "+15550199", "support");
        assert_eq!(index.len(), 1);
        assert_eq!(found(&index, "+15550100", "sales"), None);
        assert_eq!(found(&index, "+15550199", "support"), Some("a"));
        assert_eq!(
            &**index.queue_of(index.get("a").expect("indexed")),
            "support"
        );
    }

    #[test]
    fn timers_fire_in_order_once_and_follow_their_entry() {
        let mut index = Index::default();
        index.upsert("a", fields("+15550100", "q"), Some(at(30)));
        index.upsert("b", fields("+15550101", "q"), Some(at(10)));
        index.upsert("c", fields("+15550102", "q"), Some(at(20)));
        // Moved, then removed: neither the old instant nor the removed entry fires.
        index.set_timer("a", Some(at(5)));
        index.remove("c");
        assert_eq!(index.next_timer(), Some(at(5)));
        assert_eq!(index.pop_due(at(4)), None);
        assert_eq!(index.pop_due(at(100)).as_deref(), Some("a"));
        assert_eq!(index.pop_due(at(100)).as_deref(), Some("b"));
        assert_eq!(index.pop_due(at(100)), None);
        assert_eq!(index.get("a").and_then(Entry::timer), None);
        // A replaced entry keeps one timer, its new one.
        index.upsert("b", fields("+15550101", "q"), Some(at(50)));
        index.upsert("b", fields("+15550101", "q"), Some(at(40)));
        assert_eq!(index.pop_due(at(100)).as_deref(), Some("b"));
        assert_eq!(index.pop_due(at(100)), None);
    }

    #[test]
    fn a_bulk_load_files_the_same_entries_numbers_and_timers_as_one_at_a_time() {
        let mut loaded = Index::default();
        let mut one_by_one = Index::default();
        for i in 0..500_i64 {
            let id = format!("cb{:04}", (i * 7919) % 500);
            let phone = format!("+1555{i:07}");
            let timer = (i % 3 != 0).then(|| at((i * 31) % 97));
            loaded.load(&id, fields(&phone, "q"), timer);
            one_by_one.upsert(&id, fields(&phone, "q"), timer);
        }
        // An id loaded twice keeps its last timer only.
        loaded.load("cb0001", fields("+19990000001", "q"), Some(at(1_000)));
        one_by_one.upsert("cb0001", fields("+19990000001", "q"), Some(at(1_000)));
        loaded.finish_load();
        assert_eq!(loaded.len(), 500);
        assert_eq!(loaded.len(), one_by_one.len());
        for i in 0..500_i64 {
            let phone = format!("+1555{i:07}");
            assert_eq!(found(&loaded, &phone, "q"), found(&one_by_one, &phone, "q"));
        }
        assert_eq!(found(&loaded, "+19990000001", "q"), Some("cb0001"));
        let drain = |index: &mut Index| {
            std::iter::from_fn(|| index.pop_due(at(10_000)).map(|id| id.to_string()))
                .collect::<Vec<_>>()
        };
        let fired = drain(&mut loaded);
        assert_eq!(fired, drain(&mut one_by_one));
        assert_eq!(fired.iter().filter(|id| *id == "cb0001").count(), 1);
        assert_eq!(fired.last().map(String::as_str), Some("cb0001"));
    }

    #[test]
    fn freed_slots_are_reused_and_everything_stays_findable() {
        let mut index = Index::default();
        for i in 0..1_000 {
            add(&mut index, &format!("cb{i}"), &format!("+1555{i:07}"), "q");
        }
        for i in (0..1_000).step_by(2) {
            assert!(index.remove(&format!("cb{i}")).is_some());
        }
        for i in 1_000..1_500 {
            add(&mut index, &format!("cb{i}"), &format!("+1555{i:07}"), "q");
        }
        assert_eq!(index.len(), 1_000);
        assert_eq!(index.slots.len(), 1_000, "freed slots were reused");
        for i in 0..1_500 {
            let id = format!("cb{i}");
            let open = i % 2 == 1 || i >= 1_000;
            assert_eq!(index.contains(&id), open, "{id}");
            let phone = format!("+1555{i:07}");
            assert_eq!(found(&index, &phone, "q"), open.then_some(id.as_str()));
        }
    }

    #[test]
    fn entries_stay_small() {
        assert_eq!(std::mem::size_of::<Phone>(), 16);
        assert!(std::mem::size_of::<Option<Entry>>() <= 64);
    }
}
