//! Plan operations: validate, apply (optimistic and idempotent), roll back, list
//! versions, simulate a candidate on recorded or supplied calls, reload the configured
//! plan file (SIGHUP), and read the audit log.
//!
//! Every plan change goes through [`Holdless::activate`]: under the plan-writer lock the
//! store writes the version, its request id and its audit entry in one transaction,
//! then the compiled plan is swapped in, so the in-memory plan always equals the stored
//! active one.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{Holdless, PlanSummary, ServiceError, IMPORT_AUTHOR};
use crate::domain::audit::{Actor, AuditAction, AuditEntry, SYSTEM};
use crate::domain::{Call, Customer, CustomerId};
use crate::routing::simulate::{simulate, ReplayCall, SimulationReport};
use crate::routing::{self, CompiledPlan};
use crate::store::{NewPlan, PlanRecord};

/// How long a plan request id is remembered: a retry within this time returns the
/// first answer; after it, the id may be used again.
pub const PLAN_REQUEST_RETENTION_HOURS: i64 = 24;
/// Most calls one simulation replays (recorded calls beyond it: the newest are kept
/// and the report says it was truncated).
pub const MAX_SIMULATED_CALLS: usize = 100_000;
/// Recorded calls of this many days are replayed unless the request says otherwise.
pub const DEFAULT_SIMULATION_DAYS: u32 = 7;
/// Longest replay window, in days (contact history is pruned after its retention).
pub const MAX_SIMULATION_DAYS: u32 = 90;
/// Most runs and hours one `SimulateDay` request may ask for: a run is two simulated
/// days on a blocking thread, and the console waits for the answer.
pub const MAX_SIMULATE_DAY_RUNS: u32 = 20;
pub const MAX_SIMULATE_DAY_HOURS: u32 = 48;

/// The calls a simulation replays.
#[derive(Debug, Clone)]
pub enum ReplaySource {
    /// Contact history of the last `days` days, each call decided at the instant it
    /// was routed, with its customer's record as it is now.
    Recorded { days: u32 },
    /// Calls supplied by the client, each decided at its instant (`None`: now).
    Supplied(Vec<(Call, Option<DateTime<Utc>>)>),
}

#[derive(Debug, Clone)]
pub struct SimulationOutcome {
    /// The version the candidate was compared with.
    pub base_version: u64,
    pub report: SimulationReport,
    /// More recorded calls than [`MAX_SIMULATED_CALLS`]: only the newest were replayed.
    pub truncated: bool,
    /// Recorded calls from before holdless kept routing facts: replayed with only
    /// their caller and customer.
    pub without_facts: usize,
}

/// What a rollback did.
#[derive(Debug, Clone, PartialEq)]
pub enum Rollback {
    /// A new version, a copy of the requested one, is active.
    Applied(PlanRecord),
    /// The requested version's text is active already (this record); nothing changed.
    Unchanged(PlanRecord),
}

/// Author of every plan version imported from `plan.file` (at first start and by
/// SIGHUP): how a reload recognizes what the file produced last. The API refuses it
/// as an author, so a supervisor's version cannot pass for the file's.
pub const PLAN_FILE_AUTHOR: &str = "holdless (plan.file)";

/// Who owns the routing plan when `plan.file` is set (`plan.source`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PlanSource {
    /// Supervisors own it through the API; the file seeds an empty store, and a changed
    /// file is imported on SIGHUP only while the active version is the file's own.
    #[default]
    Api,
    /// The file is the source of truth: a changed file is imported on SIGHUP even over
    /// a version applied through the API (logged and audited).
    File,
}

