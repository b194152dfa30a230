//! The line-fairness simulation: random days on the real floor, checked after every
//! step against a model of the line.
//!
//! Each seed makes a small contact center (two queues, up to six agents with random
//! skills, a rare extra skill some calls need) and plays a few hundred random events
//! through [`Floor`] on a manual clock: calls arriving at random priorities (some
//! preferring an agent), agents changing state (several at the same instant),
//! reservations lapsing, answers, hang-ups, transfers, calls asked about again,
//! callbacks requested from a call (keeping its place) and from the web, calling
//! windows closing and opening, dialers coming and going, and dispatch outcomes with
//! retries. After each event the scheduler's side of matching is played as
//! [`crate::scheduler`] plays it: every callback matched to an agent is dispatched, or
//! parked when its window is closed.
//!
//! Checked after every step:
//! - **no free agent is owed**: no agent is free while someone they could serve may be
//!   matched (a waiting call not holding out for another agent, or a callback that is
//!   lined and not parked while a dialer is connected);
//! - **nobody is jumped**: an agent newly held for a call or callback is never held
//!   while someone they could serve, of equal or higher priority and earlier in line,
//!   still waits;
//! - **one agent per dial**: a callback is dispatched only with an agent held for it
//!   alone (so never more customers dialed than free agents, customer-first queues
//!   included), and never while it is already being dialed;
//! - **honest positions**: every waiting call's and lined callback's reported
//!   position is its rank in the model's order (priority desc, enqueue time asc,
//!   arrival order).
//!
//! A failing seed names itself; [`run`] replays it exactly.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Duration, Utc};

use crate::domain::agent::{AgentState, Skills};
use crate::live::{CallEvent, Floor, LiveConfig, QueueInfo, RoutedCall};

/// The queues: id and required skill.
const QUEUES: [(&str, &str); 2] = [("sales", "s"), ("care", "c")];
/// The skill a few calls need on top of their queue's.
const RARE: &str = "x";

/// Queue `i` as the floor takes it.
fn queue_info(skills: &[Vec<String>], i: usize) -> QueueInfo<'_> {
    QueueInfo {
        id: QUEUES[i].0,
        skills: &skills[i],
        default_aht_secs: 180,
        max_waiting: 0,
    }
}

/// What one seed's run saw.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Stats {
    pub steps: u32,
    pub calls: u32,
    pub reservations: u32,
    pub dispatches: u32,
    pub parked: u32,
}

#[derive(Debug, Clone)]
struct Entry {
    queue: usize,
    priority: i32,
    enqueued_at: DateTime<Utc>,
    order: u64,
    callback: bool,
    rare: bool,
    /// The preferred agent the call waits for, and until when.
    prefers: Option<(String, DateTime<Utc>)>,
}

impl Entry {
    fn key(&self) -> (std::cmp::Reverse<i32>, DateTime<Utc>, u64) {
        (
            std::cmp::Reverse(self.priority),
            self.enqueued_at,
            self.order,
        )
    }
}

struct Sim {
    rng: fastrand::Rng,
    floor: Floor,
    now: DateTime<Utc>,
    queue_skills: Vec<Vec<String>>,
    /// Agent id -> skills.
    agents: BTreeMap<String, Vec<String>>,
    /// Calls and callbacks not finished: waiting, held, being dialed or connected.
    entries: BTreeMap<String, Entry>,
    connected: Vec<String>,
    order: u64,
    next_id: u64,
    dialing: bool,
    closed: HashSet<String>,
    parked: HashSet<String>,
    in_flight: HashMap<String, String>,
    /// Callbacks not answered, due again after their backoff (a later event).
    retrying: Vec<(String, Entry)>,
    stats: Stats,
}

/// Runs seed `seed` for `steps` events; `Err` names the first broken promise.
pub fn run(seed: u64, steps: u32) -> Result<Stats, String> {
    let mut sim = Sim::new(seed);
    for step in 0..steps {
        let before = sim.holds();
        let event = sim.step();
        sim.play_scheduler()
            .and_then(|()| sim.check(&before))
            .map_err(|e| format!("seed {seed}, step {step} ({event}): {e}"))?;
        sim.stats.steps += 1;
    }
    Ok(sim.stats)
}

