//! Wire <-> domain conversions. Requests are destructured field by field, so a new
//! proto field fails the build here until it is handled.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use tonic::Status;

use super::error::invalid_argument;
use super::pb;
use crate::domain::agent::{AgentState, Skills};
use crate::domain::audit::{AuditAction, AuditEntry};
use crate::domain::contact::ContactOutcome;
use crate::domain::limits::*;
use crate::domain::{
    call::is_dialed_number, check_id, check_text, Call, CallId, Customer, CustomerId,
    FieldViolation, Location, PhoneNumber,
};
use crate::live::CallEvent;
use crate::routing::offer::OfferReason;
use crate::routing::{Decision, RuleTrace, TraceOutcome};
use crate::service::RouteOutcome;
use crate::store::PlanRecord;

pub fn duration(d: std::time::Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: d.subsec_nanos() as i32,
    }
}

/// A wire timestamp as a UTC instant; `None` when out of range.
pub fn instant(t: &prost_types::Timestamp) -> Option<DateTime<Utc>> {
    DateTime::<Utc>::from_timestamp(t.seconds, u32::try_from(t.nanos).ok()?)
}

/// A wire duration as a std duration; `None` when negative or out of range.
pub fn std_duration(d: &prost_types::Duration) -> Option<std::time::Duration> {
    let secs = u64::try_from(d.seconds).ok()?;
    let nanos = u32::try_from(d.nanos).ok().filter(|n| *n < 1_000_000_000)?;
    Some(std::time::Duration::new(secs, nanos))
}

pub fn timestamp(t: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos() as i32,
    }
}

fn phone(field: &str, v: &str, out: &mut Vec<FieldViolation>) -> Option<PhoneNumber> {
    PhoneNumber::parse(v)
        .map_err(|e| out.push(FieldViolation::new(field, e.to_string())))
        .ok()
}

fn label(field: &str, v: &str, out: &mut Vec<FieldViolation>) -> Option<String> {
    if v.is_empty() {
        return None;
    }
    check_text(field, v, MAX_LABEL_LEN, out)
}

fn time_zone(field: &str, v: &str, out: &mut Vec<FieldViolation>) -> Option<Tz> {
    if v.is_empty() {
        return None;
    }
    v.parse::<Tz>()
        .map_err(|_| {
            out.push(FieldViolation::new(
                field,
                format!("'{v}' is not an IANA time zone (e.g. Europe/London)"),
            ))
        })
        .ok()
}

fn location(field: &str, l: pb::Location, out: &mut Vec<FieldViolation>) -> Option<Location> {
    let pb::Location {
        country,
        region,
        time_zone: tz,
    } = l;
    if country.is_empty() && region.is_empty() && tz.is_empty() {
        return None;
    }
    let country = if country.is_empty() {
        None
    } else if country.len() == 2 && country.bytes().all(|b| b.is_ascii_alphabetic()) {
        Some(country.to_ascii_uppercase())
    } else {
        out.push(FieldViolation::new(
            format!("{field}.country"),
            "must be an ISO 3166-1 alpha-2 code like GB",
        ));
        None
    };
    Some(Location {
        country,
        region: label(&format!("{field}.region"), &region, out),
        time_zone: time_zone(&format!("{field}.time_zone"), &tz, out),
    })
}

impl TryFrom<pb::RouteCallRequest> for Call {
    type Error = Status;

    fn try_from(req: pb::RouteCallRequest) -> Result<Self, Status> {
        call_from_pb(req).map_err(|v| invalid_argument(&v))
    }
}