/// What a SIGHUP did to the plan.
#[derive(Debug, Clone, PartialEq)]
pub enum ReloadOutcome {
    /// No `plan.file` is configured: the plan was left alone.
    NoFile { active: u64 },
    /// The file changed since its last import and is now a new version.
    Applied(PlanRecord),
    /// The file has not changed since it was last imported (as version `imported`),
    /// or it is the active plan already: nothing changed.
    Unchanged { active: u64, imported: Option<u64> },
    /// The file changed, but the active version was applied through the API after the
    /// file's last import (`imported`, none if it never was): kept, with a warning.
    Refused { active: u64, imported: Option<u64> },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReloadDecision {
    Unchanged,
    Import,
    Refuse,
}

/// The reload rule, given the file's hash, the active version and the version the
/// file last produced.
fn reload_decision(
    file_hash: &str,
    active: &PlanRecord,
    imported: Option<&PlanRecord>,
    source: PlanSource,
) -> ReloadDecision {
    if active.content_hash == file_hash || imported.is_some_and(|r| r.content_hash == file_hash) {
        return ReloadDecision::Unchanged;
    }
    let active_is_the_files = imported.is_some_and(|r| r.version == active.version);
    // A store seeded with the built-in example (or by an older holdless) has no
    // version from the file; its first-start import is not a supervisor's change.
    let seeded_at_start = active.author == IMPORT_AUTHOR;
    if source == PlanSource::File || active_is_the_files || seeded_at_start {
        ReloadDecision::Import
    } else {
        ReloadDecision::Refuse
    }
}

fn count_reload(result: &'static str) {
    metrics::counter!("holdless_plan_reloads_total", "result" => result).increment(1);
}

fn compile_stored(record: &PlanRecord) -> Result<CompiledPlan, ServiceError> {
    routing::compile_toml(&record.toml, record.version).map_err(|issues| {
        ServiceError::FailedPrecondition(format!(
            "plan version {} no longer validates: {}",
            record.version,
            issues
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        ))
    })
}

impl Holdless {
    pub fn validate_plan(
        &self,
        text: &str,
    ) -> Result<PlanSummary, Vec<crate::domain::FieldViolation>> {
        routing::compile_toml(text, 0).map(|p| PlanSummary {
            queues: p.queues.len(),
            rules: p.rules.len(),
            campaigns: p.campaigns.len(),
        })
    }

    /// Validates and activates a plan as a new version. `expected_version` 0 skips the
    /// optimistic-concurrency check; a repeated `actor.request_id` returns the first
    /// answer.
    pub async fn apply_plan(
        &self,
        text: String,
        expected_version: u64,
        author: String,
        comment: String,
        actor: &Actor,
    ) -> Result<PlanRecord, ServiceError> {
        let compiled = routing::compile_toml(&text, 0).map_err(ServiceError::InvalidArgument)?;
        let detail = comment.clone();
        self.activate(
            compiled,
            text,
            expected_version,
            author,
            comment,
            actor,
            AuditAction::PlanApply,
            detail,
        )
        .await
    }

    /// Applies an earlier version again, as a new version (history only grows).
    /// When that version's text is the active plan's already, nothing changes: the
    /// active record comes back with [`Rollback::Unchanged`], so a supervisor is told
    /// instead of finding an identical copy in the history. A stale
    /// `expected_version` is still refused first.
    pub async fn rollback_plan(
        &self,
        version: u64,
        expected_version: u64,
        author: String,
        comment: String,
        actor: &Actor,
    ) -> Result<Rollback, ServiceError> {
        let target =
            self.store.plan_version(version).await?.ok_or_else(|| {
                ServiceError::NotFound(format!("plan version {version} not found"))
            })?;
        let active = self.plan_record(0).await?;
        let base_ok = expected_version == 0 || expected_version == active.version;
        if base_ok && active.toml == target.toml {
            return Ok(Rollback::Unchanged(active));
        }
        let compiled = compile_stored(&target)?;
        let comment = if comment.is_empty() {
            format!("rollback to v{version}")
        } else {
            comment
        };
        let detail = format!("rolled back to v{version}: {comment}");
        self.activate(
            compiled,
            target.toml,
            expected_version,
            author,
            comment,
            actor,
            AuditAction::PlanRollback,
            detail,
        )
        .await
        .map(Rollback::Applied)
    }

