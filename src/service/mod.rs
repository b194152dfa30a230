//! The operations holdless offers, over the store, the active plan and the clock. The
//! gRPC layer (`api`) converts wire types and calls these; nothing here knows tonic.

use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::sync::Mutex;

use crate::clock::Clock;
use crate::domain::{Call, Customer, CustomerId, FieldViolation};
use crate::routing::{self, CompiledPlan, Decision};
use crate::store::{NewPlan, PlanRecord, Store, StoreError, UpsertOutcome};

/// The example plan shipped in `deploy/plan.example.toml`, used when no plan file is
/// configured and the store is empty.
pub const EXAMPLE_PLAN: &str = include_str!("../../deploy/plan.example.toml");

/// What can go wrong in an operation; mapped to a gRPC status in `api::error` only.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("invalid request")]
    InvalidArgument(Vec<FieldViolation>),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    Aborted(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Internal(String),
}

impl From<StoreError> for ServiceError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::VersionConflict { .. } => ServiceError::Aborted(e.to_string()),
            StoreError::DuplicatePhone { phone } => {
                ServiceError::InvalidArgument(vec![FieldViolation::new(
                    "customer.phone_numbers",
                    format!("{phone} is listed twice"),
                )])
            }
            StoreError::Closed => ServiceError::Unavailable(e.to_string()),
            StoreError::Io(_) | StoreError::Corrupt(_) => ServiceError::Internal(e.to_string()),
        }
    }
}

/// A summary of a valid plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlanSummary {
    pub queues: usize,
    pub rules: usize,
    pub campaigns: usize,
}

pub struct Holdless {
    store: Arc<dyn Store>,
    plan: ArcSwap<CompiledPlan>,
    clock: Arc<dyn Clock>,
    /// Serializes plan changes so the in-memory plan always equals the stored active one.
    plan_writer: Mutex<()>,
}

impl Holdless {
    /// Loads the active plan from the store; an empty store first imports `plan_text`
    /// as version 1.
    pub async fn start(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        plan_text: &str,
    ) -> Result<Self, ServiceError> {
        let record = match store.active_plan().await? {
            Some(r) => r,
            None => {
                routing::compile_toml(plan_text, 0).map_err(ServiceError::InvalidArgument)?;
                let r = store
                    .apply_plan(
                        NewPlan {
                            author: "holdless (import)".into(),
                            comment: "imported at first start".into(),
                            created_at: clock.now(),
                            toml: plan_text.to_owned(),
                        },
                        Some(0),
                    )
                    .await?;
                tracing::info!(
                    version = r.version,
                    "imported routing plan into empty store"
                );
                r
            }
        };
        let plan = routing::compile_toml(&record.toml, record.version).map_err(|issues| {
            ServiceError::Internal(format!(
                "stored plan version {} no longer validates: {}",
                record.version,
                issues
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ")
            ))
        })?;
        tracing::info!(
            version = plan.version,
            rules = plan.rules.len(),
            "routing plan active"
        );
        Ok(Self {
            store,
            plan: ArcSwap::from_pointee(plan),
            clock,
            plan_writer: Mutex::new(()),
        })
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// The plan routing uses now.
    pub fn active_plan(&self) -> Arc<CompiledPlan> {
        self.plan.load_full()
    }

    /// Routes one call: looks up the customer (by id, else by caller number) and decides.
    /// An unknown customer id is not an error: the call routes as an unknown caller.
    pub async fn route(&self, call: &Call) -> Result<Decision, ServiceError> {
        let customer = match (&call.customer_id, &call.caller) {
            (Some(id), _) => self.store.customer(id).await?,
            (None, Some(caller)) => self.store.customer_by_phone(caller.as_str()).await?,
            (None, None) => None,
        };
        let plan = self.plan.load();
        Ok(routing::decide(
            &plan,
            call,
            customer.as_ref(),
            self.clock.now(),
        ))
    }

    pub fn validate_plan(&self, text: &str) -> Result<PlanSummary, Vec<FieldViolation>> {
        routing::compile_toml(text, 0).map(|p| PlanSummary {
            queues: p.queues.len(),
            rules: p.rules.len(),
            campaigns: p.campaigns.len(),
        })
    }

    /// Validates and activates a plan as a new version. `expected_version` 0 skips the
    /// optimistic-concurrency check.
    pub async fn apply_plan(
        &self,
        text: String,
        expected_version: u64,
        author: String,
        comment: String,
    ) -> Result<PlanRecord, ServiceError> {
        let mut compiled =
            routing::compile_toml(&text, 0).map_err(ServiceError::InvalidArgument)?;
        let _writer = self.plan_writer.lock().await;
        let record = self
            .store
            .apply_plan(
                NewPlan {
                    author,
                    comment,
                    created_at: self.clock.now(),
                    toml: text,
                },
                (expected_version != 0).then_some(expected_version),
            )
            .await?;
        compiled.version = record.version;
        self.plan.store(Arc::new(compiled));
        tracing::info!(version = record.version, author = %record.author, "routing plan applied");
        Ok(record)
    }

    /// The active plan's record, or a given version (0 = active).
    pub async fn plan_record(&self, version: u64) -> Result<PlanRecord, ServiceError> {
        let found = if version == 0 {
            self.store.active_plan().await?
        } else {
            self.store.plan_version(version).await?
        };
        found.ok_or_else(|| ServiceError::NotFound(format!("plan version {version} not found")))
    }

    pub async fn upsert_customer(&self, mut c: Customer) -> Result<UpsertOutcome, ServiceError> {
        c.updated_at = self.clock.now();
        Ok(self.store.upsert_customer(c).await?)
    }

    pub async fn customer(&self, id: &CustomerId) -> Result<Customer, ServiceError> {
        self.store
            .customer(id)
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("customer {} not found", id.as_str())))
    }

    pub async fn customer_by_phone(&self, e164: &str) -> Result<Customer, ServiceError> {
        self.store
            .customer_by_phone(e164)
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("no customer has number {e164}")))
    }

    pub async fn delete_customer(&self, id: &CustomerId) -> Result<(), ServiceError> {
        if self.store.delete_customer(id).await? {
            Ok(())
        } else {
            Err(ServiceError::NotFound(format!(
                "customer {} not found",
                id.as_str()
            )))
        }
    }

    /// Makes everything durable and stops the store's background work.
    pub async fn close(&self) {
        if let Err(e) = self.store.flush().await {
            tracing::error!(error = %e, "final store flush failed");
        }
        self.store.close().await;
    }
}