impl Sim {
    fn new(seed: u64) -> Self {
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut agents = BTreeMap::new();
        for i in 0..rng.usize(1..=6) {
            let mut skills: Vec<String> = ["s", "c", RARE]
                .iter()
                .filter(|_| rng.bool())
                .map(|s| (*s).to_owned())
                .collect();
            if !skills.iter().any(|s| s != RARE) {
                skills.push(QUEUES[rng.usize(..QUEUES.len())].1.to_owned());
            }
            agents.insert(format!("a{i}"), skills);
        }
        Self {
            rng,
            floor: Floor::new(LiveConfig::default()),
            now: DateTime::<Utc>::UNIX_EPOCH + Duration::days(20_000),
            queue_skills: QUEUES.iter().map(|(_, s)| vec![(*s).to_owned()]).collect(),
            agents,
            entries: BTreeMap::new(),
            connected: Vec::new(),
            order: 0,
            next_id: 0,
            dialing: false,
            closed: HashSet::new(),
            parked: HashSet::new(),
            in_flight: HashMap::new(),
            retrying: Vec::new(),
            stats: Stats::default(),
        }
    }

    fn next_order(&mut self) -> u64 {
        self.order += 1;
        self.order
    }

    fn fresh_id(&mut self, prefix: &str) -> String {
        self.next_id += 1;
        format!("{prefix}{}", self.next_id)
    }

    /// A random id among `ids`.
    fn pick(&mut self, ids: Vec<String>) -> Option<String> {
        (!ids.is_empty()).then(|| ids[self.rng.usize(..ids.len())].clone())
    }

    /// Calls not finished: waiting or holding an agent.
    fn calls(&self) -> Vec<String> {
        self.entries
            .iter()
            .filter(|(_, e)| !e.callback)
            .map(|(id, _)| id.clone())
            .collect()
    }

    fn waiting_calls(&self) -> Vec<String> {
        self.entries
            .iter()
            .filter(|(id, e)| !e.callback && self.floor.position(id).is_some())
            .map(|(id, _)| id.clone())
            .collect()
    }