/// A call from the wire, or every field violation (paths as the client named them).
pub fn call_from_pb(req: pb::RouteCallRequest) -> Result<Call, Vec<FieldViolation>> {
    {
        let pb::RouteCallRequest {
            call_id,
            caller_number,
            dialed_number,
            customer_id,
            intent,
            language,
            tracking_code,
            attributes,
            location: explicit_location,
            received_time: _,
            explain,
            // A mode of the request, not part of the call: read by the handler.
            dry_run: _,
        } = req;
        let mut v = Vec::new();
        let call_id = check_id("call_id", &call_id, &mut v);
        let caller = if caller_number.is_empty() {
            None
        } else {
            phone("caller_number", &caller_number, &mut v)
        };
        let dialed = if dialed_number.is_empty() {
            None
        } else if is_dialed_number(&dialed_number) {
            Some(dialed_number)
        } else {
            v.push(FieldViolation::new(
                "dialed_number",
                "must be digits with an optional leading + (2 to 20 digits)",
            ));
            None
        };
        let customer_id = if customer_id.is_empty() {
            None
        } else {
            check_id("customer_id", &customer_id, &mut v).map(CustomerId::new_checked)
        };
        if attributes.len() > MAX_ATTRIBUTES {
            v.push(FieldViolation::new(
                "attributes",
                format!(
                    "at most {MAX_ATTRIBUTES} attributes, got {}",
                    attributes.len()
                ),
            ));
        }
        let mut attrs = BTreeMap::new();
        for (k, val) in attributes.into_iter().take(MAX_ATTRIBUTES) {
            let field = format!("attributes[{k:.64}]");
            if k.is_empty() || k.len() > MAX_ATTRIBUTE_KEY_LEN {
                v.push(FieldViolation::new(
                    field,
                    format!("key must be 1 to {MAX_ATTRIBUTE_KEY_LEN} bytes"),
                ));
                continue;
            }
            if let Some(val) = check_text(&field, &val, MAX_ATTRIBUTE_VALUE_LEN, &mut v) {
                attrs.insert(k, val);
            }
        }
        let location_override = explicit_location.and_then(|l| location("location", l, &mut v));
        let intent = label("intent", &intent, &mut v);
        let language = label("language", &language, &mut v);
        let tracking_code = label("tracking_code", &tracking_code, &mut v);
        let (Some(call_id), true) = (call_id, v.is_empty()) else {
            return Err(v);
        };
        Ok(Call {
            call_id: CallId::new_checked(call_id),
            caller,
            dialed,
            customer_id,
            intent,
            language,
            tracking_code,
            attributes: attrs,
            location_override,
            explain,
            transfer_loop: false,
        })
    }
}

/// Builds a domain customer from the wire; `updated_at` is set by the service.
pub fn customer_from_pb(c: Option<pb::Customer>) -> Result<Customer, Status> {
    let Some(c) = c else {
        return Err(invalid_argument(&[FieldViolation::new(
            "customer",
            "is required",
        )]));
    };
    let pb::Customer {
        customer_id,
        display_name,
        phone_numbers,
        status,
        language,
        time_zone: tz,
        last_agent_id,
        preferred_agent_id,
        notes,
        do_not_call,
        update_time: _,
    } = c;
    let mut v = Vec::new();
    let id = check_id("customer.customer_id", &customer_id, &mut v);
    if phone_numbers.len() > MAX_CUSTOMER_PHONES {
        v.push(FieldViolation::new(
            "customer.phone_numbers",
            format!("at most {MAX_CUSTOMER_PHONES} numbers"),
        ));
    }
    let phones: Vec<String> = phone_numbers
        .iter()
        .enumerate()
        .filter_map(|(i, p)| phone(&format!("customer.phone_numbers[{i}]"), p, &mut v))
        .map(|p| p.as_str().to_owned())
        .collect();
    let agent = |field: &str, a: &str, v: &mut Vec<FieldViolation>| {
        if a.is_empty() {
            String::new()
        } else {
            check_id(field, a, v).unwrap_or_default()
        }
    };
    let display_name = check_text(
        "customer.display_name",
        &display_name,
        MAX_LABEL_LEN * 4,
        &mut v,
    );
    let status = label("customer.status", &status, &mut v).unwrap_or_default();
    let language = label("customer.language", &language, &mut v).unwrap_or_default();
    let time_zone = time_zone("customer.time_zone", &tz, &mut v);
    let last_agent_id = agent("customer.last_agent_id", &last_agent_id, &mut v);
    let preferred_agent_id = agent("customer.preferred_agent_id", &preferred_agent_id, &mut v);
    let notes = check_text("customer.notes", &notes, MAX_TEXT_LEN, &mut v);
    let (Some(id), Some(display_name), Some(notes), true) = (id, display_name, notes, v.is_empty())
    else {
        return Err(invalid_argument(&v));
    };
    Ok(Customer {
        id: CustomerId::new_checked(id),
        display_name,
        phones,
        status,
        language,
        time_zone,
        last_agent_id,
        preferred_agent_id,
        notes,
        do_not_call,
        updated_at: DateTime::<Utc>::UNIX_EPOCH,
    })
}

