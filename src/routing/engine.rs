//! The routing decision: a pure function of the plan, the call, the customer record and
//! the time. No I/O, no locks: the caller passes an `Arc`'d immutable plan.

use chrono::{DateTime, Timelike, Utc};

use super::expr::ExprVars;
use super::index::IndexKey;
use super::location::resolve_location;
use super::plan::{CompiledPlan, OfferCallback, PreferredAgent, Rule};
use crate::domain::{Call, Customer, Location};

/// Why a rule did or did not decide the call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TraceOutcome {
    Matched,
    Failed {
        matcher: &'static str,
        detail: String,
    },
    Disabled,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleTrace {
    pub rule_id: String,
    pub outcome: TraceOutcome,
}

/// Context shown to the agent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentContext {
    pub customer_id: String,
    pub customer_name: String,
    pub customer_status: String,
    pub customer_notes: String,
    pub language: String,
    pub campaign_id: String,
    pub campaign_script: String,
    pub rule_note: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub queue_id: String,
    /// The queue's contact URI from the plan; empty when it has none.
    pub queue_contact_uri: String,
    pub priority: i32,
    /// `None` when the default route was taken.
    pub rule_id: Option<String>,
    pub plan_version: u64,
    pub location: Location,
    pub campaign_id: Option<String>,
    pub extra_skills: Vec<String>,
    pub preferred_agent_id: Option<String>,
    pub preferred_agent_timeout_secs: u32,
    pub offer_callback: OfferCallback,
    pub queue_open: bool,
    pub agent_context: AgentContext,
    /// Filled only when the call asked for an explanation.
    pub explanation: Vec<RuleTrace>,
    /// The matched rule and the queue as indices in the plan that decided (for
    /// [`CompiledPlan::count_decision`]).
    pub rule_index: Option<usize>,
    pub queue_index: usize,
}

/// Whether a rule's language tag covers the caller's: equal, or the rule names the
/// primary subtag (`en` covers `en-GB`). Both lower case.
pub fn language_matches(rule: &str, caller: &str) -> bool {
    caller == rule
        || (caller.len() > rule.len()
            && caller.starts_with(rule)
            && caller.as_bytes()[rule.len()] == b'-')
}

/// Everything about a call that rules look at, computed once per decision.
struct Facts<'a> {
    call: &'a Call,
    location: Location,
    customer: Option<&'a Customer>,
    campaign: Option<&'a super::plan::Campaign>,
    language: Option<String>,
    now: DateTime<Utc>,
}

impl Facts<'_> {
    fn customer_status(&self) -> Option<&str> {
        self.customer
            .map(|c| c.status.as_str())
            .filter(|s| !s.is_empty())
    }
}

/// Decides where `call` goes under `plan` at `now`.
pub fn decide(
    plan: &CompiledPlan,
    call: &Call,
    customer: Option<&Customer>,
    now: DateTime<Utc>,
) -> Decision {
    let location = call
        .location_override
        .clone()
        .unwrap_or_else(|| resolve_location(plan, call.caller.as_ref()));
    let language = call
        .language
        .clone()
        .or_else(|| {
            customer
                .map(|c| c.language.clone())
                .filter(|l| !l.is_empty())
        })
        .map(|l| l.to_ascii_lowercase());
    let campaign = plan.active_campaign(call.dialed.as_deref(), call.tracking_code.as_deref(), now);
    let facts = Facts {
        call,
        location,
        customer,
        campaign,
        language,
        now,
    };

    let mut explanation = Vec::new();
    let matched = if call.explain {
        explain(plan, &facts, &mut explanation)
    } else {
        first_match(plan, &facts)
    };
    build(plan, facts, matched, explanation)
}

/// Fast path: index narrows the candidates, the rest of the matchers run on those only.
fn first_match(plan: &CompiledPlan, f: &Facts<'_>) -> Option<usize> {
    let key = IndexKey {
        country: f.location.country.as_deref(),
        region: f.location.region.as_deref(),
        time_zone: f.location.time_zone.map(|t| t.name()),
        customer_status: f.customer_status(),
        campaign: f.campaign.map(|c| c.id.as_str()),
        dialed: f.call.dialed.as_deref(),
        intent: f.call.intent.as_deref(),
    };
    plan.index
        .candidates(&key)
        .iter()
        .find(|&i| check_unindexed::<()>(plan, &plan.rules[i], f).is_ok())
}

/// Explain path: every rule in order until the first match, with the first failing
/// matcher of each. Agrees with `first_match` (a property test holds them together).
fn explain(plan: &CompiledPlan, f: &Facts<'_>, out: &mut Vec<RuleTrace>) -> Option<usize> {
    for (i, rule) in plan.rules.iter().enumerate() {
        let outcome = if !rule.enabled {
            TraceOutcome::Disabled
        } else {
            match check_indexed(rule, f).and_then(|_| check_unindexed(plan, rule, f)) {
                Ok(()) => TraceOutcome::Matched,
                Err((matcher, detail)) => TraceOutcome::Failed { matcher, detail },
            }
        };
        let matched = outcome == TraceOutcome::Matched;
        out.push(RuleTrace {
            rule_id: rule.id.clone(),
            outcome,
        });
        if matched {
            return Some(i);
        }
    }
    None
}

