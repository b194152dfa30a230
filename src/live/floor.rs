//! The floor: live state of every queue, agent and call, rebuilt from platform events.
//! A plain state machine driven by events and an explicit `now`, so it is tested with
//! hand-set times; the service keeps it behind a mutex that is never held across an
//! `.await`.
//!
//! A routed call either gets an agent reserved at once (the preferred agent when the
//! rule asks and they are free, else the longest-idle agent with every required skill)
//! or waits in its queue's line, ordered by priority (higher first), then enqueue time,
//! then id. A reservation not confirmed by `answered` within the configured time lapses:
//! the agent is free again and the call goes back to its place in line.

use std::cmp::{Ordering, Reverse};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use smallvec::SmallVec;

mod lined;
mod matching;

use matching::required_skills;
pub(in crate::live) use matching::{CallbackLine, LinedCallback};

use super::agents::{AgentLive, Agents};
use super::ewt::{estimated_wait, Aht, EwtError};
use crate::domain::agent::{AgentState, Skills};
use crate::domain::contact::{CallFacts, ContactOutcome, ContactRecord};

/// Tunables of the live state.
#[derive(Debug, Clone)]
pub struct LiveConfig {
    /// A reservation lapses if `answered` does not follow within this time.
    pub reservation_timeout: chrono::Duration,
    /// A waiting call nobody reported on for this long is dropped as stale.
    pub stale_call_after: chrono::Duration,
    /// Finished calls are remembered this long, so repeated events stay harmless.
    pub finished_call_memory: chrono::Duration,
}

impl Default for LiveConfig {
    fn default() -> Self {
        Self {
            reservation_timeout: chrono::Duration::seconds(15),
            stale_call_after: chrono::Duration::hours(4),
            finished_call_memory: chrono::Duration::hours(1),
        }
    }
}

/// A pending callback due now, as the scheduler hands it to
/// [`Floor::enqueue_callbacks`] at start-up: its queue is an index into the queues
/// given with it (a million of these are 40 bytes each, not 80 with the queue's
/// details repeated in every one).
#[derive(Debug, Clone)]
pub struct DueCallback {
    pub id: Arc<str>,
    pub at: DateTime<Utc>,
    pub priority: i32,
    /// Index into the queues passed along.
    pub queue: u32,
}

/// What the floor needs to know about a queue (from the active plan).
#[derive(Debug, Clone, Copy)]
pub struct QueueInfo<'a> {
    pub id: &'a str,
    pub skills: &'a [String],
    pub default_aht_secs: u32,
    pub max_waiting: u32,
}

/// The floor's maps: hashbrown's default hasher (foldhash, seeded per process) rather
/// than std's SipHash, which was a measurable part of a RouteCall's floor lookups. The
/// keys come from authenticated platform and supervisor calls.
type Map<K, V> = hashbrown::HashMap<K, V>;

/// A call id as the floor keys its calls by: ids of up to 48 bytes (a UUID, a Twilio
/// CallSid, an Asterisk uniqueid, most SIP Call-IDs) are kept inside the map's entry,
/// so finding a call reads no other memory; longer ones go to the heap.
type CallId = smallstr::SmallString<[u8; 48]>;

/// Callback offers made and not yet added to the KPI store: per interval start, per
/// queue id.
pub type PendingOffers = hashbrown::HashMap<DateTime<Utc>, hashbrown::HashMap<String, u64>>;

/// A caller's number in E.164 (at most 15 digits and the `+`), kept inside the call's
/// entry: RouteCall compares it on every call asked about again.
type Number = smallstr::SmallString<[u8; 16]>;

/// A place in a queue's line, without who holds it: priority desc, enqueue time asc,
/// then arrival order (calls that entered within the same clock tick keep the order
/// they arrived in), then a live call before a callback of the same arrival. 24 bytes:
/// a lined callback keeps only this (its id is its map key), so a million waiting
/// callbacks at start-up cost no more than they must.
///
/// The enqueue time is kept as Unix seconds and nanoseconds, which order alike
/// (chrono's leap-second nanoseconds past 10^9 stay within their second) and compare
/// as two integers: every insert, removal and rank in a line compares places, and
/// start-up sorts a million of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Place {
    // Compared in this order (the derived `Ord`).
    priority: Reverse<i32>,
    secs: i64,
    nanos: u32,
    /// `seq << 1 | callback`: the arrival order and the kind in one word, ordered as the
    /// pair `(seq, callback)` would be. One word less than the pair makes a line's key
    /// 40 bytes rather than 48.
    order: u64,
}

/// The largest arrival order a place keeps (one bit of the word holds the kind). The
/// floor hands out arrival orders one at a time from 1, so it never gets there; one
/// handed back beyond it (a `TakenCall::seq` the floor never made) is capped, which
/// only ties it with others so capped (their ids then decide).
const MAX_SEQ: u64 = u64::MAX >> 1;

impl Place {
    pub fn new(priority: i32, enqueued_at: DateTime<Utc>, seq: u64, callback: bool) -> Self {
        Self {
            priority: Reverse(priority),
            secs: enqueued_at.timestamp(),
            nanos: enqueued_at.timestamp_subsec_nanos(),
            order: (seq.min(MAX_SEQ) << 1) | u64::from(callback),
        }
    }

    pub fn priority(&self) -> i32 {
        self.priority.0
    }

    pub fn enqueued_at(&self) -> DateTime<Utc> {
        DateTime::from_timestamp(self.secs, self.nanos)
            .expect("a place's time is taken from a DateTime, so it converts back")
    }

    /// The arrival order in the floor.
    pub fn seq(&self) -> u64 {
        self.order >> 1
    }

    /// A pending callback (rather than a live call) holds this place.
    pub fn is_callback(&self) -> bool {
        self.order & 1 == 1
    }
}

/// Ordering key of a queue's line: the place, then the id (never reached in practice:
/// arrival orders are unique).
#[derive(Debug, Clone)]
pub struct WaitKey {
    pub place: Place,
    /// Shared with the floor's callback lookup (a million waiting callbacks at start-up
    /// are one allocation each, not three).
    pub id: Arc<str>,
}

impl WaitKey {
    pub fn priority(&self) -> i32 {
        self.place.priority()
    }

    pub fn enqueued_at(&self) -> DateTime<Utc> {
        self.place.enqueued_at()
    }

    pub fn seq(&self) -> u64 {
        self.place.seq()
    }

    pub fn is_callback(&self) -> bool {
        self.place.is_callback()
    }
}

impl Ord for WaitKey {
    /// By place, then by id. A key compared with the entry it was cloned from (a call
    /// looking up its own place) is equal without reading the id's memory.
    fn cmp(&self, other: &Self) -> Ordering {
        self.place.cmp(&other.place).then_with(|| {
            if Arc::ptr_eq(&self.id, &other.id) {
                Ordering::Equal
            } else {
                self.id.cmp(&other.id)
            }
        })
    }
}

impl PartialOrd for WaitKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for WaitKey {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for WaitKey {}

#[derive(Debug, Clone, PartialEq, Eq)]
enum CallState {
    Waiting,
    Reserved(String),
    Connected(String),
    Transferred,
    Abandoned,
    Ended,
    /// The caller accepted a callback and hung up: their place passed to the callback.
    CallbackAccepted,
}

impl CallState {
    fn name(&self) -> &'static str {
        match self {
            CallState::Waiting => "waiting",
            CallState::Reserved(_) => "waiting for its reserved agent",
            CallState::Connected(_) => "answered",
            CallState::Transferred => "transferred",
            CallState::Abandoned => "abandoned",
            CallState::Ended => "ended",
            CallState::CallbackAccepted => "turned into a callback",
        }
    }
}

