//! Who gets a freed agent: the head of the line across the queues the agent serves.
//!
//! The floor keeps one invariant after every operation: **no free agent is able to
//! serve anyone who may be matched now.** "May be matched now" is a waiting call (not
//! holding out for a preferred agent, unless the agent is that one) or, while a dialer
//! is connected, a pending callback in line that no calling window keeps back. So:
//!
//! - when an agent frees up (reports AVAILABLE, a hold lapses or ends, a call they were
//!   reserved for leaves), they are matched to the first such entry, across every
//!   queue whose skills they have, by (priority desc, enqueue time asc, arrival order);
//! - when an entry becomes matchable (a call is placed or returns to its place, a
//!   preferred agent's wait ends, a callback is put in line or its window opens), it
//!   takes the longest-idle free agent able to serve it, who by the invariant is owed
//!   to nobody ahead of it;
//! - a call is matched by reserving the agent for it (RouteCall asked again names the
//!   agent; the platform's ACD connects them); a callback by holding the agent for it
//!   and handing the pair to the scheduler, which dispatches it or, when it cannot be
//!   dialed now, parks it and so frees the agent for the next in line.
//!
//! Every public operation of the floor that can free an agent or make an entry
//! matchable records it (`freed`, `fresh`) and ends with [`Floor::settle`].

use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::{CallState, Floor, Place, WaitKey};
use crate::domain::agent::has_skills;

/// Entries of a queue's ready calls an agent looks past (calls needing skills it
/// lacks) before giving up on that queue: bounds the work of one freed agent in a
/// line full of calls for a rarer skill.
const MAX_SKIPPED: usize = 1024;

/// A pending callback holding a place in a line: 32 bytes, as a million of them wait
/// at start-up. Its id is the table's key, so the entry keeps only the place, and
/// [`LinedCallback::key`] rebuilds the line's key with that same id (the line's entry
/// shares it, so the two compare equal by pointer). Its queue is the table's number
/// for the queue's name (see [`super::lined::LinedCallbacks::queue_name`]).
#[derive(Debug)]
pub(in crate::live) struct LinedCallback {
    pub queue: u32,
    pub place: Place,
    pub state: CallbackLine,
}

impl LinedCallback {
    /// The callback's key in its line, given its id (the map's key).
    pub fn key(&self, id: &Arc<str>) -> WaitKey {
        WaitKey {
            place: self.place,
            id: id.clone(),
        }
    }
}

/// Where a lined callback stands with matching.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::live) enum CallbackLine {
    /// May be matched to a free agent.
    Ready,
    /// Kept in its place, but not matched: its calling window is closed.
    Parked,
    /// An agent is held for it until the scheduler dispatches it (the agent is in
    /// the floor's `matched`).
    Matched,
}

/// The skills a call needs: its queue's plus the rule's extra ones.
pub(super) fn required_skills<'a>(
    queue: &'a [String],
    extra: &[String],
) -> std::borrow::Cow<'a, [String]> {
    if extra.is_empty() {
        return std::borrow::Cow::Borrowed(queue);
    }
    let mut all = queue.to_vec();
    for s in extra {
        if !all.contains(s) {
            all.push(s.clone());
        }
    }
    std::borrow::Cow::Owned(all)
}

impl Floor {
    /// Matches the agents freed and the entries made ready by the operation in hand,
    /// restoring the invariant of the module documentation.
    pub(super) fn settle(&mut self, now: DateTime<Utc>) {
        while !self.freed.is_empty() || !self.fresh.is_empty() {
            for agent in std::mem::take(&mut self.freed) {
                self.serve_agent(&agent, now);
            }
            let mut fresh = std::mem::take(&mut self.fresh);
            // In line order, so an entry is never matched ahead of one before it.
            fresh.sort_by(|a, b| a.1.cmp(&b.1));
            for (queue, key) in fresh {
                self.serve_entry(&queue, &key, now);
            }
        }
    }

