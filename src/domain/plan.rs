//! The routing plan document: the versioned unit a supervisor edits, stored in sled and
//! exchanged as TOML (see `deploy/plan.example.toml`). These are the raw, serde-shaped
//! types; `routing::compile` checks them and builds the indexed plan that routes calls.

use serde::{Deserialize, Serialize};

/// A routing plan as written by a supervisor.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanDoc {
    #[serde(default)]
    pub queues: Vec<QueueDoc>,
    #[serde(default)]
    pub campaigns: Vec<CampaignDoc>,
    /// Longest-prefix table from caller number to region and time zone.
    #[serde(default)]
    pub locations: Vec<LocationPrefixDoc>,
    /// Ordered rules: the first that matches decides.
    #[serde(default)]
    pub rules: Vec<RuleDoc>,
    /// Where a call goes when no rule matches.
    pub default_route: Option<DefaultRouteDoc>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueDoc {
    pub id: String,
    #[serde(default)]
    pub name: String,
    /// Skills an agent needs to take calls from this queue.
    #[serde(default)]
    pub skills: Vec<String>,
    /// Absent: open around the clock.
    pub business_hours: Option<BusinessHoursDoc>,
    #[serde(default)]
    pub service_level: ServiceLevelDoc,
    /// Most calls (live and callbacks) waiting at once; 0 means no limit.
    #[serde(default)]
    pub max_waiting: u32,
    /// Average handle time used until enough calls were measured, in seconds.
    #[serde(default = "default_aht_secs")]
    pub default_aht_secs: u32,
    #[serde(default)]
    pub callback: CallbackPolicyDoc,
    /// Where the telephony front end sends the queue's calls, e.g.
    /// `sip:general@queues.example.com` (`sip:`, `sips:` or `tel:`). Optional; returned
    /// in every decision for the queue as `queue_contact_uri`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub contact_uri: String,
}

fn default_aht_secs() -> u32 {
    300
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BusinessHoursDoc {
    /// IANA zone the hours are written in, e.g. `America/New_York`.
    pub time_zone: String,
    /// Opening hours per weekday.
    #[serde(default)]
    pub weekly: Vec<WeeklyHoursDoc>,
    /// Closed all day on these local dates (`YYYY-MM-DD`).
    #[serde(default)]
    pub holidays: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeeklyHoursDoc {
    /// `mon`, `tue`, ... `sun`.
    pub days: Vec<String>,
    /// Local `HH:MM`, inclusive.
    pub open: String,
    /// Local `HH:MM`, exclusive; `24:00` for midnight at the end of the day.
    pub close: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceLevelDoc {
    /// Share of calls to answer within `answer_within_secs`, in percent.
    pub target_percent: f64,
    pub answer_within_secs: u32,
}

impl Default for ServiceLevelDoc {
    fn default() -> Self {
        Self {
            target_percent: 80.0,
            answer_within_secs: 20,
        }
    }
}

/// How callbacks work for a queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CallbackPolicyDoc {
    pub enabled: bool,
    /// Offer a callback when the estimated wait exceeds this, in seconds.
    pub offer_after_ewt_secs: u32,
    /// Customer-local calling window, `HH:MM`.
    pub window_start: String,
    pub window_end: String,
    /// `agent_first` (reserve the agent, then dial) or `customer_first`.
    pub dialing: String,
    pub max_attempts: u32,
    /// Wait before attempt n+1 is `retry_backoff_secs[n-1]` (last value repeats).
    pub retry_backoff_secs: Vec<u32>,
    /// A pending callback expires this long after it was requested, in seconds.
    pub expiry_secs: u32,
    pub slot_minutes: u32,
    /// Scheduled callbacks per slot.
    pub slot_capacity: u32,
    /// Give a callback to a caller who hangs up after waiting this long; 0 = off.
    pub abandon_rescue_after_secs: u32,
}

impl Default for CallbackPolicyDoc {
    fn default() -> Self {
        Self {
            enabled: true,
            offer_after_ewt_secs: 120,
            window_start: "08:00".into(),
            window_end: "21:00".into(),
            dialing: "agent_first".into(),
            max_attempts: 3,
            retry_backoff_secs: vec![300, 900, 1800],
            expiry_secs: 86_400,
            slot_minutes: 30,
            slot_capacity: 4,
            abandon_rescue_after_secs: 0,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CampaignDoc {
    pub id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub dialed_numbers: Vec<String>,
    #[serde(default)]
    pub tracking_codes: Vec<String>,
    /// RFC 3339 instant; absent means "since ever".
    pub starts_at: Option<String>,
    /// RFC 3339 instant, exclusive; absent means "no end".
    pub ends_at: Option<String>,
    #[serde(default)]
    pub priority_boost: i32,
    /// Target queue for rules that match the campaign and name no queue of their own.
    pub queue: Option<String>,
    /// Script or notes for the agent.
    #[serde(default)]
    pub script: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocationPrefixDoc {
    /// E.164 prefix, e.g. `+1212`.
    pub prefix: String,
    #[serde(default)]
    pub region: String,
    /// IANA zone; empty means "the country's main zone".
    #[serde(default)]
    pub time_zone: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleDoc {
    pub id: String,
    #[serde(default)]
    pub description: String,
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default, rename = "match")]
    pub matcher: MatchDoc,
    pub action: ActionDoc,
}

fn yes() -> bool {
    true
}

/// All listed matchers must hold; a list holds if any of its values does.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchDoc {
    #[serde(default)]
    pub countries: Vec<String>,
    #[serde(default)]
    pub regions: Vec<String>,
    #[serde(default)]
    pub time_zones: Vec<String>,
    #[serde(default)]
    pub number_prefixes: Vec<String>,
    #[serde(default)]
    pub customer_statuses: Vec<String>,
    #[serde(default)]
    pub campaigns: Vec<String>,
    #[serde(default)]
    pub dialed_numbers: Vec<String>,
    #[serde(default)]
    pub intents: Vec<String>,
    #[serde(default)]
    pub languages: Vec<String>,
    /// `open` or `closed`: the business hours now of `business_hours_queue`, or of the
    /// rule's target queue when that is not given.
    pub business_hours: Option<String>,
    /// The queue whose hours `business_hours` looks at (e.g. route to `after_hours`
    /// while `support` is closed).
    pub business_hours_queue: Option<String>,
    /// `true`: only calls transferred back to a queue they already visited;
    /// `false`: only calls that were not.
    pub transfer_loop: Option<bool>,
    /// CEL expression over the call; must evaluate to `true`.
    pub expression: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionDoc {
    /// Target queue; may be left out when the rule matches campaigns, then the
    /// campaign's queue is used.
    pub queue: Option<String>,
    #[serde(default)]
    pub priority: i32,
    #[serde(default)]
    pub extra_skills: Vec<String>,
    /// `last_agent` or `preferred_agent`: the customer's agent to try first.
    pub preferred_agent: Option<String>,
    #[serde(default)]
    pub preferred_agent_timeout_secs: u32,
    /// `auto` (queue policy, default), `always` or `never`.
    pub offer_callback: Option<String>,
    #[serde(default)]
    pub note: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DefaultRouteDoc {
    pub queue: String,
    #[serde(default)]
    pub priority: i32,
    #[serde(default)]
    pub note: String,
}

impl PlanDoc {
    /// Parses a TOML plan. Syntax and shape errors come back as one message with the
    /// line and column; semantic checks are `routing::compile`'s job.
    pub fn from_toml(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| e.to_string().trim_end().replace('\n', " "))
    }
}