impl From<Customer> for pb::Customer {
    fn from(c: Customer) -> Self {
        pb::Customer {
            customer_id: c.id.as_str().to_owned(),
            display_name: c.display_name,
            phone_numbers: c.phones,
            status: c.status,
            language: c.language,
            time_zone: c.time_zone.map(|t| t.name().to_owned()).unwrap_or_default(),
            last_agent_id: c.last_agent_id,
            preferred_agent_id: c.preferred_agent_id,
            notes: c.notes,
            do_not_call: c.do_not_call,
            update_time: Some(timestamp(c.updated_at)),
        }
    }
}

impl From<Location> for pb::Location {
    fn from(l: Location) -> Self {
        pb::Location {
            country: l.country.unwrap_or_default(),
            region: l.region.unwrap_or_default(),
            time_zone: l.time_zone.map(|t| t.name().to_owned()).unwrap_or_default(),
        }
    }
}

impl From<RuleTrace> for pb::RuleTrace {
    fn from(t: RuleTrace) -> Self {
        let (outcome, failed_matcher, detail) = match t.outcome {
            TraceOutcome::Matched => (pb::RuleOutcome::Matched, String::new(), "matched".into()),
            TraceOutcome::Failed { matcher, detail } => {
                (pb::RuleOutcome::Failed, matcher.to_owned(), detail)
            }
            TraceOutcome::Disabled => (pb::RuleOutcome::Disabled, String::new(), "disabled".into()),
        };
        pb::RuleTrace {
            rule_id: t.rule_id,
            outcome: outcome as i32,
            failed_matcher,
            detail,
        }
    }
}

fn contact_outcome(o: ContactOutcome) -> pb::ContactOutcome {
    match o {
        ContactOutcome::Answered => pb::ContactOutcome::Answered,
        ContactOutcome::Completed => pb::ContactOutcome::Completed,
        ContactOutcome::Abandoned => pb::ContactOutcome::Abandoned,
        ContactOutcome::Transferred => pb::ContactOutcome::Transferred,
    }
}

fn offer_reason(r: OfferReason) -> pb::OfferReason {
    match r {
        OfferReason::LongWait => pb::OfferReason::LongWait,
        OfferReason::QueueClosed => pb::OfferReason::QueueClosed,
        OfferReason::QueueFull => pb::OfferReason::QueueFull,
        OfferReason::NoAgents => pb::OfferReason::NoAgents,
        OfferReason::Rule => pb::OfferReason::Rule,
    }
}

pub fn decision_to_pb(decision_id: String, outcome: RouteOutcome) -> pb::RoutingDecision {
    let RouteOutcome {
        decision,
        placement,
        offer,
        recent_contacts,
        transfer_count,
        transfer_loop,
        visited_queues,
        decided_at: _,
        dry_run,
    } = outcome;
    let Decision {
        queue_id,
        queue_contact_uri,
        priority,
        rule_id,
        plan_version,
        location,
        campaign_id,
        extra_skills,
        preferred_agent_id,
        preferred_agent_timeout_secs,
        offer_callback: _,
        queue_open,
        agent_context,
        explanation,
        rule_index: _,
        queue_index: _,
    } = decision;
    pb::RoutingDecision {
        decision_id,
        queue_id,
        priority,
        default_route: rule_id.is_none(),
        rule_id: rule_id.unwrap_or_default(),
        plan_version,
        location: Some(location.into()),
        campaign_id: campaign_id.unwrap_or_default(),
        extra_skills,
        preferred_agent_id: preferred_agent_id.unwrap_or_default(),
        preferred_agent_timeout_seconds: preferred_agent_timeout_secs,
        queue_open,
        agent_context: Some(pb::AgentContext {
            customer_id: agent_context.customer_id,
            customer_name: agent_context.customer_name,
            customer_status: agent_context.customer_status,
            customer_notes: agent_context.customer_notes,
            language: agent_context.language,
            campaign_id: agent_context.campaign_id,
            campaign_script: agent_context.campaign_script,
            rule_note: agent_context.rule_note,
            recent_contacts: recent_contacts
                .into_iter()
                .map(|c| pb::RecentContact {
                    call_id: c.call_id,
                    queue_id: c.queue_id,
                    outcome: contact_outcome(c.outcome) as i32,
                    time: Some(timestamp(c.enqueued_at)),
                    agent_id: c.agent_id.unwrap_or_default(),
                })
                .collect(),
            transfer_count,
            transfer_loop,
            visited_queues,
        }),
        explanation: explanation.into_iter().map(Into::into).collect(),
        position: placement.position,
        estimated_wait: placement.estimated_wait.map(duration),
        reserved_agent_id: placement.reserved_agent.unwrap_or_default(),
        offer_callback: offer.is_some(),
        offer_reason: offer.map_or(pb::OfferReason::Unspecified, offer_reason) as i32,
        queue_contact_uri,
        dry_run,
    }
}

