//! The floor's agents, with a running tally per set of required skills.
//!
//! Routing a call asks two things of the agents able to serve the call's skills: how
//! many there are by state (for the wait estimate) and which free one has been idle
//! longest (for the reservation). Scanning every agent for that cost about 20 ns per
//! agent on every RouteCall (12 µs with 500 agents logged in). Instead each set of
//! required skills asked about gets a [`Pool`]: its counts by state and its free
//! agents ordered by idle time, kept current as agents change. A pool is built with one
//! scan the first time its skill set is asked about, and every agent change updates
//! each pool the agent is or was in, so a routed call reads its pool and nothing else.
//!
//! Every change to an agent goes through [`Agents::update`] (or
//! [`Agents::insert_if_absent`]), which takes the agent out of the pools, applies the
//! change, and puts it back.

use std::collections::BTreeSet;
use std::hash::BuildHasher;

use chrono::{DateTime, Utc};
use smallvec::SmallVec;

use super::floor::AgentCounts;
use crate::domain::agent::{has_skills, AgentState, Skills};

type Map<K, V> = hashbrown::HashMap<K, V>;

/// Skill sets the agents keep a pool for at most; past it they start over (pools are
/// rebuilt as they are asked for). A plan's queues and rules name a few dozen.
const MAX_POOLS: usize = 1024;

#[derive(Debug, Clone)]
pub(super) struct AgentLive {
    pub skills: Skills,
    pub state: AgentState,
    /// Since when in `state` (for `Available`: idle since).
    pub since: DateTime<Utc>,
    pub last_event: DateTime<Utc>,
    /// Call (or callback) held for this agent, and until when.
    pub reserved_for: Option<(String, DateTime<Utc>)>,
}

impl AgentLive {
    /// Free to take a call: available and holding nothing.
    pub(super) fn free(&self) -> bool {
        self.state == AgentState::Available && self.reserved_for.is_none()
    }

    /// Ends the agent's hold when `ends` accepts it (by the held item and its
    /// deadline): the agent holds nothing, and is available again if the hold had made
    /// them reserved. Returns the hold that ended.
    pub fn end_hold_if(
        &mut self,
        ends: impl FnOnce(&str, DateTime<Utc>) -> bool,
    ) -> Option<(String, DateTime<Utc>)> {
        let (item, until) = self.reserved_for.as_ref()?;
        if !ends(item, *until) {
            return None;
        }
        if self.state == AgentState::Reserved {
            self.state = AgentState::Available;
        }
        self.reserved_for.take()
    }
}

/// The agents able to serve one set of required skills.
#[derive(Debug, Default)]
struct Pool {
    /// The skill set, sorted and without repeats.
    required: Vec<String>,
    counts: AgentCounts,
    /// Free agents, longest idle first (ties by id).
    free: BTreeSet<(DateTime<Utc>, String)>,
}

impl Pool {
    fn fits(&self, a: &AgentLive) -> bool {
        has_skills(&a.skills, &self.required)
    }

    fn add(&mut self, id: &str, a: &AgentLive) {
        if !self.fits(a) {
            return;
        }
        if let Some(n) = count_of(&mut self.counts, a.state) {
            *n += 1;
        }
        if a.free() {
            self.free.insert((a.since, id.to_owned()));
        }
    }

    fn remove(&mut self, id: &str, a: &AgentLive) {
        if !self.fits(a) {
            return;
        }
        if let Some(n) = count_of(&mut self.counts, a.state) {
            *n = n.saturating_sub(1);
        }
        if a.free() {
            self.free.remove(&(a.since, id.to_owned()));
        }
    }
}

fn count_of(c: &mut AgentCounts, state: AgentState) -> Option<&mut u32> {
    match state {
        AgentState::Available => Some(&mut c.available),
        AgentState::Reserved => Some(&mut c.reserved),
        AgentState::Busy => Some(&mut c.busy),
        AgentState::WrapUp => Some(&mut c.wrap_up),
        AgentState::Offline => Some(&mut c.offline),
    }
}

/// A skill set as a pool key: its skills sorted, without repeats, and hashed.
struct SkillSet<'a> {
    skills: SmallVec<[&'a str; 4]>,
    hash: u64,
}

impl<'a> SkillSet<'a> {
    fn of(required: &'a [String], hasher: &hashbrown::DefaultHashBuilder) -> Self {
        let mut skills: SmallVec<[&'a str; 4]> = required.iter().map(String::as_str).collect();
        skills.sort_unstable();
        skills.dedup();
        Self {
            hash: hasher.hash_one(&skills),
            skills,
        }
    }

    fn is(&self, pool: &Pool) -> bool {
        pool.required
            .iter()
            .map(String::as_str)
            .eq(self.skills.iter().copied())
    }
}

/// See the module documentation.
#[derive(Debug, Default)]
pub(super) struct Agents {
    agents: Map<String, AgentLive>,
    /// Pools by the hash of their skill set (a collision is checked against the
    /// pool's skills, and answered by a scan).
    pools: Map<u64, Pool>,
    hasher: hashbrown::DefaultHashBuilder,
}

impl Agents {
    pub fn get(&self, id: &str) -> Option<&AgentLive> {
        self.agents.get(id)
    }

