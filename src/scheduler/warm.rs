//! The actor's side of the warm-start image ([`super::image`]): written from its index
//! and the floor's lines at a clean stop, read back into them at start.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use tokio::sync::oneshot;

use super::image::{self, ImageEntry, ImageError, Lined};
use super::{index, Actor};
use crate::domain::callback::CallbackState;
use crate::live::{DueCallback, QueueInfo};
use crate::routing::plan::CompiledPlan;

/// Where the plan queue named `name` is in `queues` (added on first use), or `None`
/// when the plan has no such queue: a due callback's line at start-up.
pub(super) fn line_of<'p>(
    queues: &mut Vec<QueueInfo<'p>>,
    plan: &'p CompiledPlan,
    name: &str,
) -> Option<u32> {
    if let Some(i) = queues.iter().position(|q| q.id == name) {
        return Some(i as u32);
    }
    let q = plan.queue(name)?;
    queues.push(crate::service::queue_info(q));
    Some((queues.len() - 1) as u32)
}

impl Actor {
    /// Answers a stop: with `image`, the warm-start image of the actor as it is now
    /// (every command before the stop applied).
    pub(super) fn stop(&self, image: bool, done: oneshot::Sender<Option<Vec<u8>>>) {
        let rechecking = self
            .rechecks_in_flight
            .load(std::sync::atomic::Ordering::SeqCst);
        let image = (image && rechecking == 0)
            .then(|| self.warm_image())
            .flatten();
        let _ = done.send(image);
    }

    /// The image of the open callbacks: lined ones first, in their places' order.
    fn warm_image(&self) -> Option<Vec<u8>> {
        let started = std::time::Instant::now();
        let attempts: HashMap<&str, &str> = self
            .by_attempt
            .iter()
            .map(|(attempt, id)| (&**id, attempt.as_str()))
            .collect();
        // One floor lock for the lot: the floor is not serving any more.
        let mut entries: Vec<(u64, Option<Lined>, &index::Entry)> = self.hl.with_floor(|f| {
            self.open
                .iter()
                .map(|e| match f.lined_place(&e.id) {
                    Some((priority, at, order)) => (order, Some(Lined { priority, at }), e),
                    None => (u64::MAX, None, e),
                })
                .collect()
        });
        entries.sort_unstable_by_key(|(order, _, _)| *order);
        let mut w = image::Writer::new(&self.open.queue_names(), entries.len());
        for (_, lined, e) in entries {
            w.push(&ImageEntry {
                id: &e.id,
                phone: e.phone.clone(),
                queue: e.queue_index(),
                not_before: e.not_before,
                state: e.state,
                timer: e.timer(),
                slot_start: self.slot_of.get(&*e.id).map(|(_, start)| *start),
                attempt: attempts.get(&*e.id).copied(),
                lined,
            });
        }
        let image = w.finish();
        tracing::info!(
            open = self.open.len(),
            ms = started.elapsed().as_millis() as u64,
            "warm-start image written"
        );
        image
    }

    /// Loads the index from a warm-start image (as [`index::Index::load`] does from
    /// the store's records; `finish_load` follows) and lists the lined callbacks in
    /// `due`, in their order at the stop. An entry without a timer gets `now`: its
    /// record decides at the first pass. On an error the actor holds part of the
    /// image: [`Self::forget_all`] before reading the store instead.
    pub(super) fn restore<'p>(
        &mut self,
        bytes: &[u8],
        plan: &'p CompiledPlan,
        now: DateTime<Utc>,
        queues: &mut Vec<QueueInfo<'p>>,
        due: &mut Vec<DueCallback>,
    ) -> Result<u64, ImageError> {
        image::read(bytes, |names, e| {
            let queue = names[e.queue as usize];
            let fields = index::Fields {
                phone: "",
                queue,
                not_before: e.not_before,
                state: e.state,
            };
            let timer = e.timer.unwrap_or(now);
            let id = self.open.load_entry(e.id, e.phone, fields, Some(timer));
            self.file_refs(&id, queue, e.attempt, e.slot_start);
            let line = e
                .lined
                .filter(|_| e.state == CallbackState::Pending)
                .and_then(|l| Some((l, line_of(queues, plan, queue)?)));
            if let Some((l, queue)) = line {
                due.push(DueCallback {
                    id,
                    at: l.at,
                    priority: l.priority,
                    queue,
                });
            }
        })
    }

    /// Drops everything a start loaded (an image that failed half-way).
    pub(super) fn forget_all(&mut self) {
        self.open = index::Index::default();
        self.by_attempt.clear();
        self.booked.clear();
        self.slot_of.clear();
    }
}