    fn lined_callbacks(&self) -> Vec<String> {
        self.entries
            .iter()
            .filter(|(id, e)| e.callback && !self.in_flight.contains_key(*id))
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// One random event; returns its name.
    fn step(&mut self) -> String {
        let roll = self.rng.u32(..100);
        match roll {
            0..=21 => self.new_call(),
            22..=41 => self.agent_report(),
            42..=51 => self.answer(),
            52..=57 => self.end_call(),
            58..=63 => self.abandon(),
            64..=69 => self.ask_again(),
            70..=74 => self.accept_callback(),
            75..=78 => self.web_callback(),
            79..=81 => self.transfer(),
            82..=85 => self.toggle_window(),
            86..=87 => self.toggle_dialer(),
            88..=91 => self.outcome(),
            92..=93 => self.retry_due(),
            _ => self.advance(),
        }
    }

    fn new_call(&mut self) -> String {
        let id = self.fresh_id("call");
        let queue = self.rng.usize(..QUEUES.len());
        let priority = self.rng.i32(0..=2);
        let rare = self.rng.u32(..100) < 15;
        let preferred = if self.rng.u32(..100) < 20 {
            let ids: Vec<String> = self.agents.keys().cloned().collect();
            self.pick(ids)
        } else {
            None
        };
        let wait = self.rng.u32(0..=30);
        let extra = if rare {
            vec![RARE.to_owned()]
        } else {
            Vec::new()
        };
        let order = self.next_order();
        let info = queue_info(&self.queue_skills, queue);
        let (placement, _) = self.floor.route_call(
            RoutedCall {
                call_id: &id,
                caller: None,
                customer_id: None,
                priority,
                extra_skills: &extra,
                preferred_agent: preferred.as_deref(),
                preferred_wait_secs: wait,
            },
            info,
            self.now,
            || None,
        );
        let prefers = match (placement.preferred_wait, preferred) {
            (Some(w), Some(p)) => Some((p, self.now + Duration::from_std(w).unwrap_or_default())),
            _ => None,
        };
        self.entries.insert(
            id.clone(),
            Entry {
                queue,
                priority,
                enqueued_at: self.now,
                order,
                callback: false,
                rare,
                prefers,
            },
        );
        self.stats.calls += 1;
        format!("call {id} to {} at priority {priority}", QUEUES[queue].0)
    }

    fn agent_report(&mut self) -> String {
        let ids: Vec<String> = self.agents.keys().cloned().collect();
        let Some(id) = self.pick(ids) else {
            return "no agents".into();
        };
        let state = match self.rng.u32(..10) {
            0..=5 => AgentState::Available,
            6 => AgentState::Busy,
            7 | 8 => AgentState::WrapUp,
            _ => AgentState::Offline,
        };
        let skills: Skills = self.agents[&id].iter().map(|s| (s.clone(), 1)).collect();
        // Reports a millisecond apart at the same clock reading: agents freeing at
        // the same instant.
        self.now += Duration::milliseconds(1);
        self.floor
            .report_agent(&id, skills, state, self.now, self.now);
        format!("agent {id} {state:?}")
    }

    fn answer(&mut self) -> String {
        let held: Vec<String> = self
            .entries
            .iter()
            .filter(|(id, e)| !e.callback && self.floor.reserved_agent_of(id).is_some())
            .map(|(id, _)| id.clone())
            .collect();
        let Some(id) = self.pick(held) else {
            return "nothing to answer".into();
        };
        let agent = self
            .floor
            .reserved_agent_of(&id)
            .unwrap_or_default()
            .to_owned();
        let r = self.floor.call_event(
            &id,
            CallEvent::Answered {
                agent: agent.clone(),
            },
            |_| None,
            self.now,
        );
        if r.is_ok() {
            self.entries.remove(&id);
            self.connected.push(id.clone());
        }
        format!("{id} answered by {agent}")
    }

    fn end_call(&mut self) -> String {
        if self.connected.is_empty() {
            return "nothing to end".into();
        }
        let id = self
            .connected
            .swap_remove(self.rng.usize(..self.connected.len()));
        let _ = self.floor.call_event(
            &id,
            CallEvent::Ended { handle_time: None },
            |_| None,
            self.now,
        );
        format!("{id} ended")
    }

    fn abandon(&mut self) -> String {
        let Some(id) = self.pick(self.calls()) else {
            return "nobody to abandon".into();
        };
        let _ = self
            .floor
            .call_event(&id, CallEvent::Abandoned, |_| None, self.now);
        self.entries.remove(&id);
        format!("{id} abandoned")
    }

    fn ask_again(&mut self) -> String {
        let Some(id) = self.pick(self.calls()) else {
            return "nobody to ask about".into();
        };
        let e = self.entries[&id].clone();
        let extra = if e.rare {
            vec![RARE.to_owned()]
        } else {
            Vec::new()
        };
        let (p, _) = self.floor.route_call(
            RoutedCall {
                call_id: &id,
                caller: None,
                customer_id: None,
                priority: e.priority,
                extra_skills: &extra,
                preferred_agent: e.prefers.as_ref().map(|(a, _)| a.as_str()),
                preferred_wait_secs: 30,
            },
            queue_info(&self.queue_skills, e.queue),
            self.now,
            || None,
        );
        format!(
            "{id} asked again: position {}, agent {:?}",
            p.position, p.reserved_agent
        )
    }

    fn accept_callback(&mut self) -> String {
        let Some(id) = self.pick(self.waiting_calls()) else {
            return "nobody to accept a callback".into();
        };
        let Ok(taken) = self.floor.take_call(&id, self.now) else {
            return format!("{id} could not be taken");
        };
        let mut e = match self.entries.remove(&id) {
            Some(e) => e,
            None => return format!("{id} unknown"),
        };
        let cb = self.fresh_id("cb");
        let queue = e.queue;
        let info = queue_info(&self.queue_skills, queue);
        e.callback = true;
        e.rare = false;
        e.prefers = None;
        self.entries.insert(cb.clone(), e);
        self.floor.enqueue_callback(
            &cb,
            info,
            taken.priority,
            taken.enqueued_at,
            Some(taken.seq),
            self.now,
        );
        format!("{id} became callback {cb}")
    }

    fn web_callback(&mut self) -> String {
        let cb = self.fresh_id("cb");
        let queue = self.rng.usize(..QUEUES.len());
        let order = self.next_order();
        self.entries.insert(
            cb.clone(),
            Entry {
                queue,
                priority: 0,
                enqueued_at: self.now,
                order,
                callback: true,
                rare: false,
                prefers: None,
            },
        );
        if self.rng.u32(..100) < 20 {
            self.closed.insert(cb.clone());
        }
        let info = queue_info(&self.queue_skills, queue);
        self.floor
            .enqueue_callback(&cb, info, 0, self.now, None, self.now);
        format!("web callback {cb} in {}", QUEUES[queue].0)
    }

    fn transfer(&mut self) -> String {
        let Some(id) = self.pick(self.waiting_calls()) else {
            return "nobody to transfer".into();
        };
        let to = 1 - self.entries[&id].queue;
        let skills = &self.queue_skills;
        let r = self.floor.call_event(
            &id,
            CallEvent::Transferred {
                queue: Some(QUEUES[to].0.to_owned()),
            },
            |q| {
                let i = QUEUES.iter().position(|(name, _)| *name == q)?;
                Some(queue_info(skills, i))
            },
            self.now,
        );
        if r.is_ok() {
            let order = self.next_order();
            let now = self.now;
            if let Some(e) = self.entries.get_mut(&id) {
                e.queue = to;
                e.enqueued_at = now;
                e.order = order;
                e.prefers = None;
            }
        }
        format!("{id} transferred to {}", QUEUES[to].0)
    }

    fn toggle_window(&mut self) -> String {
        let Some(id) = self.pick(self.lined_callbacks()) else {
            return "no callback in line".into();
        };
        if self.closed.remove(&id) {
            if self.parked.remove(&id) {
                self.floor.unpark_callback(&id, self.now);
            }
            format!("window of {id} opens")
        } else {
            self.closed.insert(id.clone());
            format!("window of {id} closes")
        }
    }

    fn toggle_dialer(&mut self) -> String {
        self.dialing = !self.dialing;
        self.floor.set_dispatching(self.dialing, self.now);
        format!("dialer connected: {}", self.dialing)
    }

    fn outcome(&mut self) -> String {
        let ids: Vec<String> = self.in_flight.keys().cloned().collect();
        let Some(id) = self.pick(ids) else {
            return "nothing being dialed".into();
        };
        let agent = self.in_flight.remove(&id).unwrap_or_default();
        let connected = self.rng.bool();
        self.floor.end_hold(&agent, &id, connected, self.now);
        let Some(e) = self.entries.remove(&id) else {
            return format!("{id} unknown");
        };
        if connected {
            return format!("{id} connected to {agent}");
        }
        if self.rng.bool() {
            self.retrying.push((id.clone(), e));
            return format!("{id} not answered; retried after a backoff");
        }
        format!("{id} not answered; failed")
    }

    /// A retried callback's backoff is over: it takes its place again (its virtual
    /// enqueue time, as the scheduler keeps it).
    fn retry_due(&mut self) -> String {
        if self.retrying.is_empty() {
            return "no retry due".into();
        }
        let (id, e) = self
            .retrying
            .swap_remove(self.rng.usize(..self.retrying.len()));
        let order = self.next_order();
        let queue = e.queue;
        let (priority, at) = (e.priority, e.enqueued_at);
        self.entries.insert(id.clone(), Entry { order, ..e });
        let info = queue_info(&self.queue_skills, queue);
        self.floor
            .enqueue_callback(&id, info, priority, at, None, self.now);
        format!("{id} due again")
    }

    fn advance(&mut self) -> String {
        let secs = self.rng.i64(0..=20);
        self.now += Duration::seconds(secs);
        self.floor.expire(self.now);
        format!("{secs} s pass")
    }

    /// The scheduler's side: dispatch every matched callback, or park it.
    fn play_scheduler(&mut self) -> Result<(), String> {
        loop {
            let matched = self.floor.take_matches(64);
            if matched.is_empty() {
                return Ok(());
            }
            for (id, agent) in matched {
                if self.floor.hold_of(&agent) != Some(id.as_str()) {
                    return Err(format!("{id} matched to {agent}, who is not held for it"));
                }
                if !self.dialing {
                    return Err(format!("{id} matched with no dialer connected"));
                }
                if self.closed.contains(&id) {
                    self.floor.park_callback(&id, self.now);
                    self.parked.insert(id);
                    self.stats.parked += 1;
                    continue;
                }
                if self.in_flight.contains_key(&id) {
                    return Err(format!("{id} dispatched while already being dialed"));
                }
                self.floor
                    .dispatched(&id, &agent, self.now + Duration::days(1));
                self.in_flight.insert(id, agent);
                self.stats.dispatches += 1;
            }
        }
    }

    /// Agent -> what they are held for.
    fn holds(&self) -> BTreeMap<String, String> {
        self.agents
            .keys()
            .filter_map(|a| Some((a.clone(), self.floor.hold_of(a)?.to_owned())))
            .collect()
    }

    /// Whether the floor may give agent `agent` to entry `id` now.
    fn eligible(&self, agent: &str, id: &str, e: &Entry) -> bool {
        let skills = &self.agents[agent];
        let able = self.queue_skills[e.queue]
            .iter()
            .all(|s| skills.contains(s))
            && (!e.rare || skills.iter().any(|s| s == RARE));
        if !able {
            return false;
        }
        if e.callback {
            return self.dialing && !self.parked.contains(id) && !self.in_flight.contains_key(id);
        }
        match &e.prefers {
            Some((p, until)) if self.now < *until => p == agent,
            _ => true,
        }
    }

    /// Everyone waiting now (calls in line, callbacks lined), by id.
    fn waiting(&self) -> Vec<(&String, &Entry)> {
        self.entries
            .iter()
            .filter(|(id, e)| {
                if e.callback {
                    !self.in_flight.contains_key(*id)
                } else {
                    self.floor.position(id).is_some()
                }
            })
            .collect()
    }

    fn check(&mut self, before: &BTreeMap<String, String>) -> Result<(), String> {
        let waiting = self.waiting();
        // No free agent is owed to anyone who may be matched.
        for agent in self.agents.keys() {
            if !self.floor.agent_free(agent) {
                continue;
            }
            if let Some((id, _)) = waiting.iter().find(|(id, e)| self.eligible(agent, id, e)) {
                return Err(format!("agent {agent} is free while {id} waits for them"));
            }
        }
        // Nobody is jumped by a new hold.
        let mut reservations = 0;
        for (agent, item) in self.holds() {
            if before.get(&agent) == Some(&item) {
                continue;
            }
            let Some(given) = self.entries.get(&item) else {
                continue;
            };
            if !given.callback {
                reservations += 1;
            }
            if let Some((id, _)) = waiting
                .iter()
                .find(|(id, e)| e.key() < given.key() && self.eligible(&agent, id, e))
            {
                return Err(format!(
                    "agent {agent} was given {item} while {id} waited ahead of it"
                ));
            }
        }
        // Positions are ranks in the model's order.
        for (id, e) in &waiting {
            let rank = 1 + waiting
                .iter()
                .filter(|(_, o)| o.queue == e.queue && o.key() < e.key())
                .count() as u32;
            let reported = if e.callback {
                self.floor
                    .callback_position(id, &self.queue_skills[e.queue])
                    .map(|p| p.0)
            } else {
                self.floor.position(id)
            };
            if reported != Some(rank) {
                return Err(format!(
                    "{id} is told position {reported:?}; the line says {rank}"
                ));
            }
        }
        self.stats.reservations += reservations;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Seeds run by `cargo test`; `HOLDLESS_LINE_SEEDS=N` runs more (a nightly run),
    /// `HOLDLESS_LINE_SEED=S` replays one.
    const SEEDS: u64 = 10_000;
    const STEPS: u32 = 120;

    #[test]
    fn the_line_keeps_its_promises_on_random_days() {
        if let Some(seed) = std::env::var("HOLDLESS_LINE_SEED")
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
        {
            if let Err(e) = run(seed, STEPS) {
                panic!("{e}");
            }
            return;
        }
        let seeds = std::env::var("HOLDLESS_LINE_SEEDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(SEEDS);
        let mut total = Stats::default();
        for seed in 0..seeds {
            match run(seed, STEPS) {
                Ok(s) => {
                    total.steps += s.steps;
                    total.calls += s.calls;
                    total.reservations += s.reservations;
                    total.dispatches += s.dispatches;
                    total.parked += s.parked;
                }
                Err(e) => {
                    panic!("{e}\nreplay: HOLDLESS_LINE_SEED={seed} cargo test --lib the_line_keeps")
                }
            }
        }
        // The days exercised what they are for.
        assert!(total.reservations > seeds as u32, "{total:?}");
        assert!(total.dispatches > seeds as u32 / 4, "{total:?}");
        assert!(total.parked > 0, "{total:?}");
    }
}
