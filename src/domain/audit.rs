//! The audit log: who changed what, when, and under which request id. Entries are
//! append-only and numbered by the store in commit order.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The principal recorded when no principals are configured (authentication off,
/// loopback only). The API takes the principal from one place (`api::principal`).
pub const ANONYMOUS: &str = "anonymous";

/// Principal of changes holdless makes on its own (plan import, SIGHUP reload).
pub const SYSTEM: &str = "system";

/// What a supervisor (or holdless itself) changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditAction {
    /// A plan was applied as a new version (API, CLI, or the first-start import).
    PlanApply,
    /// An earlier plan version was applied again as a new version.
    PlanRollback,
    /// The configured plan file was re-imported (SIGHUP).
    PlanReload,
    CustomerUpsert,
    CustomerDelete,
    CallbackCancel,
}

impl AuditAction {
    pub fn as_str(self) -> &'static str {
        match self {
            AuditAction::PlanApply => "plan_apply",
            AuditAction::PlanRollback => "plan_rollback",
            AuditAction::PlanReload => "plan_reload",
            AuditAction::CustomerUpsert => "customer_upsert",
            AuditAction::CustomerDelete => "customer_delete",
            AuditAction::CallbackCancel => "callback_cancel",
        }
    }
}

/// One audit entry. `seq` is assigned by the store when the entry is written (in the
/// same transaction as the change it describes); it orders the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub seq: u64,
    pub time: DateTime<Utc>,
    pub principal: String,
    pub action: AuditAction,
    /// What was changed, e.g. `plan v7` or `customer c-42`.
    pub target: String,
    /// The client's idempotency key, empty when it sent none.
    #[serde(default)]
    pub request_id: String,
    /// Free detail, e.g. the plan's comment or "rolled back to v3".
    #[serde(default)]
    pub detail: String,
    /// For plan changes, the author the client named for the version (a shared
    /// service token's principal says which tool asked, the author says who edited);
    /// empty for other changes.
    #[serde(default)]
    pub author: String,
}

/// Who asks for a change, and under which request id (for idempotency and the log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    pub principal: String,
    /// Empty: the client sent none.
    pub request_id: String,
}

impl Actor {
    pub fn new(principal: impl Into<String>, request_id: impl Into<String>) -> Self {
        Self {
            principal: principal.into(),
            request_id: request_id.into(),
        }
    }

    /// An audit entry for this actor; `seq` is filled in by the store.
    pub fn entry(
        &self,
        time: DateTime<Utc>,
        action: AuditAction,
        target: impl Into<String>,
        detail: impl Into<String>,
    ) -> AuditEntry {
        AuditEntry {
            seq: 0,
            time,
            principal: self.principal.clone(),
            action,
            target: target.into(),
            request_id: self.request_id.clone(),
            detail: detail.into(),
            author: String::new(),
        }
    }
}