    /// Adds agent `id` as `make` gives it unless the floor knows it already.
    pub fn insert_if_absent(&mut self, id: &str, make: impl FnOnce() -> AgentLive) {
        if self.agents.contains_key(id) {
            return;
        }
        let a = make();
        for pool in self.pools.values_mut() {
            pool.add(id, &a);
        }
        self.agents.insert(id.to_owned(), a);
    }

    /// Changes agent `id` with `f`, keeping the pools current; `None` for an agent the
    /// floor does not know.
    pub fn update<R>(&mut self, id: &str, f: impl FnOnce(&mut AgentLive) -> R) -> Option<R> {
        let a = self.agents.get_mut(id)?;
        for pool in self.pools.values_mut() {
            pool.remove(id, a);
        }
        let r = f(a);
        for pool in self.pools.values_mut() {
            pool.add(id, a);
        }
        Some(r)
    }

    /// Makes sure the pool of `required` exists (one scan of the agents when it does
    /// not), so [`Agents::counts`] and [`Agents::pick`] read it instead of scanning.
    pub fn ensure_pool(&mut self, required: &[String]) {
        let key = SkillSet::of(required, &self.hasher);
        self.ensure_pool_of(&key);
    }

    /// For a call needing `required`: the free agent to reserve (`preferred` when free
    /// and able, else the one idle longest), or, when none is free, the counts by
    /// state of the agents able to serve it. What routing a call asks, with one lookup
    /// of the skill set's pool (made first when missing).
    pub fn choose(
        &mut self,
        required: &[String],
        preferred: Option<&str>,
    ) -> Result<String, AgentCounts> {
        let key = SkillSet::of(required, &self.hasher);
        self.ensure_pool_of(&key);
        let pool = self.pools.get(&key.hash).filter(|p| key.is(p));
        match self.pick_in(pool, required, preferred) {
            Some(agent) => Ok(agent),
            None => Err(self.counts_in(pool, required)),
        }
    }

    fn ensure_pool_of(&mut self, key: &SkillSet<'_>) {
        // A pool under this hash is this set's, or (rarely) another set's: that one
        // keeps it, and this one is answered by scans.
        if self.pools.contains_key(&key.hash) {
            return;
        }
        if self.pools.len() >= MAX_POOLS {
            self.pools.clear();
        }
        let mut pool = Pool {
            required: key.skills.iter().map(|s| (*s).to_owned()).collect(),
            ..Pool::default()
        };
        for (id, a) in &self.agents {
            pool.add(id, a);
        }
        self.pools.insert(key.hash, pool);
    }

    fn pool(&self, required: &[String]) -> Option<&Pool> {
        let key = SkillSet::of(required, &self.hasher);
        self.pools.get(&key.hash).filter(|p| key.is(p))
    }

    /// Agents able to serve `required`, by state.
    pub fn counts(&self, required: &[String]) -> AgentCounts {
        self.counts_in(self.pool(required), required)
    }

    /// [`Agents::counts`] from `pool` (the pool of `required`), else by a scan.
    fn counts_in(&self, pool: Option<&Pool>, required: &[String]) -> AgentCounts {
        if let Some(pool) = pool {
            return pool.counts;
        }
        let mut c = AgentCounts::default();
        for a in self
            .agents
            .values()
            .filter(|a| has_skills(&a.skills, required))
        {
            if let Some(n) = count_of(&mut c, a.state) {
                *n += 1;
            }
        }
        c
    }

    /// The free agent for a call needing `required`: `preferred` when free and able,
    /// else the one idle longest (ties broken by id, so the choice is deterministic).
    pub fn pick(&self, required: &[String], preferred: Option<&str>) -> Option<String> {
        self.pick_in(self.pool(required), required, preferred)
    }

    /// Whether agent `id` is logged in and able to serve `required` but not free now:
    /// a call that prefers them waits for them rather than taking someone else.
    pub fn busy_but_able(&self, id: &str, required: &[String]) -> bool {
        self.agents.get(id).is_some_and(|a| {
            a.state != AgentState::Offline && !a.free() && has_skills(&a.skills, required)
        })
    }

    /// Every free agent, longest idle first (ties by id).
    pub fn free_agents(&self) -> Vec<String> {
        let mut free: Vec<(DateTime<Utc>, &String)> = self
            .agents
            .iter()
            .filter(|(_, a)| a.free())
            .map(|(id, a)| (a.since, id))
            .collect();
        free.sort();
        free.into_iter().map(|(_, id)| id.clone()).collect()
    }