/// An agent state report, checked.
pub fn agent_report_from_pb(
    r: pb::ReportAgentStateRequest,
) -> Result<(String, Skills, AgentState, DateTime<Utc>), Status> {
    let pb::ReportAgentStateRequest {
        agent_id,
        skills,
        state,
        event_time,
    } = r;
    let mut v = Vec::new();
    let id = check_id("agent_id", &agent_id, &mut v);
    let state = match pb::AgentState::try_from(state) {
        Ok(pb::AgentState::Offline) => Some(AgentState::Offline),
        Ok(pb::AgentState::Available) => Some(AgentState::Available),
        Ok(pb::AgentState::Busy) => Some(AgentState::Busy),
        Ok(pb::AgentState::WrapUp) => Some(AgentState::WrapUp),
        Ok(pb::AgentState::Reserved) => {
            v.push(FieldViolation::new(
                "state",
                "AGENT_STATE_RESERVED is holdless's own state; report AGENT_STATE_AVAILABLE, \
                 AGENT_STATE_BUSY, AGENT_STATE_WRAP_UP or AGENT_STATE_OFFLINE",
            ));
            None
        }
        Ok(pb::AgentState::Unspecified) => {
            v.push(FieldViolation::new("state", "is required"));
            None
        }
        Err(_) => {
            v.push(super::error::unknown_enum_value("state", state));
            None
        }
    };
    if skills.len() > MAX_AGENT_SKILLS {
        v.push(FieldViolation::new(
            "skills",
            format!("at most {MAX_AGENT_SKILLS} skills"),
        ));
    }
    let mut checked = Skills::new();
    for (name, level) in skills {
        let field = format!("skills[{name:.64}]");
        if name.is_empty() || name.len() > MAX_LABEL_LEN {
            v.push(FieldViolation::new(
                field,
                format!("name must be 1 to {MAX_LABEL_LEN} bytes"),
            ));
        } else if level == 0 {
            v.push(FieldViolation::new(field, "level must be 1 or more"));
        } else {
            checked.insert(name, level);
        }
    }
    let at = match event_time.as_ref().map(instant) {
        Some(Some(t)) => Some(t),
        Some(None) => {
            v.push(FieldViolation::new("event_time", "is out of range"));
            None
        }
        None => {
            v.push(FieldViolation::new(
                "event_time",
                "is required (it orders an agent's events)",
            ));
            None
        }
    };
    match (id, state, at) {
        (Some(id), Some(state), Some(at)) if v.is_empty() => Ok((id, checked, state, at)),
        _ => Err(invalid_argument(&v)),
    }
}

