//! The compiled routing plan: checked, indexed and immutable. Built by
//! [`compile`](super::compile::compile) from a [`PlanDoc`]; shared by `Arc` and swapped
//! atomically when a new version is applied, so no call sees half a plan.

use std::collections::HashSet;
use std::sync::OnceLock;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

use super::expr::Expr;
use super::hours::{BusinessHours, ClockTime};
use super::index::RuleIndex;
use crate::domain::plan::PlanDoc;

/// The plan's lookup tables, read on every routed call. Their keys come from the plan
/// (set by supervisors), so hashbrown's fast default hasher is safe here: a caller can
/// only look keys up, never add colliding ones.
pub(crate) type HashMap<K, V> = hashbrown::HashMap<K, V>;

#[derive(Debug)]
pub struct CompiledPlan {
    pub version: u64,
    pub doc: PlanDoc,
    pub queues: Vec<Queue>,
    pub(crate) queue_by_id: HashMap<String, usize>,
    pub campaigns: Vec<Campaign>,
    pub(crate) campaigns_by_dialed: HashMap<String, Vec<usize>>,
    pub(crate) campaigns_by_code: HashMap<String, Vec<usize>>,
    pub(crate) prefixes: HashMap<String, PrefixEntry>,
    pub(crate) longest_prefix: usize,
    pub rules: Vec<Rule>,
    pub(crate) index: RuleIndex,
    pub default_route: DefaultRoute,
    /// Per rule, and last for the default route: the queue of its first decision and
    /// the `holdless_routing_decisions_total` handle of its decisions to that queue.
    /// Made on the first decision (a plan only validated or simulated makes none).
    pub(crate) decision_counters: Box<[OnceLock<(usize, metrics::Counter)>]>,
}

impl CompiledPlan {
    /// Counts a decision of rule `rule` (an index in `rules`; `None`: the default
    /// route) to queue `queue` (an index in `queues`) in
    /// `holdless_routing_decisions_total`. Each rule keeps the handle of the first
    /// queue it sent a call to (nearly always its only one), so counting is one atomic
    /// add; a decision of the same rule to another queue (a campaign rule's other
    /// campaigns) finds its handle by name.
    pub fn count_decision(&self, rule: Option<usize>, queue: usize) {
        let slot = rule.unwrap_or(self.rules.len());
        let rule_id = rule.and_then(|i| self.rules.get(i)).map(|r| r.id.as_str());
        let queue_id = self.queues.get(queue).map_or("", |q| q.id.as_str());
        if let Some(kept) = self.decision_counters.get(slot) {
            let (first, counter) = kept.get_or_init(|| {
                let counter = crate::metrics::handles::decision_counter(rule_id, queue_id);
                (queue, counter)
            });
            if *first == queue {
                counter.increment(1);
                return;
            }
        }
        crate::metrics::handles::count_decision(rule_id, queue_id);
    }

    pub fn queue(&self, id: &str) -> Option<&Queue> {
        self.queue_by_id.get(id).map(|&i| &self.queues[i])
    }

    /// The campaign active at `now` for a dialed number or tracking code. Validation
    /// refuses overlapping windows for one number or code, so at most one is active;
    /// the dialed number is looked at first.
    pub fn active_campaign(
        &self,
        dialed: Option<&str>,
        tracking_code: Option<&str>,
        now: DateTime<Utc>,
    ) -> Option<&Campaign> {
        let by_dialed = dialed.and_then(|d| self.campaigns_by_dialed.get(d));
        let by_code = tracking_code.and_then(|c| self.campaigns_by_code.get(c));
        by_dialed
            .into_iter()
            .chain(by_code)
            .flatten()
            .map(|&i| &self.campaigns[i])
            .find(|c| c.is_active(now))
    }
}

#[derive(Debug, Clone)]
pub struct Queue {
    pub id: String,
    pub name: String,
    pub skills: Vec<String>,
    /// `None`: open around the clock.
    pub business_hours: Option<BusinessHours>,
    pub service_level_target: f64,
    pub service_level_secs: u32,
    pub max_waiting: u32,
    pub default_aht_secs: u32,
    pub callback: CallbackPolicy,
    /// SIP or tel URI of the queue for the telephony front end; empty when not set.
    pub contact_uri: String,
}

impl Queue {
    pub fn is_open(&self, now: DateTime<Utc>) -> bool {
        self.business_hours.as_ref().is_none_or(|h| h.is_open(now))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialing {
    /// Reserve the agent, then dial the customer.
    AgentFirst,
    /// Dial the customer, then reserve the next free agent.
    CustomerFirst,
}

#[derive(Debug, Clone)]
pub struct CallbackPolicy {
    pub enabled: bool,
    pub offer_after_ewt_secs: u32,
    pub window_start: ClockTime,
    pub window_end: ClockTime,
    pub dialing: Dialing,
    pub max_attempts: u32,
    pub retry_backoff_secs: Vec<u32>,
    pub expiry_secs: u32,
    pub slot_minutes: u32,
    pub slot_capacity: u32,
    pub abandon_rescue_after_secs: u32,
}

#[derive(Debug, Clone)]
pub struct Campaign {
    pub id: String,
    pub name: String,
    pub starts_at: Option<DateTime<Utc>>,
    pub ends_at: Option<DateTime<Utc>>,
    pub priority_boost: i32,
    pub queue: Option<usize>,
    pub script: String,
}

impl Campaign {
    /// Active in `[starts_at, ends_at)`.
    pub fn is_active(&self, now: DateTime<Utc>) -> bool {
        self.starts_at.is_none_or(|s| s <= now) && self.ends_at.is_none_or(|e| now < e)
    }
}

#[derive(Debug, Clone)]
pub struct PrefixEntry {
    pub region: Option<String>,
    pub time_zone: Option<Tz>,
}

#[derive(Debug)]
pub struct Rule {
    pub id: String,
    pub description: String,
    pub enabled: bool,
    pub matcher: Matcher,
    pub action: Action,
}

/// Structured matchers; `None` (or an empty prefix/language list) means "not listed".
#[derive(Debug, Default)]
pub struct Matcher {
    pub countries: Option<HashSet<String>>,
    pub regions: Option<HashSet<String>>,
    pub time_zones: Option<HashSet<String>>,
    pub number_prefixes: Vec<String>,
    pub customer_statuses: Option<HashSet<String>>,
    pub campaigns: Option<HashSet<String>>,
    pub dialed_numbers: Option<HashSet<String>>,
    pub intents: Option<HashSet<String>>,
    /// Lower-case tags; `en` matches `en-GB`.
    pub languages: Vec<String>,
    /// `Some(true)`: only while the target queue is open; `Some(false)`: only closed.
    pub business_hours_open: Option<bool>,
    /// Queue whose hours `business_hours_open` looks at; `None`: the target queue.
    pub business_hours_queue: Option<usize>,
    pub transfer_loop: Option<bool>,
    pub expression: Option<Expr>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PreferredAgent {
    LastAgent,
    PreferredAgent,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OfferCallback {
    /// Follow the queue's callback policy.
    Auto,
    Always,
    Never,
}

#[derive(Debug, Clone)]
pub struct Action {
    /// Target queue index; `None` means "the matched campaign's queue".
    pub queue: Option<usize>,
    pub priority: i32,
    pub extra_skills: Vec<String>,
    pub preferred_agent: Option<PreferredAgent>,
    pub preferred_agent_timeout_secs: u32,
    pub offer_callback: OfferCallback,
    pub note: String,
}

#[derive(Debug, Clone)]
pub struct DefaultRoute {
    pub queue: usize,
    pub priority: i32,
    pub note: String,
}