    /// [`Agents::pick`] from `pool` (the pool of `required`), else by a scan.
    fn pick_in(
        &self,
        pool: Option<&Pool>,
        required: &[String],
        preferred: Option<&str>,
    ) -> Option<String> {
        let able = |a: &AgentLive| a.free() && has_skills(&a.skills, required);
        if let Some(p) = preferred {
            if self.agents.get(p).is_some_and(able) {
                return Some(p.to_owned());
            }
        }
        if let Some(pool) = pool {
            return pool.free.first().map(|(_, id)| id.clone());
        }
        self.agents
            .iter()
            .filter(|(_, a)| able(a))
            .min_by(|(ia, a), (ib, b)| a.since.cmp(&b.since).then(ia.cmp(ib)))
            .map(|(id, _)| id.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SKILLS: [&str; 4] = ["a", "b", "c", "d"];

    fn skills(mask: u8) -> Skills {
        (0..4)
            .filter(|i| mask & (1 << i) != 0)
            .map(|i| (SKILLS[i].to_owned(), 1))
            .collect()
    }

    fn required(mask: u8) -> Vec<String> {
        // Unsorted and with a repeat, as a queue's and a rule's skills can come.
        let mut r: Vec<String> = (0..4)
            .rev()
            .filter(|i| mask & (1 << i) != 0)
            .map(|i| SKILLS[i].to_owned())
            .collect();
        if let Some(first) = r.first().cloned() {
            r.push(first);
        }
        r
    }

    fn state(k: u8) -> AgentState {
        [
            AgentState::Offline,
            AgentState::Available,
            AgentState::Busy,
            AgentState::WrapUp,
            AgentState::Reserved,
        ][usize::from(k % 5)]
    }

    /// The answers of a scan, as the floor gave them before pools.
    fn scanned(
        a: &Agents,
        req: &[String],
        preferred: Option<&str>,
    ) -> (AgentCounts, Option<String>) {
        let mut c = AgentCounts::default();
        for x in a.agents.values().filter(|x| has_skills(&x.skills, req)) {
            if let Some(n) = count_of(&mut c, x.state) {
                *n += 1;
            }
        }
        let able = |x: &AgentLive| x.free() && has_skills(&x.skills, req);
        let pick = preferred
            .filter(|p| a.agents.get(*p).is_some_and(able))
            .map(str::to_owned)
            .or_else(|| {
                a.agents
                    .iter()
                    .filter(|(_, x)| able(x))
                    .min_by(|(ia, x), (ib, y)| x.since.cmp(&y.since).then(ia.cmp(ib)))
                    .map(|(id, _)| id.clone())
            });
        (c, pick)
    }

    proptest! {
        /// Whatever happens to the agents (new ones, skill and state changes, holds
        /// taken and released, idle times, pools made before or after), the pools'
        /// counts and picks are the scan's.
        #[test]
        fn pools_answer_as_a_scan_would(
            ops in prop::collection::vec((0u8..8, 0u8..16, 0u8..5, 0i64..50, any::<bool>(), 0u8..16), 1..120),
        ) {
            let mut a = Agents::default();
            let t0 = DateTime::<Utc>::UNIX_EPOCH;
            for (agent, skill_mask, st, at, hold, ask) in ops {
                let id = format!("agent-{agent}");
                let since = t0 + chrono::Duration::seconds(at);
                a.insert_if_absent(&id, || AgentLive {
                    skills: skills(skill_mask),
                    state: AgentState::Offline,
                    since,
                    last_event: since,
                    reserved_for: None,
                });
                a.update(&id, |x| {
                    x.skills = skills(skill_mask);
                    x.state = state(st);
                    x.since = since;
                    x.reserved_for = hold.then(|| ("call".to_owned(), since));
                });
                let req = required(ask);
                if ask % 3 == 0 {
                    a.ensure_pool(&req);
                }
                for mask in 0u8..16 {
                    let req = required(mask);
                    for preferred in [None, Some("agent-3")] {
                        let pooled = (a.counts(&req), a.pick(&req, preferred));
                        prop_assert_eq!(pooled, scanned(&a, &req, preferred));
                    }
                }
                // What routing asks (making the pool when missing): the pick, or the
                // counts when nobody is free.
                let (counts, pick) = scanned(&a, &req, Some("agent-3"));
                prop_assert_eq!(a.choose(&req, Some("agent-3")), pick.ok_or(counts));
            }
        }
    }

    #[test]
    fn pools_start_over_past_their_bound() {
        let mut a = Agents::default();
        let names: Vec<Vec<String>> = (0..MAX_POOLS + 5).map(|i| vec![format!("s{i}")]).collect();
        for n in &names {
            a.ensure_pool(n);
        }
        assert!(a.pools.len() <= MAX_POOLS);
        assert_eq!(a.counts(&names[0]), AgentCounts::default());
    }
}