#[derive(Debug, Clone)]
struct CallLive {
    /// The call's place in its queue's line, as the line's entry holds it (the id
    /// shared with it): a lookup of the call's position clones nothing and reads no
    /// other memory. `place.seq()` is the call's arrival order in the floor.
    place: WaitKey,
    /// The queue, as the floor's own name of it (so compared by pointer).
    queue: Arc<str>,
    state: CallState,
    predicted_wait: Option<Duration>,
    answered_at: Option<DateTime<Utc>>,
    wait: Option<Duration>,
    customer_id: Option<String>,
    caller: Option<Number>,
    /// Queues the call was routed or transferred to, as the floor names them (kept in
    /// the entry for the usual one or two: RouteCall's reply lists them).
    visited: SmallVec<[Arc<str>; 2]>,
    transfers: u32,
    transfer_loop: bool,
    last_change: DateTime<Utc>,
    /// What routing looked at when the call was first routed (for plan replays).
    facts: Option<Box<CallFacts>>,
    /// Skills the call's rule adds to its queue's (`None`: none); they go with the
    /// call when it is transferred.
    extra_skills: Option<Box<[String]>>,
    /// The preferred agent the call waits for (busy when it was routed), and until
    /// when; only that agent may take it before then.
    prefers: Option<(String, DateTime<Utc>)>,
}

impl CallLive {
    fn history(&self) -> CallHistory {
        CallHistory {
            transfers: self.transfers,
            visited: self.visited.iter().map(|q| String::from(&**q)).collect(),
            transfer_loop: self.transfer_loop,
        }
    }

    fn key(&self) -> WaitKey {
        self.place.clone()
    }

    fn priority(&self) -> i32 {
        self.place.priority()
    }

    fn enqueued_at(&self) -> DateTime<Utc> {
        self.place.enqueued_at()
    }

    /// The queue the call waits in (or has an agent reserved in), if any.
    fn waiting_in(&self) -> Option<&Arc<str>> {
        matches!(self.state, CallState::Waiting | CallState::Reserved(_)).then_some(&self.queue)
    }
}

/// Whether two of the floor's queue names are the same queue. The floor makes one name
/// per queue and hands out clones of it, so this is a pointer compare; the string
/// compare is only reached for different queues.
fn same_queue(a: &Arc<str>, b: &Arc<str>) -> bool {
    Arc::ptr_eq(a, b) || a == b
}

/// A queue's line: an order-statistic B-tree, so a caller's position is a rank
/// lookup (logarithmic) even with thousands waiting.
type Line = indexset::BTreeSet<WaitKey>;

/// Entries per node of a line. indexset's default (1,024) makes every insert and
/// removal shift ~28 KB inside a node, which was the largest single cost of a
/// RouteCall; smaller nodes shift less but rebuild the node index more often when they
/// split (a cost that grows with the number of nodes, so it shows in lines of a
/// million callbacks at start-up). 256 keeps both small.
pub(in crate::live) const LINE_NODE_SIZE: usize = 256;

/// A line holding `keys` (sorted and distinct) in nodes that are all full but the last.
///
/// indexset 0.18 has no bulk build (its `FromIterator` inserts one at a time), and keys
/// inserted in order leave every node half full: a full node is halved and only its
/// upper half takes the keys that follow. That is twice the memory of the keys, and
/// twice the splits, each of which rebuilds the tree's node index. So each node's keys
/// go in in an order that fills the lower half of every split: the node's smallest
/// keys but one and its largest first, then the next node's likewise (appended to the
/// same node, which fills up), then the rest of the node's keys, the first of which
/// splits it exactly there; each of these lands just before the node's largest, a
/// one-entry shift.
pub(in crate::live) fn line_of(keys: &[WaitKey]) -> Line {
    let mut line = Line::with_maximum_node_size(LINE_NODE_SIZE);
    let sizes = node_sizes(keys.len(), LINE_NODE_SIZE);
    if sizes.len() == 1 {
        for k in keys {
            line.insert(k.clone());
        }
        return line;
    }
    let half = LINE_NODE_SIZE / 2;
    let mut blocks = Vec::with_capacity(sizes.len());
    let mut rest = keys;
    for n in sizes {
        let (block, tail) = rest.split_at(n);
        blocks.push(block);
        rest = tail;
    }
    fn early(b: &[WaitKey], half: usize) -> impl Iterator<Item = &WaitKey> {
        b[..half - 1].iter().chain(b.last())
    }
    fn middle(b: &[WaitKey], half: usize) -> &[WaitKey] {
        &b[half - 1..b.len() - 1]
    }
    let mut insert = |k: &WaitKey| {
        line.insert(k.clone());
    };
    early(blocks[0], half).for_each(&mut insert);
    for pair in blocks.windows(2) {
        early(pair[1], half).for_each(&mut insert);
        middle(pair[0], half).iter().for_each(&mut insert);
    }
    if let Some(last) = blocks.last() {
        middle(last, half).iter().for_each(&mut insert);
    }
    line
}

/// How many keys each node of a line of `n` keys built by [`line_of`] holds: full
/// nodes of `capacity`, every one but the last holding more than half (its first
/// insert after the split must find it full), the last at least half. A remainder
/// short of half is evened out with the node before it.
pub(in crate::live) fn node_sizes(n: usize, capacity: usize) -> Vec<usize> {
    if n <= capacity {
        return vec![n];
    }
    let (full, rest) = (n / capacity, n % capacity);
    let mut sizes = vec![capacity; full];
    if rest >= capacity / 2 {
        sizes.push(rest);
    } else if rest > 0 {
        sizes.pop();
        sizes.push((capacity + rest).div_ceil(2));
        sizes.push((capacity + rest) / 2);
    }
    sizes
}

#[derive(Debug)]
struct QueueLive {
    /// The queue id, shared by the callbacks waiting in it.
    name: Arc<str>,
    /// Skills an agent needs for the queue (as the plan last named them).
    skills: Box<[String]>,
    /// Everyone waiting, in order: what positions and wait estimates count.
    line: Line,
    /// The waiting calls a free agent may be given now (all but those holding out for
    /// a preferred agent), in line order.
    ready_calls: BTreeSet<WaitKey>,
    /// The callbacks a free agent may be given now (due, not kept back by a calling
    /// window, not yet matched), in line order; matched only while a dialer is
    /// connected.
    ready_callbacks: BTreeSet<WaitKey>,
    aht: Aht,
    ewt_error: EwtError,
}

/// Where a routed call stands.
#[derive(Debug, Clone, PartialEq)]
pub struct Placement {
    /// 1-based place in line; 0 when an agent was reserved.
    pub position: u32,
    pub estimated_wait: Option<Duration>,
    pub reserved_agent: Option<String>,
    /// How much longer the call waits for its preferred agent (logged in but busy),
    /// who alone may take it until then; nobody else is reserved meanwhile.
    pub preferred_wait: Option<Duration>,
    /// The queue already held its maximum of waiting calls.
    pub queue_full: bool,
}

/// What the routing context needs about a call seen before (transfers).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CallHistory {
    pub transfers: u32,
    pub visited: Vec<String>,
    pub transfer_loop: bool,
}

/// A call being routed, as [`Floor::route_call`] takes it.
#[derive(Debug, Clone, Copy)]
pub struct RoutedCall<'a> {
    pub call_id: &'a str,
    pub caller: Option<&'a str>,
    pub customer_id: Option<&'a str>,
    pub priority: i32,
    /// Skills the decision adds to the queue's own.
    pub extra_skills: &'a [String],
    /// The agent the decision prefers (the customer's last agent): reserved when
    /// free, waited for up to `preferred_wait_secs` when logged in but busy.
    pub preferred_agent: Option<&'a str>,
    pub preferred_wait_secs: u32,
}

/// A platform event about a call.
#[derive(Debug, Clone, PartialEq)]
pub enum CallEvent {
    Queued { queue: Option<String> },
    Answered { agent: String },
    Transferred { queue: Option<String> },
    Abandoned,
    Ended { handle_time: Option<Duration> },
}