/// A matcher's verdict: `Err` names the failing matcher and why, in `D`.
type Check<D = String> = Result<(), (&'static str, D)>;

/// Why a matcher failed, as a caller wants it: the explain path renders the sentence,
/// the routing path (`()`) only needs to know that it failed and formats nothing.
trait Detail: Sized {
    fn of(render: impl FnOnce() -> String) -> Self;
}

impl Detail for String {
    fn of(render: impl FnOnce() -> String) -> Self {
        render()
    }
}

impl Detail for () {
    fn of(_: impl FnOnce() -> String) {}
}

fn in_set(
    name: &'static str,
    set: &Option<std::collections::HashSet<String>>,
    value: Option<&str>,
    what: &str,
) -> Check {
    let Some(set) = set else { return Ok(()) };
    match value {
        Some(v) if set.contains(v) => Ok(()),
        Some(v) => {
            let mut listed: Vec<&str> = set.iter().map(String::as_str).collect();
            listed.sort_unstable();
            Err((name, format!("{what} {v} not in [{}]", listed.join(", "))))
        }
        None => Err((name, format!("{what} unknown"))),
    }
}

/// The matchers the index covers, in explanation order.
fn check_indexed(rule: &Rule, f: &Facts<'_>) -> Check {
    let m = &rule.matcher;
    in_set(
        "countries",
        &m.countries,
        f.location.country.as_deref(),
        "country",
    )?;
    in_set(
        "regions",
        &m.regions,
        f.location.region.as_deref(),
        "region",
    )?;
    in_set(
        "time_zones",
        &m.time_zones,
        f.location.time_zone.map(|t| t.name()),
        "time zone",
    )?;
    // Prefixes sit between location and customer in the explanation order; they are
    // not indexed, so `check_unindexed` runs them on the fast path.
    check_prefixes(rule, f)?;
    in_set(
        "customer_statuses",
        &m.customer_statuses,
        f.customer_status(),
        "customer status",
    )?;
    in_set(
        "campaigns",
        &m.campaigns,
        f.campaign.map(|c| c.id.as_str()),
        "campaign",
    )?;
    in_set(
        "dialed_numbers",
        &m.dialed_numbers,
        f.call.dialed.as_deref(),
        "dialed number",
    )?;
    in_set("intents", &m.intents, f.call.intent.as_deref(), "intent")
}

fn check_prefixes<D: Detail>(rule: &Rule, f: &Facts<'_>) -> Check<D> {
    let prefixes = &rule.matcher.number_prefixes;
    if prefixes.is_empty() {
        return Ok(());
    }
    match &f.call.caller {
        Some(n) if prefixes.iter().any(|p| n.as_str().starts_with(p.as_str())) => Ok(()),
        Some(n) => Err((
            "number_prefixes",
            D::of(|| format!("caller {n} starts with none of [{}]", prefixes.join(", "))),
        )),
        None => Err(("number_prefixes", D::of(|| "caller number withheld".into()))),
    }
}

/// The matchers the index does not cover: prefixes, languages, hours, expression.
fn check_unindexed<D: Detail>(plan: &CompiledPlan, rule: &Rule, f: &Facts<'_>) -> Check<D> {
    let m = &rule.matcher;
    check_prefixes(rule, f)?;
    if !m.languages.is_empty() {
        match &f.language {
            Some(l) if m.languages.iter().any(|r| language_matches(r, l)) => {}
            Some(l) => {
                return Err((
                    "languages",
                    D::of(|| format!("language {l} not in [{}]", m.languages.join(", "))),
                ))
            }
            None => return Err(("languages", D::of(|| "language unknown".into()))),
        }
    }
    if let Some(want_open) = m.business_hours_open {
        let queue = m.business_hours_queue.or_else(|| target_queue(rule, f));
        let open = queue.is_some_and(|q| plan.queues[q].is_open(f.now));
        if open != want_open {
            let name = queue.map_or("?", |q| plan.queues[q].id.as_str());
            return Err((
                "business_hours",
                D::of(|| {
                    format!(
                        "queue {name} is {} now",
                        if open { "open" } else { "closed" }
                    )
                }),
            ));
        }
    }
    if let Some(want) = m.transfer_loop {
        if f.call.transfer_loop != want {
            return Err((
                "transfer_loop",
                D::of(|| {
                    if f.call.transfer_loop {
                        "call is in a transfer loop".into()
                    } else {
                        "call is not in a transfer loop".into()
                    }
                }),
            ));
        }
    }
    if let Some(expr) = &m.expression {
        if let Some(key) = expr.missing_attribute(&f.call.attributes) {
            return Err((
                "expression",
                D::of(|| {
                    format!(
                        "{} cannot be true without attribute '{key}', which the call lacks",
                        expr.source()
                    )
                }),
            ));
        }
        let tz_name = f.location.time_zone.map(|t| t.name()).unwrap_or("");
        let local_hour = f
            .location
            .time_zone
            .map(|tz| i64::from(f.now.with_timezone(&tz).hour()))
            .unwrap_or(-1);
        let vars = ExprVars {
            caller: f.call.caller.as_ref().map_or("", |c| c.as_str()),
            dialed: f.call.dialed.as_deref().unwrap_or(""),
            country: f.location.country.as_deref().unwrap_or(""),
            region: f.location.region.as_deref().unwrap_or(""),
            time_zone: tz_name,
            customer_id: f
                .customer
                .map(|c| c.id.as_str())
                .or(f.call.customer_id.as_ref().map(|c| c.as_str()))
                .unwrap_or(""),
            customer_status: f.customer_status().unwrap_or(""),
            language: f.language.as_deref().unwrap_or(""),
            intent: f.call.intent.as_deref().unwrap_or(""),
            campaign: f.campaign.map_or("", |c| c.id.as_str()),
            tracking_code: f.call.tracking_code.as_deref().unwrap_or(""),
            local_hour,
            attributes: &f.call.attributes,
        };
        match expr.eval(&vars) {
            Ok(true) => {}
            Ok(false) => {
                return Err((
                    "expression",
                    D::of(|| format!("{} is false", expr.source())),
                ))
            }
            Err(e) => return Err(("expression", D::of(|| e))),
        }
    }
    Ok(())
}

/// The queue a rule sends calls to: its own, else the matched campaign's.
fn target_queue(rule: &Rule, f: &Facts<'_>) -> Option<usize> {
    rule.action.queue.or_else(|| {
        f.campaign
            .filter(|c| {
                rule.matcher
                    .campaigns
                    .as_ref()
                    .is_some_and(|s| s.contains(&c.id))
            })
            .and_then(|c| c.queue)
    })
}

fn build(
    plan: &CompiledPlan,
    f: Facts<'_>,
    matched: Option<usize>,
    explanation: Vec<RuleTrace>,
) -> Decision {
    let boost = f.campaign.map_or(0, |c| c.priority_boost);
    let rule = matched.map(|i| &plan.rules[i]);
    let (queue, priority, note) = match rule.and_then(|r| target_queue(r, &f).map(|q| (r, q))) {
        Some((r, q)) => (q, r.action.priority, r.action.note.clone()),
        None => (
            plan.default_route.queue,
            plan.default_route.priority,
            plan.default_route.note.clone(),
        ),
    };
    let preferred_agent_id = rule.and_then(|r| r.action.preferred_agent).and_then(|p| {
        let c = f.customer?;
        let id = match p {
            PreferredAgent::LastAgent => &c.last_agent_id,
            PreferredAgent::PreferredAgent => &c.preferred_agent_id,
        };
        (!id.is_empty()).then(|| id.clone())
    });
    let q = &plan.queues[queue];
    let customer = f.customer;
    Decision {
        queue_id: q.id.clone(),
        queue_contact_uri: q.contact_uri.clone(),
        priority: priority.saturating_add(boost),
        rule_id: rule.map(|r| r.id.clone()),
        plan_version: plan.version,
        campaign_id: f.campaign.map(|c| c.id.clone()),
        extra_skills: rule
            .map(|r| r.action.extra_skills.clone())
            .unwrap_or_default(),
        preferred_agent_timeout_secs: if preferred_agent_id.is_some() {
            rule.map_or(0, |r| r.action.preferred_agent_timeout_secs)
        } else {
            0
        },
        preferred_agent_id,
        offer_callback: rule.map_or(OfferCallback::Auto, |r| r.action.offer_callback),
        queue_open: q.is_open(f.now),
        agent_context: AgentContext {
            customer_id: customer
                .map(|c| c.id.as_str().to_owned())
                .unwrap_or_default(),
            customer_name: customer.map(|c| c.display_name.clone()).unwrap_or_default(),
            customer_status: f.customer_status().unwrap_or("").to_owned(),
            customer_notes: customer.map(|c| c.notes.clone()).unwrap_or_default(),
            language: f.language.clone().unwrap_or_default(),
            campaign_id: f.campaign.map(|c| c.id.clone()).unwrap_or_default(),
            campaign_script: f.campaign.map(|c| c.script.clone()).unwrap_or_default(),
            rule_note: note,
        },
        location: f.location,
        explanation,
        rule_index: matched,
        queue_index: queue,
    }
}