    /// Gives a free agent to the first entry it can serve, across its queues.
    fn serve_agent(&mut self, agent_id: &str, now: DateTime<Utc>) {
        let Some(agent) = self.agents.get(agent_id) else {
            return;
        };
        if !agent.free() {
            return;
        }
        let mut chosen: Option<(WaitKey, Arc<str>)> = None;
        let mut take = |key: &WaitKey, queue: &Arc<str>| {
            if chosen.as_ref().is_none_or(|(k, _)| key < k) {
                chosen = Some((key.clone(), queue.clone()));
            }
        };
        for q in self.queues.values() {
            if !has_skills(&agent.skills, q.skills.iter()) {
                continue;
            }
            if let Some(k) = q.ready_calls.iter().take(MAX_SKIPPED).find(|k| {
                self.calls.get(&*k.id).is_some_and(|c| {
                    c.extra_skills
                        .as_deref()
                        .is_none_or(|r| has_skills(&agent.skills, r.iter()))
                })
            }) {
                take(k, &q.name);
            }
            if self.dispatching {
                if let Some(k) = q.ready_callbacks.first() {
                    take(k, &q.name);
                }
            }
        }
        if let Some(held) = self.held_for.get(agent_id) {
            for id in held {
                let Some(c) = self.calls.get(&**id) else {
                    continue;
                };
                let able = c.state == CallState::Waiting
                    && self
                        .queues
                        .get(&*c.queue)
                        .is_some_and(|q| has_skills(&agent.skills, q.skills.iter()))
                    && c.extra_skills
                        .as_deref()
                        .is_none_or(|r| has_skills(&agent.skills, r.iter()));
                if able {
                    take(&c.place, &c.queue);
                }
            }
        }
        if let Some((key, queue)) = chosen {
            self.assign(agent_id, &queue, &key, now);
        }
    }

    /// Gives a newly matchable entry the longest-idle free agent able to serve it.
    fn serve_entry(&mut self, queue: &Arc<str>, key: &WaitKey, now: DateTime<Utc>) {
        let Some(q) = self.queues.get(&**queue) else {
            return;
        };
        let agent = if key.is_callback() {
            if !self.dispatching || !q.ready_callbacks.contains(key) {
                return;
            }
            let skills = q.skills.clone();
            self.agents.choose(&skills, None).ok()
        } else {
            if !q.ready_calls.contains(key) {
                return;
            }
            let extra = self
                .calls
                .get(&*key.id)
                .and_then(|c| c.extra_skills.clone())
                .unwrap_or_default();
            let required = required_skills(&q.skills, &extra).into_owned();
            self.agents.choose(&required, None).ok()
        };
        if let Some(agent) = agent {
            self.assign(&agent, queue, key, now);
        }
    }

    /// Matches a free agent to an entry: reserves them for a call, or holds them for
    /// a callback and hands the pair to the scheduler.
    fn assign(&mut self, agent: &str, queue: &Arc<str>, key: &WaitKey, now: DateTime<Utc>) {
        if key.is_callback() {
            let Some((lined, _)) = self.callbacks.get_mut(&key.id) else {
                return;
            };
            lined.state = CallbackLine::Matched;
            self.matched.insert(key.id.clone(), agent.to_owned());
            if let Some(q) = self.queues.get_mut(&**queue) {
                q.ready_callbacks.remove(key);
            }
            self.reserve(agent, &key.id, now);
            self.matches.push((key.id.clone(), agent.to_owned()));
            return;
        }
        let Some(c) = self.calls.get(&*key.id).cloned() else {
            return;
        };
        self.unline(&c);
        if let Some(c) = self.calls.get_mut(&*key.id) {
            c.state = CallState::Reserved(agent.to_owned());
            c.prefers = None;
        }
        self.reserve(agent, &key.id, now);
    }

    /// Takes a call out of its line and everything matching keeps for it.
    pub(super) fn unline(&mut self, c: &super::CallLive) {
        if let Some(q) = self.queues.get_mut(&*c.queue) {
            q.line.remove(&c.place);
            q.ready_calls.remove(&c.place);
        }
        if let Some((_, until)) = &c.prefers {
            self.preferred_deadlines
                .remove(&(*until, c.place.id.clone()));
            self.stop_preferring(&c.place.id, false);
        }
    }

    /// Records that call `id` waits for `agent` until `until`.
    pub(super) fn prefer(&mut self, id: &Arc<str>, agent: String, until: DateTime<Utc>) {
        self.preferred_deadlines.insert((until, id.clone()));
        self.held_for.entry(agent).or_default().push(id.clone());
    }

    /// Call `id` no longer waits for its preferred agent; with `ready`, it becomes an
    /// ordinary member of its line (its wait ran out).
    pub(super) fn stop_preferring(&mut self, id: &Arc<str>, ready: bool) {
        let Some(c) = self.calls.get_mut(&**id) else {
            return;
        };
        let Some((agent, _)) = (if ready {
            c.prefers.take()
        } else {
            c.prefers.clone()
        }) else {
            return;
        };
        if let Some(held) = self.held_for.get_mut(&agent) {
            held.retain(|h| !Arc::ptr_eq(h, id) && **h != **id);
            if held.is_empty() {
                self.held_for.remove(&agent);
            }
        }
        if ready && c.state == CallState::Waiting {
            let key = c.place.clone();
            let queue = c.queue.clone();
            if let Some(q) = self.queues.get_mut(&*queue) {
                q.ready_calls.insert(key.clone());
            }
            self.fresh.push((queue, key));
        }
    }
}