impl CallEvent {
    fn name(&self) -> &'static str {
        match self {
            CallEvent::Queued { .. } => "queued",
            CallEvent::Answered { .. } => "answered",
            CallEvent::Transferred { .. } => "transferred",
            CallEvent::Abandoned => "abandoned",
            CallEvent::Ended { .. } => "ended",
        }
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LiveError {
    #[error("call {0} is not known (never routed, or routed before a restart)")]
    UnknownCall(String),
    #[error("call {call} is {state}; '{event}' cannot happen now")]
    Impossible {
        call: String,
        state: &'static str,
        event: &'static str,
    },
    #[error("queue {0} is not in the active plan")]
    UnknownQueue(String),
}

/// The outcome of an applied event: the contact record to persist, if any.
#[derive(Debug, Clone, PartialEq)]
pub enum EventOutcome {
    Duplicate,
    Applied(Option<ContactRecord>),
}

/// Agents able to serve a queue, by state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AgentCounts {
    pub available: u32,
    pub reserved: u32,
    pub busy: u32,
    pub wrap_up: u32,
    /// Agents holdless knows (they reported before) whose last state is offline: not
    /// staffed, but the wallboard shows them as away.
    pub offline: u32,
}

impl AgentCounts {
    pub fn staffed(&self) -> u32 {
        self.available + self.reserved + self.busy + self.wrap_up
    }
}

/// A queue's live figures.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueSnapshot {
    pub waiting: u32,
    pub longest_wait: Duration,
    pub agents: AgentCounts,
    pub aht_secs: f64,
    pub aht_samples: u32,
    /// For a call arriving now.
    pub estimated_wait: Option<Duration>,
    pub ewt_mae: Option<Duration>,
    pub ewt_samples: u32,
}

#[derive(Debug)]
pub struct Floor {
    config: LiveConfig,
    queues: Map<String, QueueLive>,
    /// Calls by id, each entry inline in the map (one place in memory per call).
    calls: Map<CallId, CallLive>,
    agents: Agents,
    /// Reservation deadlines, earliest first.
    deadlines: BTreeSet<(DateTime<Utc>, String)>,
    next_seq: u64,
    /// Pending callbacks holding a place in a line.
    callbacks: lined::LinedCallbacks,
    /// Whether a dialer is connected: callbacks are matched to agents only then.
    dispatching: bool,
    /// Callbacks matched to an agent (held for them), not yet taken by the scheduler.
    matches: Vec<(Arc<str>, String)>,
    /// The agent held for each matched callback, until it is dispatched, parked,
    /// removed or handed back (taken by the scheduler or not). Kept here, not in the
    /// lined entry: at most one per agent, while a line may hold a million callbacks.
    matched: Map<Arc<str>, String>,
    /// Agents freed during the operation in hand, and entries that became ready for an
    /// agent: [`Floor::settle`] matches them before the operation returns.
    freed: Vec<String>,
    fresh: Vec<(Arc<str>, WaitKey)>,
    /// Calls holding out for a preferred agent, by the end of their wait.
    preferred_deadlines: BTreeSet<(DateTime<Utc>, Arc<str>)>,
    /// The calls holding out for each preferred agent.
    held_for: Map<String, SmallVec<[Arc<str>; 2]>>,
    /// Counted under the lock that places the call (RouteCall takes no other lock for
    /// them); written to the KPI store by housekeeping.
    offers: PendingOffers,
}

/// A live call handed over to a callback (the caller accepted the offer).
#[derive(Debug, Clone, PartialEq)]
pub struct TakenCall {
    pub queue: String,
    pub priority: i32,
    pub enqueued_at: DateTime<Utc>,
    pub caller: Option<String>,
    pub customer_id: Option<String>,
    /// The wait holdless had predicted for the call.
    pub predicted_wait: Option<Duration>,
    /// The call's arrival order, so the callback takes exactly its place.
    pub seq: u64,
}

fn since(now: DateTime<Utc>, then: DateTime<Utc>) -> Duration {
    (now - then).to_std().unwrap_or_default()
}

impl Floor {
    pub fn new(config: LiveConfig) -> Self {
        Self {
            config,
            queues: Map::new(),
            calls: Map::new(),
            agents: Agents::default(),
            deadlines: BTreeSet::new(),
            next_seq: 0,
            callbacks: Default::default(),
            dispatching: false,
            matches: Vec::new(),
            matched: Map::new(),
            freed: Vec::new(),
            fresh: Vec::new(),
            preferred_deadlines: BTreeSet::new(),
            held_for: Map::new(),
            offers: PendingOffers::default(),
        }
    }

    /// Counts a callback offered to a call routed to `queue` in the KPI interval
    /// starting at `bucket`.
    pub fn count_offer(&mut self, bucket: DateTime<Utc>, queue: &str) {
        let in_bucket = self.offers.entry(bucket).or_default();
        match in_bucket.get_mut(queue) {
            Some(n) => *n += 1,
            None => {
                in_bucket.insert(queue.to_owned(), 1);
            }
        }
    }

    /// The offers counted since the last call.
    pub fn take_offers(&mut self) -> PendingOffers {
        std::mem::take(&mut self.offers)
    }

    fn seq(&mut self) -> u64 {
        self.next_seq += 1;
        self.next_seq
    }

    fn queue_mut(&mut self, q: &QueueInfo<'_>) -> &mut QueueLive {
        // Looked up first: the id is copied only the first time a queue is seen.
        if !self.queues.contains_key(q.id) {
            self.queues.insert(
                q.id.to_owned(),
                QueueLive {
                    name: Arc::from(q.id),
                    skills: q.skills.into(),
                    line: Line::with_maximum_node_size(LINE_NODE_SIZE),
                    ready_calls: BTreeSet::new(),
                    ready_callbacks: BTreeSet::new(),
                    aht: Aht::seeded(q.default_aht_secs),
                    ewt_error: EwtError::default(),
                },
            );
        }
        let live = self
            .queues
            .get_mut(q.id)
            .expect("the queue was inserted just above");
        if *live.skills != *q.skills {
            live.skills = q.skills.into();
        }
        live
    }

    /// Transfer history of a call seen before (None for a new call).
    pub fn history(&self, call_id: &str) -> Option<CallHistory> {
        self.calls.get(call_id).map(|c| c.history())
    }

    /// Whether routing `call_id` to `queue` now is a transfer loop: the call is flagged
    /// as looping already, or `queue` is one it visited before, other than the one it
    /// waits in (a call asked about again where it waits is not looping). One lookup,
    /// no allocation: RouteCall asks this for every call.
    pub fn would_loop(&self, call_id: &str, queue: &str) -> bool {
        let Some(c) = self.calls.get(call_id) else {
            return false;
        };
        if c.transfer_loop {
            return true;
        }
        // A queue the floor never saw is one no call visited.
        let Some(queue) = self.queues.get(queue).map(|q| &q.name) else {
            return false;
        };
        c.waiting_in().is_none_or(|w| !same_queue(w, queue))
            && c.visited.iter().any(|v| same_queue(v, queue))
    }

    /// The queue a call waits in (or has an agent reserved in), if any.
    pub fn waiting_in(&self, call_id: &str) -> Option<&str> {
        self.calls.get(call_id)?.waiting_in().map(|q| &**q)
    }

    /// Releases reservations whose time is up: the agent is free again and the call
    /// goes back to its place in line.
    pub fn expire(&mut self, now: DateTime<Utc>) {
        self.lapse(now);
        self.settle(now);
    }

    /// [`Floor::expire`] without matching what it freed (the caller settles): lapsed
    /// holds, and calls whose wait for a preferred agent is over.
    fn lapse(&mut self, now: DateTime<Utc>) {
        while let Some((deadline, agent_id)) = self.deadlines.first().cloned() {
            if deadline > now {
                break;
            }
            self.deadlines.pop_first();
            let ended = self.agents.update(&agent_id, |agent| {
                agent.end_hold_if(|_, until| until == deadline)
            });
            if let Some(Some((item, _))) = ended {
                self.requeue(&item, now);
                self.freed.push(agent_id);
            }
        }
        while let Some((until, call_id)) = self.preferred_deadlines.first().cloned() {
            if until > now {
                break;
            }
            self.preferred_deadlines.pop_first();
            self.stop_preferring(&call_id, true);
        }
    }