/// A call event, checked.
pub fn call_event_from_pb(r: pb::ReportCallEventRequest) -> Result<(String, CallEvent), Status> {
    let pb::ReportCallEventRequest {
        call_id,
        r#type,
        agent_id,
        queue_id,
        handle_time,
    } = r;
    let mut v = Vec::new();
    let id = check_id("call_id", &call_id, &mut v);
    let queue = if queue_id.is_empty() {
        None
    } else {
        check_id("queue_id", &queue_id, &mut v)
    };
    let event = match pb::CallEventType::try_from(r#type) {
        Ok(pb::CallEventType::Queued) => Some(CallEvent::Queued { queue }),
        Ok(pb::CallEventType::Answered) => {
            check_id("agent_id", &agent_id, &mut v).map(|agent| CallEvent::Answered { agent })
        }
        Ok(pb::CallEventType::Transferred) => Some(CallEvent::Transferred { queue }),
        Ok(pb::CallEventType::Abandoned) => Some(CallEvent::Abandoned),
        Ok(pb::CallEventType::Ended) => {
            let handle = match handle_time.as_ref().map(std_duration) {
                None => None,
                Some(Some(d)) => Some(d),
                Some(None) => {
                    v.push(FieldViolation::new(
                        "handle_time",
                        "must be a non-negative duration",
                    ));
                    None
                }
            };
            Some(CallEvent::Ended {
                handle_time: handle,
            })
        }
        Ok(pb::CallEventType::Unspecified) => {
            v.push(FieldViolation::new("type", "is required"));
            None
        }
        Err(_) => {
            v.push(super::error::unknown_enum_value("type", r#type));
            None
        }
    };
    match (id, event) {
        (Some(id), Some(event)) if v.is_empty() => Ok((id, event)),
        _ => Err(invalid_argument(&v)),
    }
}

impl From<&PlanRecord> for pb::PlanVersion {
    fn from(r: &PlanRecord) -> Self {
        pb::PlanVersion {
            version: r.version,
            author: r.author.clone(),
            comment: r.comment.clone(),
            create_time: Some(timestamp(r.created_at)),
            content_hash: r.content_hash.clone(),
        }
    }
}

fn audit_action(a: AuditAction) -> pb::AuditAction {
    match a {
        AuditAction::PlanApply => pb::AuditAction::PlanApply,
        AuditAction::PlanRollback => pb::AuditAction::PlanRollback,
        AuditAction::PlanReload => pb::AuditAction::PlanReload,
        AuditAction::CustomerUpsert => pb::AuditAction::CustomerUpsert,
        AuditAction::CustomerDelete => pb::AuditAction::CustomerDelete,
        AuditAction::CallbackCancel => pb::AuditAction::CallbackCancel,
    }
}

impl From<AuditEntry> for pb::AuditEntry {
    fn from(e: AuditEntry) -> Self {
        let AuditEntry {
            seq,
            time,
            principal,
            action,
            target,
            request_id,
            detail,
            author,
        } = e;
        pb::AuditEntry {
            sequence: seq,
            time: Some(timestamp(time)),
            principal,
            action: audit_action(action) as i32,
            target,
            request_id,
            detail,
            author,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            "\\PC{0,40}",
            "\\+[0-9]{0,17}",
            Just(String::new()),
            "[a-z]{1,3}/[A-Za-z_]{1,12}",
        ]
    }

    proptest! {
        /// Whatever a client puts in a request, conversion answers Ok or a status, and
        /// an accepted call satisfies the domain's invariants.
        #[test]
        fn route_requests_never_panic_and_accepted_calls_are_valid(
            call_id in text(), caller in text(), dialed in text(), customer in text(),
            intent in text(), language in text(), code in text(),
            attrs in proptest::collection::btree_map("\\PC{0,70}", "\\PC{0,300}", 0..40),
            country in text(), tz in text(),
        ) {
            let req = pb::RouteCallRequest {
                call_id, caller_number: caller, dialed_number: dialed, customer_id: customer,
                intent, language, tracking_code: code,
                attributes: attrs.into_iter().collect(),
                location: Some(pb::Location { country, region: String::new(), time_zone: tz }),
                received_time: None, explain: false, dry_run: false,
            };
            if let Ok(call) = Call::try_from(req) {
                prop_assert!(!call.call_id.as_str().is_empty());
                prop_assert!(call.attributes.len() <= MAX_ATTRIBUTES);
                if let Some(c) = &call.caller {
                    prop_assert!(c.as_str().starts_with('+'));
                }
            }
        }

        /// Customer upserts and call events: never a panic.
        #[test]
        fn customer_and_event_requests_never_panic(
            id in text(), phones in proptest::collection::vec(text(), 0..20), tz in text(),
            status in text(), kind in -2i32..8, secs in any::<i64>(), nanos in any::<i32>(),
        ) {
            let _ = customer_from_pb(Some(pb::Customer {
                customer_id: id.clone(), phone_numbers: phones, time_zone: tz, status,
                ..Default::default()
            }));
            let _ = call_event_from_pb(pb::ReportCallEventRequest {
                call_id: id, r#type: kind, agent_id: String::new(), queue_id: String::new(),
                handle_time: Some(prost_types::Duration { seconds: secs, nanos }),
            });
        }
    }
}