    #[allow(clippy::too_many_arguments)]
    async fn activate(
        &self,
        mut compiled: CompiledPlan,
        text: String,
        expected_version: u64,
        author: String,
        comment: String,
        actor: &Actor,
        action: AuditAction,
        detail: String,
    ) -> Result<PlanRecord, ServiceError> {
        let _writer = self.plan_writer.lock().await;
        let now = self.clock.now();
        let audit = AuditEntry {
            author: author.clone(),
            ..actor.entry(now, action, "", detail)
        };
        let applied = self
            .store
            .apply_plan(
                NewPlan {
                    author,
                    comment,
                    created_at: now,
                    toml: text,
                    request_id: (!actor.request_id.is_empty()).then(|| actor.request_id.clone()),
                    audit,
                },
                (expected_version != 0).then_some(expected_version),
            )
            .await?;
        let record = applied.record;
        if applied.replayed {
            tracing::info!(
                version = record.version,
                request_id = %actor.request_id,
                "plan request repeated; returning the first answer"
            );
            return Ok(record);
        }
        compiled.version = record.version;
        self.plan.store(Arc::new(compiled));
        self.boards().mark();
        tracing::info!(
            version = record.version,
            author = %record.author,
            action = action.as_str(),
            "routing plan applied"
        );
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

    /// Plan versions below `before` (all when `None`), newest first, without their
    /// documents; and the active version.
    pub async fn plan_versions(
        &self,
        before: Option<u64>,
        limit: usize,
    ) -> Result<(Vec<PlanRecord>, u64), ServiceError> {
        let versions = self.store.list_plans(before, limit).await?;
        Ok((versions, self.plan.load().version))
    }

    /// Audit entries from `from` (a seq), oldest first.
    pub async fn audit_log(
        &self,
        from: u64,
        limit: usize,
    ) -> Result<Vec<AuditEntry>, ServiceError> {
        Ok(self.store.list_audit(from, limit).await?)
    }

    /// Records a change made elsewhere (e.g. a callback cancelled by a supervisor).
    pub async fn audit(&self, entry: AuditEntry) -> Result<AuditEntry, ServiceError> {
        Ok(self.store.append_audit(entry).await?)
    }

    /// Replays calls through the candidate plan and a base version (0 = active) and
    /// reports what moves. The decisions run on a blocking thread.
    /// Simulates a day of `plan_toml` (empty: the active plan) with and without
    /// callbacks ([`crate::sim::day`]); returns the plan version simulated (0 for a
    /// given text) and the comparison. Changes nothing. Runs on a blocking thread: a
    /// day is pure CPU work.
    pub async fn simulate_day(
        &self,
        plan_toml: &str,
        scenario: crate::sim::day::scenario::Scenario,
        seed: u64,
        runs: u32,
    ) -> Result<(u64, crate::sim::day::scenario::Comparison), ServiceError> {
        use crate::domain::FieldViolation;
        let plan = if plan_toml.is_empty() {
            self.active_plan()
        } else {
            let compiled = routing::compile_toml(plan_toml, 0).map_err(|v| {
                ServiceError::InvalidArgument(
                    v.into_iter()
                        .map(|f| {
                            FieldViolation::new(format!("plan_toml.{}", f.field), f.description)
                        })
                        .collect(),
                )
            })?;
            Arc::new(compiled)
        };
        let mut v = Vec::new();
        if runs > MAX_SIMULATE_DAY_RUNS {
            v.push(FieldViolation::new(
                "runs",
                format!("at most {MAX_SIMULATE_DAY_RUNS}"),
            ));
        }
        if scenario.hours > MAX_SIMULATE_DAY_HOURS {
            v.push(FieldViolation::new(
                "hours",
                format!("at most {MAX_SIMULATE_DAY_HOURS}"),
            ));
        }
        if !v.is_empty() {
            return Err(ServiceError::InvalidArgument(v));
        }
        let version = if plan_toml.is_empty() {
            plan.version
        } else {
            0
        };
        let start = scenario.start.unwrap_or_else(|| self.clock().now());
        let input = scenario.input(plan, start).map_err(|e| {
            ServiceError::InvalidArgument(vec![FieldViolation::new(e.field, e.message)])
        })?;
        let compared = tokio::task::spawn_blocking(move || {
            crate::sim::day::scenario::compare(&input, seed, runs)
        })
        .await
        .map_err(|e| ServiceError::Internal(format!("the simulation stopped: {e}")))?
        .map_err(|e| {
            ServiceError::InvalidArgument(vec![FieldViolation::new(e.field, e.message)])
        })?;
        Ok((version, compared))
    }

    pub async fn simulate_plan(
        &self,
        candidate_text: &str,
        base_version: u64,
        source: ReplaySource,
        samples_per_move: usize,
    ) -> Result<SimulationOutcome, ServiceError> {
        let candidate =
            routing::compile_toml(candidate_text, 0).map_err(ServiceError::InvalidArgument)?;
        let base = if base_version == 0 {
            self.plan.load_full()
        } else {
            Arc::new(compile_stored(&self.plan_record(base_version).await?)?)
        };
        let now = self.clock.now();
        let mut truncated = false;
        let mut without_facts = 0;
        let calls: Vec<(Call, DateTime<Utc>)> = match source {
            ReplaySource::Supplied(calls) => calls
                .into_iter()
                .map(|(c, at)| (c, at.unwrap_or(now)))
                .collect(),
            ReplaySource::Recorded { days } => {
                let since = now - chrono::Duration::days(i64::from(days));
                let mut records = self
                    .store
                    .contacts_since(since, MAX_SIMULATED_CALLS + 1)
                    .await?;
                if records.len() > MAX_SIMULATED_CALLS {
                    truncated = true;
                    records.truncate(MAX_SIMULATED_CALLS);
                }
                // Oldest first, the order the calls came in.
                records.reverse();
                records
                    .into_iter()
                    .map(|r| match &r.facts {
                        Some(f) => (f.to_call(&r.call_id), f.routed_at.unwrap_or(r.enqueued_at)),
                        None => {
                            without_facts += 1;
                            let facts = crate::domain::contact::CallFacts {
                                caller: r.caller.clone(),
                                customer_id: r.customer_id.clone(),
                                ..Default::default()
                            };
                            (facts.to_call(&r.call_id), r.enqueued_at)
                        }
                    })
                    .collect()
            }
        };
        // The customer as of now, looked up once per customer or number.
        let mut customers: HashMap<String, Option<Customer>> = HashMap::new();
        let mut replay = Vec::with_capacity(calls.len());
        for (call, at) in calls {
            let key = match (&call.customer_id, &call.caller) {
                (Some(id), _) => Some(format!("c:{}", id.as_str())),
                (None, Some(p)) => Some(format!("p:{}", p.as_str())),
                (None, None) => None,
            };
            let customer = match key {
                None => None,
                Some(k) => match customers.get(&k) {
                    Some(c) => c.clone(),
                    None => {
                        let c = match (&call.customer_id, &call.caller) {
                            (Some(id), _) => self
                                .store
                                .customer(&CustomerId::new_checked(id.as_str().to_owned()))?,
                            (None, Some(p)) => self.store.customer_by_phone(p.as_str())?,
                            (None, None) => None,
                        };
                        customers.insert(k, c.clone());
                        c
                    }
                },
            };
            replay.push(ReplayCall { call, customer, at });
        }
        let base_version = base.version;
        let report = tokio::task::spawn_blocking(move || {
            simulate(&base, &candidate, &replay, samples_per_move)
        })
        .await
        .map_err(|e| ServiceError::Internal(format!("simulation task failed: {e}")))?;
        Ok(SimulationOutcome {
            base_version,
            report,
            truncated,
            without_facts,
        })
    }

    /// SIGHUP's plan step: re-imports `plan.file` only when its content changed since
    /// it was last imported, and never replaces a version applied through the API
    /// since then unless `source` is [`PlanSource::File`]. Without a file (`None`)
    /// the plan is left alone: the built-in example is never imported by a reload.
    ///
    /// Every outcome is logged and counted in `holdless_plan_reloads_total{result}`;
    /// an applied file is audited (`plan_reload`). A file that cannot be read or does
    /// not validate keeps the active plan and is counted as `failed`.
    pub async fn reload_plan_file(
        &self,
        path: Option<&Path>,
        source: PlanSource,
    ) -> Result<ReloadOutcome, ServiceError> {
        let Some(path) = path else {
            let active = self.plan.load().version;
            tracing::info!(version = active, "SIGHUP: no plan.file; plan unchanged");
            count_reload("no_file");
            return Ok(ReloadOutcome::NoFile { active });
        };
        let file = path.display().to_string();
        let result = self.reload_inner(path, &file, source).await;
        match &result {
            Ok(ReloadOutcome::Applied(r)) => {
                count_reload("applied");
                tracing::info!(version = r.version, %file, "SIGHUP: plan file changed; imported as a new version");
            }
            Ok(ReloadOutcome::Unchanged { active, imported }) => {
                count_reload("unchanged");
                tracing::info!(version = active, imported_as = ?imported, %file, "SIGHUP: plan file unchanged since it was last imported; plan unchanged");
            }
            Ok(ReloadOutcome::Refused { active, imported }) => {
                count_reload("refused");
                tracing::warn!(
                    version = active,
                    file_imported_as = ?imported,
                    %file,
                    "SIGHUP: plan file changed, but the active version was applied through the API since; \
                     keeping it (apply the file with `holdless plan apply`, or set plan.source = \"file\")"
                );
            }
            Ok(ReloadOutcome::NoFile { .. }) => {}
            Err(e) => {
                count_reload("failed");
                self.reload_failures.fetch_add(1, Ordering::Relaxed);
                let detail = match e {
                    ServiceError::InvalidArgument(v) => v
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join("; "),
                    other => other.to_string(),
                };
                tracing::warn!(%file, error = %detail, "SIGHUP: plan reload failed; the active plan stays");
            }
        }
        result
    }

    async fn reload_inner(
        &self,
        path: &Path,
        file: &str,
        source: PlanSource,
    ) -> Result<ReloadOutcome, ServiceError> {
        let text = tokio::fs::read_to_string(path).await.map_err(|e| {
            ServiceError::FailedPrecondition(format!("cannot read plan file {file}: {e}"))
        })?;
        let compiled = routing::compile_toml(&text, 0).map_err(ServiceError::InvalidArgument)?;
        // Under the writer lock, so an API apply cannot slip in between the decision
        // and the import.
        let writer = self.plan_writer.lock().await;
        let active = self.plan_record(0).await?;
        let imported = self.last_file_import().await?;
        let hash = hex::encode(Sha256::digest(text.as_bytes()));
        match reload_decision(&hash, &active, imported.as_ref(), source) {
            ReloadDecision::Unchanged => {
                return Ok(ReloadOutcome::Unchanged {
                    active: active.version,
                    imported: imported.map(|r| r.version),
                })
            }
            ReloadDecision::Refuse => {
                return Ok(ReloadOutcome::Refused {
                    active: active.version,
                    imported: imported.map(|r| r.version),
                })
            }
            ReloadDecision::Import => {}
        }
        drop(writer);
        let actor = Actor::new(SYSTEM, "");
        let comment = format!("reloaded from {file} (was v{})", active.version);
        self.activate(
            compiled,
            text,
            active.version,
            PLAN_FILE_AUTHOR.into(),
            comment.clone(),
            &actor,
            AuditAction::PlanReload,
            comment,
        )
        .await
        .map(ReloadOutcome::Applied)
    }

    /// The newest version imported from `plan.file` (at first start or by a reload).
    async fn last_file_import(&self) -> Result<Option<PlanRecord>, ServiceError> {
        let mut before = None;
        loop {
            let page = self.store.list_plans(before, 256).await?;
            let Some(last) = page.last() else {
                return Ok(None);
            };
            before = Some(last.version);
            if let Some(r) = page.iter().find(|r| r.author == PLAN_FILE_AUTHOR) {
                return Ok(Some(r.clone()));
            }
        }
    }

    /// Plan reloads that failed since start.
    pub fn plan_reload_failures(&self) -> u64 {
        self.reload_failures.load(Ordering::Relaxed)
    }

    /// Forgets plan request ids past their retention.
    pub async fn prune_plan_requests(&self) -> Result<usize, ServiceError> {
        let before = self.clock.now() - chrono::Duration::hours(PLAN_REQUEST_RETENTION_HOURS);
        Ok(self.store.prune_plan_requests(before).await?)
    }
}