    /// Puts a pending callback in its queue's line at its virtual enqueue time (a
    /// callback keeps the place of the call it came from: pass that call's `seq`).
    /// Returns its position. While a dialer is connected, a free agent able to serve
    /// it is held for it at once when nobody waits ahead for that agent.
    pub fn enqueue_callback(
        &mut self,
        id: &str,
        queue: QueueInfo<'_>,
        priority: i32,
        virtual_enqueued_at: DateTime<Utc>,
        seq: Option<u64>,
        now: DateTime<Utc>,
    ) -> u32 {
        self.remove_callback(id, now);
        let seq = match seq {
            Some(s) => s,
            None => self.seq(),
        };
        let key = self.line_up_callback(Arc::from(id), &queue, priority, virtual_enqueued_at, seq);
        let name = self.queue_mut(&queue).name.clone();
        self.fresh.push((name, key.clone()));
        self.settle(now);
        self.queue_mut(&queue).line.rank(&key) as u32 + 1
    }

    /// Puts every given pending callback in its line at once (start-up), where each
    /// ends as if put in one at a time with [`Floor::enqueue_callback`] in the order
    /// given (so ties of priority and virtual enqueue time keep that order, across
    /// queues too; a repeated id keeps its last place). No positions are computed, and
    /// agents are matched to them when dispatching starts.
    ///
    /// Into a floor holding no callbacks yet, each line is built whole: the callbacks
    /// are numbered in the order given, sorted once per queue by place, and every line
    /// without calls yet is filled with full nodes (see [`line_of`]); the lookup table
    /// is sized once. A floor holding callbacks already takes them one at a time.
    pub fn enqueue_callbacks(&mut self, queues: &[QueueInfo<'_>], callbacks: Vec<DueCallback>) {
        if !self.callbacks.is_empty() {
            // As one at a time, but matched (its agent, if it had one, freed) when the
            // floor next settles.
            for DueCallback {
                id,
                queue,
                priority,
                at,
            } in callbacks
            {
                let Some(queue) = queues.get(queue as usize) else {
                    continue;
                };
                if let Some(agent) = self.unline_callback(&id) {
                    self.release(&agent, &id);
                }
                let seq = self.seq();
                let key = self.line_up_callback(id, queue, priority, at, seq);
                let name = self.queue_mut(queue).name.clone();
                self.fresh.push((name, key));
            }
            return;
        }
        let first_seq = self.next_seq + 1;
        self.next_seq += callbacks.len() as u64;
        self.callbacks.reserve(callbacks.len());
        // Each queue's floor name, and its keys in the order given.
        let names: Vec<Arc<str>> = queues
            .iter()
            .map(|q| self.queue_mut(q).name.clone())
            .collect();
        let numbers: Vec<u32> = names.iter().map(|n| self.callbacks.intern(n)).collect();
        let mut lines: Vec<Vec<WaitKey>> = vec![Vec::new(); queues.len()];
        let mut repeated = false;
        for (
            DueCallback {
                id,
                queue,
                priority,
                at,
            },
            seq,
        ) in callbacks.into_iter().zip(first_seq..)
        {
            let qi = queue as usize;
            if qi >= names.len() {
                continue;
            }
            let place = Place::new(priority, at, seq, true);
            let lined = LinedCallback {
                queue: numbers[qi],
                place,
                state: CallbackLine::Ready,
            };
            repeated |= self.callbacks.insert(id.clone(), lined).is_some();
            lines[qi].push(WaitKey { place, id });
        }
        for (name, mut keys) in names.into_iter().zip(lines) {
            if repeated {
                let callbacks = &self.callbacks;
                keys.retain(|k| callbacks.get(&k.id).is_some_and(|l| l.place == k.place));
            }
            // Places are distinct (each has its own arrival order), so an unstable
            // sort gives the one order.
            keys.sort_unstable_by_key(|k| k.place);
            let Some(q) = self.queues.get_mut(&*name) else {
                continue;
            };
            if q.line.is_empty() {
                q.line = line_of(&keys);
            } else {
                for k in &keys {
                    q.line.insert(k.clone());
                }
            }
            // Built whole from sorted keys (full nodes), then merged with any already
            // there (a call-free set: std's `append` merges by bulk build too).
            let mut ready: BTreeSet<WaitKey> = keys.into_iter().collect();
            q.ready_callbacks.append(&mut ready);
        }
    }

    fn line_up_callback(
        &mut self,
        id: Arc<str>,
        queue: &QueueInfo<'_>,
        priority: i32,
        virtual_enqueued_at: DateTime<Utc>,
        seq: u64,
    ) -> WaitKey {
        let place = Place::new(priority, virtual_enqueued_at, seq, true);
        let key = WaitKey {
            place,
            id: id.clone(),
        };
        let live = self.queue_mut(queue);
        live.line.insert(key.clone());
        live.ready_callbacks.insert(key.clone());
        let name = live.name.clone();
        let queue = self.callbacks.intern(&name);
        self.callbacks.insert(
            id,
            LinedCallback {
                queue,
                place,
                state: CallbackLine::Ready,
            },
        );
        key
    }

    /// Takes a callback out of its line and the floor; the agent held for it, if any,
    /// is handed back (the caller settles).
    fn unline_callback(&mut self, id: &str) -> Option<String> {
        let (id, lined) = self.callbacks.remove_entry(id)?;
        let key = lined.key(&id);
        if let Some(q) = self
            .queues
            .get_mut(&**self.callbacks.queue_name(lined.queue))
        {
            q.line.remove(&key);
            q.ready_callbacks.remove(&key);
        }
        self.unmatch(&id, lined.state)
    }

    /// Forgets the match of a callback that was in `state`: the agent that was held for
    /// it, if any (the caller releases them).
    fn unmatch(&mut self, id: &str, state: CallbackLine) -> Option<String> {
        if state != CallbackLine::Matched {
            return None;
        }
        self.matches.retain(|(m, _)| &**m != id);
        self.matched.remove(id)
    }

    /// Takes a callback out of its line (cancelled, expired, rescheduled, done): an
    /// agent held for it is free again.
    pub fn remove_callback(&mut self, id: &str, now: DateTime<Utc>) {
        if let Some(agent) = self.unline_callback(id) {
            self.release(&agent, id);
            self.settle(now);
        }
    }

    /// A matched callback went to a dialer: it leaves the line, and `agent` stays held
    /// for it until `until` (the dispatch's lease).
    pub fn dispatched(&mut self, id: &str, agent: &str, until: DateTime<Utc>) {
        self.unline_callback(id);
        self.reserve_until(agent, id, until);
    }

    /// Keeps a callback in its place but out of matching (its calling window is
    /// closed): the agent held for it, if any, is free for the next in line.
    pub fn park_callback(&mut self, id: &str, now: DateTime<Utc>) {
        let Some((id, lined, queue)) = self.callbacks.get_key_value_mut(id) else {
            return;
        };
        let was = std::mem::replace(&mut lined.state, CallbackLine::Parked);
        let (id, queue, key) = (id.clone(), queue.clone(), lined.key(id));
        if let Some(q) = self.queues.get_mut(&*queue) {
            q.ready_callbacks.remove(&key);
        }
        if let Some(agent) = self.unmatch(&id, was) {
            self.release(&agent, &id);
        }
        self.settle(now);
    }

    /// A parked callback may be dialed again: it is matched from its place in line.
    pub fn unpark_callback(&mut self, id: &str, now: DateTime<Utc>) {
        let Some((id, lined, queue)) = self.callbacks.get_key_value_mut(id) else {
            return;
        };
        if lined.state != CallbackLine::Parked {
            return;
        }
        lined.state = CallbackLine::Ready;
        let (queue, key) = (queue.clone(), lined.key(id));
        if let Some(q) = self.queues.get_mut(&*queue) {
            q.ready_callbacks.insert(key.clone());
        }
        self.fresh.push((queue, key));
        self.settle(now);
    }

    /// Whether a dialer is connected. Callbacks are matched to agents only while one
    /// is: without one, a callback at the head would hold agents nobody can use, so
    /// live calls behind it take them instead. Turning it off hands back the agents
    /// held for matches the scheduler has not taken.
    pub fn set_dispatching(&mut self, on: bool, now: DateTime<Utc>) {
        if self.dispatching == on {
            return;
        }
        self.dispatching = on;
        if on {
            let free = self.agents.free_agents();
            self.freed.extend(free);
        } else {
            for (id, agent) in std::mem::take(&mut self.matches) {
                self.matched.remove(&id);
                if let Some((lined, queue)) = self.callbacks.get_mut(&id) {
                    lined.state = CallbackLine::Ready;
                    if let Some(q) = self.queues.get_mut(&**queue) {
                        q.ready_callbacks.insert(lined.key(&id));
                    }
                }
                self.release(&agent, &id);
            }
        }
        self.settle(now);
    }

    /// Up to `limit` callbacks matched to an agent (held for them), in the order they
    /// were matched: the scheduler dispatches each, or parks it.
    pub fn take_matches(&mut self, limit: usize) -> Vec<(String, String)> {
        let n = self.matches.len().min(limit);
        self.matches
            .drain(..n)
            .map(|(id, agent)| (String::from(&*id), agent))
            .collect()
    }

    /// Whether callbacks matched to an agent wait for the scheduler.
    pub fn has_matches(&self) -> bool {
        !self.matches.is_empty()
    }

    /// How many calls the floor remembers (waiting, answered, and finished ones kept
    /// for `live.finished_call_memory_secs`) and how many callbacks hold a place in a
    /// line: what its memory grows with.
    pub fn tracked(&self) -> (usize, usize) {
        (self.calls.len(), self.callbacks.len())
    }

    /// Whether a callback holds a place in a line.
    /// A callback's place in its line, if it holds one: its priority and virtual
    /// enqueue time, and a number that orders places alike in those (the arrival
    /// order), so lining callbacks up again in that order gives the same lines.
    pub fn lined_place(&self, id: &str) -> Option<(i32, DateTime<Utc>, u64)> {
        let p = &self.callbacks.get(id)?.place;
        let at = DateTime::from_timestamp(p.secs, p.nanos)?;
        Some((p.priority.0, at, p.order))
    }

    pub fn has_callback(&self, id: &str) -> bool {
        self.callbacks.contains_key(id)
    }

    /// A pending callback's 1-based position and estimated wait.
    pub fn callback_position(
        &self,
        id: &str,
        skills: &[String],
    ) -> Option<(u32, Option<Duration>)> {
        let (id, lined) = self.callbacks.get_key_value(id)?;
        let q = self.queues.get(&**self.callbacks.queue_name(lined.queue))?;
        let position = q.line.rank(&lined.key(id)) as u32 + 1;
        let agents = self.agent_counts(skills);
        Some((
            position,
            estimated_wait(position, agents.available, agents.staffed(), q.aht.secs()),
        ))
    }

    /// The free agent able to serve `required` that has been idle longest.
    pub fn free_agent(&self, required: &[String]) -> Option<String> {
        self.agents.pick(required, None)
    }

    /// Holds an agent for `item_id` until `until`: a free agent, or one holding it
    /// already (the hold is extended). `false` when the agent holds something else or
    /// is unknown, which changes nothing.
    pub fn reserve_until(&mut self, agent_id: &str, item_id: &str, until: DateTime<Utc>) -> bool {
        let held = self.agents.update(agent_id, |a| {
            match &a.reserved_for {
                Some((held, _)) if held != item_id => return None,
                _ => {}
            }
            let old = a.reserved_for.take().map(|(_, old)| old);
            a.state = AgentState::Reserved;
            a.reserved_for = Some((item_id.to_owned(), until));
            Some(old)
        });
        match held {
            Some(Some(old)) => {
                if let Some(old) = old {
                    self.deadlines.remove(&(old, agent_id.to_owned()));
                }
                self.deadlines.insert((until, agent_id.to_owned()));
                true
            }
            _ => false,
        }
    }

    /// Ends an agent's hold for `item_id` (the agent is free again, for the head of
    /// the line), or marks them busy when the held call connected.
    pub fn end_hold(&mut self, agent_id: &str, item_id: &str, connected: bool, now: DateTime<Utc>) {
        self.release(agent_id, item_id);
        if connected {
            self.agents.update(agent_id, |a| {
                a.state = AgentState::Busy;
                a.since = now;
            });
        }
        self.settle(now);
    }

    /// Hands a waiting call over to a callback: it leaves the line (not abandoned) and
    /// its place, priority and context are returned for the callback to inherit.
    pub fn take_call(&mut self, call_id: &str, now: DateTime<Utc>) -> Result<TakenCall, LiveError> {
        let taken = self.peek_call(call_id)?;
        if let Some(call) = self.calls.get(call_id).cloned() {
            self.leave_line(call_id, &call);
        }
        if let Some(c) = self.calls.get_mut(call_id) {
            c.state = CallState::CallbackAccepted;
            c.prefers = None;
            c.last_change = now;
        }
        self.settle(now);
        Ok(taken)
    }

    /// What `take_call` would hand over, changing nothing.
    pub fn peek_call(&self, call_id: &str) -> Result<TakenCall, LiveError> {
        let Some(call) = self.calls.get(call_id) else {
            return Err(LiveError::UnknownCall(call_id.to_owned()));
        };
        match call.state {
            CallState::Waiting | CallState::Reserved(_) | CallState::Transferred => {}
            CallState::CallbackAccepted => {}
            _ => {
                return Err(LiveError::Impossible {
                    call: call_id.to_owned(),
                    state: call.state.name(),
                    event: "callback accepted",
                })
            }
        }
        Ok(TakenCall {
            queue: String::from(&*call.queue),
            priority: call.priority(),
            enqueued_at: call.enqueued_at(),
            caller: call.caller.as_deref().map(str::to_owned),
            customer_id: call.customer_id.clone(),
            predicted_wait: call.predicted_wait,
            seq: call.place.seq(),
        })
    }

    /// Puts a call whose reservation fell through back in line at its original place.
    /// A callback whose matched agent was handed back goes back to matching the same
    /// way.
    fn requeue(&mut self, call_id: &str, now: DateTime<Utc>) {
        if let Some((id, lined, queue)) = self.callbacks.get_key_value_mut(call_id) {
            if lined.state == CallbackLine::Matched {
                lined.state = CallbackLine::Ready;
                let (queue, key) = (queue.clone(), lined.key(id));
                self.unmatch(call_id, CallbackLine::Matched);
                if let Some(q) = self.queues.get_mut(&*queue) {
                    q.ready_callbacks.insert(key.clone());
                }
                self.fresh.push((queue, key));
            }
            return;
        }
        let Some(call) = self.calls.get_mut(call_id) else {
            return;
        };
        if !matches!(call.state, CallState::Reserved(_)) {
            return;
        }
        call.state = CallState::Waiting;
        call.last_change = now;
        let key = call.key();
        let queue = call.queue.clone();
        if let Some(q) = self.queues.get_mut(&*queue) {
            q.line.insert(key.clone());
            q.ready_calls.insert(key.clone());
            self.fresh.push((queue, key));
        }
    }

    /// Drops stale waiting calls and forgets finished ones (periodic housekeeping).
    pub fn sweep(&mut self, now: DateTime<Utc>) {
        self.lapse(now);
        let stale = self.config.stale_call_after;
        let memory = self.config.finished_call_memory;
        let mut drop_from_line = Vec::new();
        self.calls.retain(|_, c| {
            let keep = match c.state {
                CallState::Waiting | CallState::Transferred => now - c.last_change < stale,
                CallState::Abandoned | CallState::Ended | CallState::CallbackAccepted => {
                    now - c.last_change < memory
                }
                CallState::Reserved(_) => true,
                CallState::Connected(_) => now - c.last_change < stale,
            };
            if !keep && c.state == CallState::Waiting {
                drop_from_line.push(c.clone());
            }
            keep
        });
        for c in drop_from_line {
            self.unline(&c);
        }
        self.settle(now);
    }

    /// Applies an agent state report. Returns `false` when it is not newer than the last
    /// one applied for the agent (out of order or repeated), which changes nothing.
    pub fn report_agent(
        &mut self,
        agent_id: &str,
        skills: Skills,
        state: AgentState,
        at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> bool {
        self.lapse(now);
        if let Some(a) = self.agents.get(agent_id) {
            if at <= a.last_event {
                self.settle(now);
                return false;
            }
        }
        self.agents.insert_if_absent(agent_id, || AgentLive {
            skills: Skills::new(),
            state: AgentState::Offline,
            since: at,
            last_event: at,
            reserved_for: None,
        });
        let dropped_hold = self.agents.update(agent_id, |agent| {
            agent.skills = skills;
            agent.last_event = at;
            let held = agent.reserved_for.clone();
            match (state, held) {
                // The platform does not know about holdless's hold: keep it.
                (AgentState::Available, Some(_)) => None,
                (AgentState::Offline, Some(hold)) => {
                    agent.reserved_for = None;
                    agent.state = AgentState::Offline;
                    agent.since = at;
                    Some(hold)
                }
                (new, _) => {
                    if new != agent.state {
                        agent.since = at;
                    }
                    agent.state = if agent.reserved_for.is_some() && new == AgentState::Available {
                        AgentState::Reserved
                    } else {
                        new
                    };
                    None
                }
            }
        });
        if let Some(Some((item, until))) = dropped_hold {
            self.deadlines.remove(&(until, agent_id.to_owned()));
            self.requeue(&item, now);
        }
        if self.agents.get(agent_id).is_some_and(|a| a.free()) {
            self.freed.push(agent_id.to_owned());
        }
        self.settle(now);
        true
    }

    /// Agents able to serve `required`, by state.
    pub fn agent_counts(&self, required: &[String]) -> AgentCounts {
        self.agents.counts(required)
    }

    /// Reserves `agent_id` for `item_id` until now + the reservation timeout.
    pub fn reserve(&mut self, agent_id: &str, item_id: &str, now: DateTime<Utc>) {
        self.reserve_until(agent_id, item_id, now + self.config.reservation_timeout);
    }

    /// Places a routed call: reserves an agent when one is free for it, else puts the
    /// call in line and estimates its wait. In the same pass over the call, what
    /// routing looked at (`facts`, kept with the call's contact record) is remembered,
    /// and the call's history after this routing is returned (what RouteCall's reply
    /// needs). The first routing of a call wins: `facts` is called only for a call that
    /// has none yet, so a re-route after a transfer keeps the original.
    ///
    /// A free agent is never owed to anyone waiting: the floor matches every agent
    /// that frees up to the head of the line it serves (see the `matching` module), so
    /// an agent still free when a call arrives is one nobody ahead of it can take.
    ///
    /// A preferred agent who is logged in but busy is waited for, up to the rule's
    /// timeout, and nobody else is reserved meanwhile; after it the call is an
    /// ordinary member of the line, at its place.
    ///
    /// A call asked about again while it waits in the same queue at the same priority
    /// (an IVR announcing the place in line) keeps its entry in the line untouched:
    /// only its position and wait are worked out afresh (or its reserved agent named).
    pub fn route_call(
        &mut self,
        routed: RoutedCall<'_>,
        queue: QueueInfo<'_>,
        now: DateTime<Utc>,
        facts: impl FnOnce() -> Option<CallFacts>,
    ) -> (Placement, CallHistory) {
        self.lapse(now);
        self.settle(now);
        let RoutedCall {
            call_id,
            caller,
            customer_id,
            priority,
            extra_skills,
            preferred_agent,
            preferred_wait_secs,
        } = routed;
        let required = required_skills(queue.skills, extra_skills);
        let preferred_agent = preferred_agent.filter(|_| preferred_wait_secs > 0);
        let mut facts = Some(facts);
        let mut take_facts = || facts.take().and_then(|f| f());
        if let Some(asked_again) = self.route_waiting(
            call_id,
            caller,
            customer_id,
            &queue,
            priority,
            &required,
            preferred_agent,
            now,
            &mut take_facts,
        ) {
            return asked_again;
        }
        // A call seen before (asked again, or transferred) keeps its history.
        let mut previous = self.calls.remove(call_id);
        let (mut visited, transfers, transfer_loop) = match &mut previous {
            Some(p) => {
                self.unline(p);
                if let CallState::Reserved(agent) = &p.state {
                    let agent = agent.clone();
                    self.release(&agent, call_id);
                }
                let moved = matches!(p.state, CallState::Connected(_));
                (
                    std::mem::take(&mut p.visited),
                    p.transfers + u32::from(moved),
                    p.transfer_loop,
                )
            }
            None => (SmallVec::new(), 0, false),
        };
        let live = self.queue_mut(&queue);
        let name = live.name.clone();
        let waiting_now = live.line.len() as u32;
        // Asked again while still waiting in the same queue: same place in line, and
        // the same wait for the same preferred agent.
        let same_place = previous
            .as_ref()
            .filter(|p| same_queue(&p.queue, &name) && p.state == CallState::Waiting);
        let (enqueued_at, seq) = match same_place {
            Some(p) => (p.enqueued_at(), p.place.seq()),
            None => (now, self.seq()),
        };
        let kept_preference = same_place.and_then(|p| p.prefers.clone());
        if !visited.last().is_some_and(|v| same_queue(v, &name)) {
            visited.push(name.clone());
        }
        let queue_full = queue.max_waiting > 0 && waiting_now >= queue.max_waiting;
        let mut call = CallLive {
            place: WaitKey {
                place: Place::new(priority, enqueued_at, seq, false),
                id: match &previous {
                    Some(p) => p.place.id.clone(),
                    None => Arc::from(call_id),
                },
            },
            queue: name,
            state: CallState::Waiting,
            predicted_wait: None,
            answered_at: None,
            wait: None,
            customer_id: customer_id.map(str::to_owned),
            caller: caller.map(Number::from),
            visited,
            transfers,
            transfer_loop,
            last_change: now,
            facts: previous.as_mut().and_then(|p| p.facts.take()),
            extra_skills: (!extra_skills.is_empty()).then(|| extra_skills.into()),
            prefers: None,
        };
        let wait_for = preferred_agent
            .filter(|p| self.agents.busy_but_able(p, &required))
            .map(|p| {
                let until = kept_preference.filter(|(kept, _)| kept == p).map_or(
                    now + chrono::Duration::seconds(preferred_wait_secs.into()),
                    |k| k.1,
                );
                (p.to_owned(), until)
            })
            .filter(|(_, until)| *until > now);
        let choice = match &wait_for {
            Some(_) => {
                self.agents.ensure_pool(&required);
                Err(self.agents.counts(&required))
            }
            None => self.agents.choose(&required, preferred_agent),
        };
        let placement = match choice {
            Ok(agent) => {
                self.reserve(&agent, call_id, now);
                call.state = CallState::Reserved(agent.clone());
                call.predicted_wait = Some(Duration::ZERO);
                Placement {
                    position: 0,
                    estimated_wait: Some(Duration::ZERO),
                    reserved_agent: Some(agent),
                    preferred_wait: None,
                    queue_full,
                }
            }
            Err(able) => {
                let key = call.key();
                let staffed = able.staffed();
                let q = self.queue_mut(&queue);
                q.line.insert(key.clone());
                if wait_for.is_none() {
                    q.ready_calls.insert(key.clone());
                }
                let position = q.line.rank(&key) as u32 + 1;
                let wait = estimated_wait(position, 0, staffed, q.aht.secs());
                call.predicted_wait = wait;
                let preferred_wait = wait_for
                    .as_ref()
                    .map(|(_, until)| since(until.to_owned(), now));
                if let Some((agent, until)) = wait_for {
                    self.prefer(&key.id, agent.clone(), until);
                    call.prefers = Some((agent, until));
                }
                Placement {
                    position,
                    estimated_wait: wait,
                    reserved_agent: None,
                    preferred_wait,
                    queue_full,
                }
            }
        };
        if call.facts.is_none() {
            call.facts = take_facts().map(Box::new);
        }
        let history = call.history();
        self.calls.insert(CallId::from(call_id), call);
        self.settle(now);
        (placement, history)
    }

    /// Where a call would go if routed now, changing nothing: RouteCall's what-if
    /// mode. The same answer as [`Floor::route_call`] (the agent it would reserve, or
    /// its place and wait) as of the last change to the floor.
    pub fn what_if(&self, routed: RoutedCall<'_>, queue: QueueInfo<'_>) -> Placement {
        let required = required_skills(queue.skills, routed.extra_skills);
        let preferred = routed
            .preferred_agent
            .filter(|_| routed.preferred_wait_secs > 0);
        let live = self.queues.get(queue.id);
        let waiting = live.map_or(0, |q| q.line.len() as u32);
        let queue_full = queue.max_waiting > 0 && waiting >= queue.max_waiting;
        let aht = live.map_or(f64::from(queue.default_aht_secs), |q| q.aht.secs());
        let known = self.calls.get(routed.call_id).filter(|c| {
            live.is_some_and(|q| same_queue(&c.queue, &q.name)) && c.priority() == routed.priority
        });
        if let Some(CallState::Reserved(agent)) = known.map(|c| &c.state) {
            return Placement {
                position: 0,
                estimated_wait: Some(Duration::ZERO),
                reserved_agent: Some(agent.clone()),
                preferred_wait: None,
                queue_full,
            };
        }
        let waits_for = preferred.filter(|p| self.agents.busy_but_able(p, &required));
        if waits_for.is_none() && known.is_none_or(|c| c.prefers.is_none()) {
            if let Some(agent) = self.agents.pick(&required, preferred) {
                return Placement {
                    position: 0,
                    estimated_wait: Some(Duration::ZERO),
                    reserved_agent: Some(agent),
                    preferred_wait: None,
                    queue_full,
                };
            }
        }
        let position = match (known, live) {
            (Some(c), Some(q)) if c.state == CallState::Waiting => q.line.rank(&c.place) as u32 + 1,
            _ => waiting + 1,
        };
        let staffed = self.agents.counts(&required).staffed();
        Placement {
            position,
            estimated_wait: estimated_wait(position, 0, staffed, aht),
            reserved_agent: None,
            preferred_wait: waits_for
                .map(|_| Duration::from_secs(routed.preferred_wait_secs.into())),
            queue_full,
        }
    }

    /// The fast path of [`Floor::route_call`]: `call_id` waits in `queue` already, at
    /// `priority`, and no agent is free for it (or it holds one already). Its place in
    /// line stays as it is. `None` when the call needs the full routing.
    #[allow(clippy::too_many_arguments)]
    fn route_waiting(
        &mut self,
        call_id: &str,
        caller: Option<&str>,
        customer_id: Option<&str>,
        queue: &QueueInfo<'_>,
        priority: i32,
        required: &[String],
        preferred_agent: Option<&str>,
        now: DateTime<Utc>,
        facts: impl FnOnce() -> Option<CallFacts>,
    ) -> Option<(Placement, CallHistory)> {
        // One lookup of the call: the agents and the lines are other parts of the floor.
        let Floor {
            calls,
            agents,
            queues,
            ..
        } = self;
        let c = calls.get_mut(call_id)?;
        let q = queues.get(queue.id)?;
        if !same_queue(&c.queue, &q.name) || c.priority() != priority {
            return None;
        }
        // As the full path counts it: the others waiting, without this call.
        let others = q.line.len().saturating_sub(1) as u32;
        let queue_full = queue.max_waiting > 0 && others >= queue.max_waiting;
        let (position, wait, reserved_agent, preferred_wait) = match (&c.state, &c.prefers) {
            (CallState::Reserved(agent), _) => (0, Some(Duration::ZERO), Some(agent.clone()), None),
            (CallState::Waiting, Some((agent, until))) if preferred_agent == Some(agent) => {
                agents.ensure_pool(required);
                let staffed = agents.counts(required).staffed();
                let position = q.line.rank(&c.place) as u32 + 1;
                let wait = estimated_wait(position, 0, staffed, q.aht.secs());
                (position, wait, None, Some(since(*until, now)))
            }
            (CallState::Waiting, None) => {
                let staffed = match agents.choose(required, preferred_agent) {
                    Ok(_) => return None,
                    Err(able) => able.staffed(),
                };
                let position = q.line.rank(&c.place) as u32 + 1;
                (
                    position,
                    estimated_wait(position, 0, staffed, q.aht.secs()),
                    None,
                    None,
                )
            }
            _ => return None,
        };
        if c.customer_id.as_deref() != customer_id {
            c.customer_id = customer_id.map(str::to_owned);
        }
        if c.caller.as_deref() != caller {
            c.caller = caller.map(Number::from);
        }
        if reserved_agent.is_none() {
            c.predicted_wait = wait;
        }
        c.last_change = now;
        if c.facts.is_none() {
            c.facts = facts().map(Box::new);
        }
        Some((
            Placement {
                position,
                estimated_wait: wait,
                reserved_agent,
                preferred_wait,
                queue_full,
            },
            c.history(),
        ))
    }

    /// Ends an agent's hold for `item_id`; the agent, free again, is matched when the
    /// operation settles.
    fn release(&mut self, agent_id: &str, item_id: &str) {
        let ended = self
            .agents
            .update(agent_id, |a| a.end_hold_if(|held, _| held == item_id));
        if let Some(Some((_, until))) = ended {
            self.deadlines.remove(&(until, agent_id.to_owned()));
            self.freed.push(agent_id.to_owned());
        }
    }

    fn record(
        &self,
        call_id: &str,
        c: &CallLive,
        outcome: ContactOutcome,
        now: DateTime<Utc>,
    ) -> ContactRecord {
        let agent_id = match &c.state {
            CallState::Connected(a) => Some(a.clone()),
            _ => None,
        };
        ContactRecord {
            call_id: call_id.to_owned(),
            customer_id: c.customer_id.clone(),
            caller: c.caller.as_deref().map(str::to_owned),
            queue_id: String::from(&*c.queue),
            enqueued_at: c.enqueued_at(),
            updated_at: now,
            outcome,
            agent_id,
            wait_secs: c.wait.map(|w| w.as_secs_f64()),
            handle_secs: None,
            transfers: c.transfers,
            facts: c.facts.clone(),
        }
    }

    /// Applies a call event. `queue` resolves a queue id of the active plan (for
    /// `queued`/`transferred` to a named queue).
    pub fn call_event<'q>(
        &mut self,
        call_id: &str,
        event: CallEvent,
        queue: impl Fn(&str) -> Option<QueueInfo<'q>>,
        now: DateTime<Utc>,
    ) -> Result<EventOutcome, LiveError> {
        self.lapse(now);
        let outcome = self.apply_call_event(call_id, event, queue, now);
        self.settle(now);
        outcome
    }

    fn apply_call_event<'q>(
        &mut self,
        call_id: &str,
        event: CallEvent,
        queue: impl Fn(&str) -> Option<QueueInfo<'q>>,
        now: DateTime<Utc>,
    ) -> Result<EventOutcome, LiveError> {
        let Some(call) = self.calls.get(call_id).cloned() else {
            return Err(LiveError::UnknownCall(call_id.to_owned()));
        };
        let impossible = || LiveError::Impossible {
            call: call_id.to_owned(),
            state: call.state.name(),
            event: event.name(),
        };
        match (&call.state, &event) {
            (CallState::Waiting | CallState::Reserved(_), CallEvent::Queued { queue: q })
                if q.as_deref().is_none_or(|q| q == &*call.queue) =>
            {
                Ok(EventOutcome::Duplicate)
            }
            (CallState::Connected(a), CallEvent::Answered { agent }) if a == agent => {
                Ok(EventOutcome::Duplicate)
            }
            (CallState::Abandoned, CallEvent::Abandoned)
            | (CallState::Ended, CallEvent::Ended { .. })
            | (CallState::Transferred, CallEvent::Transferred { queue: None }) => {
                Ok(EventOutcome::Duplicate)
            }
            (
                CallState::Waiting | CallState::Reserved(_) | CallState::Transferred,
                CallEvent::Queued { queue: Some(q) },
            )
            | (
                CallState::Waiting | CallState::Reserved(_) | CallState::Connected(_),
                CallEvent::Transferred { queue: Some(q) },
            ) => {
                let info = queue(q).ok_or_else(|| LiveError::UnknownQueue(q.clone()))?;
                let transferred = matches!(event, CallEvent::Transferred { .. });
                let name = self.queue_mut(&info).name.clone();
                let looped = transferred && call.visited.iter().any(|v| same_queue(v, &name));
                self.leave_line(call_id, &call);
                let mut moved = call.clone();
                if transferred {
                    moved.transfers += 1;
                    moved.transfer_loop |= looped;
                }
                if !moved.visited.last().is_some_and(|v| same_queue(v, &name)) {
                    moved.visited.push(name.clone());
                }
                moved.queue = name.clone();
                moved.state = CallState::Waiting;
                moved.prefers = None;
                moved.place.place = Place::new(moved.priority(), now, self.seq(), false);
                moved.last_change = now;
                let key = moved.key();
                let q = self.queue_mut(&info);
                q.line.insert(key.clone());
                q.ready_calls.insert(key.clone());
                self.fresh.push((name, key));
                let rec = transferred
                    .then(|| self.record(call_id, &call, ContactOutcome::Transferred, now));
                self.calls.insert(CallId::from(call_id), moved);
                Ok(EventOutcome::Applied(rec))
            }
            (
                CallState::Waiting | CallState::Reserved(_) | CallState::Connected(_),
                CallEvent::Transferred { queue: None },
            ) => {
                self.leave_line(call_id, &call);
                let rec = self.record(call_id, &call, ContactOutcome::Transferred, now);
                let c = self.calls.get_mut(call_id).ok_or_else(impossible)?;
                c.state = CallState::Transferred;
                c.transfers += 1;
                c.last_change = now;
                Ok(EventOutcome::Applied(Some(rec)))
            }
            (CallState::Waiting | CallState::Reserved(_), CallEvent::Answered { agent }) => {
                self.leave_line(call_id, &call);
                let wait = since(now, call.enqueued_at());
                if let Some(predicted) = call.predicted_wait {
                    if let Some(q) = self.queues.get_mut(&*call.queue) {
                        q.ewt_error.record(predicted, wait);
                    }
                }
                self.agents.update(agent, |a| {
                    if a.state != AgentState::Busy {
                        a.state = AgentState::Busy;
                        a.since = now;
                    }
                });
                let c = self.calls.get_mut(call_id).ok_or_else(impossible)?;
                c.state = CallState::Connected(agent.clone());
                c.answered_at = Some(now);
                c.wait = Some(wait);
                c.last_change = now;
                let c = c.clone();
                Ok(EventOutcome::Applied(Some(self.record(
                    call_id,
                    &c,
                    ContactOutcome::Answered,
                    now,
                ))))
            }
            (
                CallState::Waiting | CallState::Reserved(_) | CallState::Transferred,
                CallEvent::Abandoned,
            ) => {
                self.leave_line(call_id, &call);
                let c = self.calls.get_mut(call_id).ok_or_else(impossible)?;
                c.state = CallState::Abandoned;
                c.wait = Some(since(now, c.enqueued_at()));
                c.last_change = now;
                // Remembered only to recognize repeats: its facts are in the record.
                let facts = c.facts.take();
                let mut c = c.clone();
                c.facts = facts;
                Ok(EventOutcome::Applied(Some(self.record(
                    call_id,
                    &c,
                    ContactOutcome::Abandoned,
                    now,
                ))))
            }
            (CallState::Connected(_), CallEvent::Ended { handle_time }) => {
                let handle = handle_time
                    .or_else(|| call.answered_at.map(|t| since(now, t)))
                    .unwrap_or_default();
                if let Some(q) = self.queues.get_mut(&*call.queue) {
                    q.aht.record(handle.as_secs_f64());
                }
                let mut rec = self.record(call_id, &call, ContactOutcome::Completed, now);
                rec.handle_secs = Some(handle.as_secs_f64());
                let c = self.calls.get_mut(call_id).ok_or_else(impossible)?;
                c.state = CallState::Ended;
                c.last_change = now;
                // Remembered only to recognize repeats: its facts are in the record.
                c.facts = None;
                Ok(EventOutcome::Applied(Some(rec)))
            }
            _ => Err(impossible()),
        }
    }

