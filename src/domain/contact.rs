//! Contact history: what happened to past calls, kept (bounded) so the next agent sees
//! the customer's recent contacts and first-contact resolution can be measured.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContactOutcome {
    /// Answered, still in progress.
    Answered,
    /// Answered and ended.
    Completed,
    /// The caller hung up before an agent answered.
    Abandoned,
    /// Transferred to another queue.
    Transferred,
}

/// One call as it ended up, keyed by call id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContactRecord {
    pub call_id: String,
    pub customer_id: Option<String>,
    /// Caller number (E.164), when not withheld.
    pub caller: Option<String>,
    pub queue_id: String,
    /// When the call entered the queue.
    pub enqueued_at: DateTime<Utc>,
    /// When the record last changed (answered, abandoned, transferred, ended).
    pub updated_at: DateTime<Utc>,
    pub outcome: ContactOutcome,
    pub agent_id: Option<String>,
    /// Seconds between entering the queue and being answered or abandoning.
    pub wait_secs: Option<f64>,
    pub handle_secs: Option<f64>,
    pub transfers: u32,
}