    /// Takes a call out of its line and releases its reservation, if any.
    fn leave_line(&mut self, call_id: &str, call: &CallLive) {
        self.unline(call);
        if let CallState::Reserved(agent) = &call.state {
            let agent = agent.clone();
            self.release(&agent, call_id);
        }
    }

    /// Live figures of a queue.
    pub fn snapshot(&mut self, queue: QueueInfo<'_>, now: DateTime<Utc>) -> QueueSnapshot {
        self.expire(now);
        self.agents.ensure_pool(queue.skills);
        let agents = self.agent_counts(queue.skills);
        let free = agents.available;
        let q = self.queue_mut(&queue);
        let waiting = q.line.len() as u32;
        let longest = q
            .line
            .iter()
            .map(|k| k.place)
            .min_by_key(|p| (p.secs, p.nanos))
            .map(|p| since(now, p.enqueued_at()))
            .unwrap_or_default();
        QueueSnapshot {
            waiting,
            longest_wait: longest,
            agents,
            aht_secs: q.aht.secs(),
            aht_samples: q.aht.samples(),
            estimated_wait: estimated_wait(waiting + 1, free, agents.staffed(), q.aht.secs()),
            ewt_mae: q.ewt_error.mean_absolute_error(),
            ewt_samples: q.ewt_error.samples(),
        }
    }

    /// Position of a waiting call (1-based), if it is waiting.
    pub fn position(&self, call_id: &str) -> Option<u32> {
        let c = self.calls.get(call_id)?;
        if c.state != CallState::Waiting {
            return None;
        }
        let q = self.queues.get(&*c.queue)?;
        Some(q.line.rank(&c.place) as u32 + 1)
    }

    /// Whether agent `id` is free: available and holding nothing.
    pub fn agent_free(&self, id: &str) -> bool {
        self.agents.get(id).is_some_and(|a| a.free())
    }

    /// What agent `id` is held for (a call or callback id), if anything.
    pub fn hold_of(&self, id: &str) -> Option<&str> {
        self.agents
            .get(id)?
            .reserved_for
            .as_ref()
            .map(|(item, _)| item.as_str())
    }

    /// The agent an item is held for, if any.
    pub fn reserved_agent_of(&self, call_id: &str) -> Option<&str> {
        match &self.calls.get(call_id)?.state {
            CallState::Reserved(a) => Some(a),
            _ => None,
        }
    }
}
