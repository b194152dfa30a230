//! `CallbackService` (customers, supervisors) and `DispatchService` (dialers).

use std::pin::Pin;

use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status};
use tracing::instrument;

use super::convert::{duration, instant, timestamp};
use super::drain::UntilDrained;
use super::error::{invalid_argument, unknown_enum_value};
use super::pb::{
    self, callback_service_server::CallbackService, dispatch_service_server::DispatchService,
};
use super::{ready, Ready};
use crate::domain::callback::{CallbackKind, CallbackState, DispatchOutcome};
use crate::domain::limits::MAX_TEXT_LEN;
use crate::domain::{check_id, check_text, FieldViolation, PhoneNumber};
use crate::scheduler::DispatchMsg;
use crate::service::callbacks::{CallbackRequest, CallbackView};
use crate::store::CallbackFilter;

/// Days `ListSlots` covers when the request leaves `days` unset.
const DEFAULT_SLOT_DAYS: u32 = 7;

pub struct CallbackApi {
    pub ready: Ready,
    /// Callback-bombing limits: requests per phone number and per principal.
    pub limits: std::sync::Arc<crate::auth::limits::CallbackLimits>,
}

/// Whether the caller sees every callback (supervisors) or only the ones it created
/// (customer channels).
fn sees_all(p: &Principal) -> bool {
    p.has_any(&[Role::Supervisor])
}

/// A customer principal may only see and change its own callbacks; others are answered
/// as if they did not exist.
fn check_owner(p: &Principal, cb: &pb::Callback) -> Result<(), Status> {
    if sees_all(p) || cb.created_by == p.name() {
        Ok(())
    } else {
        Err(Status::not_found(format!(
            "callback {} not found",
            cb.callback_id
        )))
    }
}

/// Who may ask for a callback, and how: turning a live call into a callback
/// (`call_id`) is the telephony platform's IVR or a supervisor, since a customer
/// channel that could name any call id could take a stranger's call out of the line;
/// web and app channels (customer role) ask by phone number. A telephony principal asks
/// only from a live call. Checked after the fields, so a malformed request gets
/// INVALID_ARGUMENT whoever sends it.
fn check_requester(p: &Principal, from_call: bool) -> Result<(), Status> {
    if from_call && !p.has_any(&[Role::Telephony, Role::Supervisor]) {
        return Err(Status::permission_denied(
            "call_id: requests from a live call come from the telephony platform's IVR; \
             customer channels request a callback by phone_number",
        ));
    }
    if !from_call && !p.has_any(&[Role::Customer, Role::Supervisor]) {
        return Err(Status::permission_denied(
            "the telephony role requests callbacks from a live call only: give call_id",
        ));
    }
    Ok(())
}

/// What a request that merged into another principal's open callback (one open
/// callback per number and queue) learns of it: that there is one, its state and kind,
/// its place in line and estimated wait, the slot for a scheduled one. Never the notes,
/// the creator or the customer fields (customer id, time zone, origin call): a web
/// form that types someone's number must not read what another channel stored.
fn merged_view(cb: pb::Callback) -> pb::Callback {
    pb::Callback {
        callback_id: cb.callback_id,
        state: cb.state,
        kind: cb.kind,
        phone_number: cb.phone_number,
        queue_id: cb.queue_id,
        slot_start: cb.slot_start,
        slot_end: cb.slot_end,
        position: cb.position,
        estimated_wait: cb.estimated_wait,
        ..Default::default()
    }
}

pub struct DispatchApi {
    pub ready: Ready,
    /// Turns true when the server starts shutting down: every open `WatchDispatches`
    /// stream then ends at once (see [`DrainingStream`]).
    pub draining: tokio::sync::watch::Receiver<bool>,
}

use super::principal;
use crate::auth::{Principal, Role};

fn state_to_pb(s: CallbackState) -> pb::CallbackState {
    match s {
        CallbackState::Pending => pb::CallbackState::Pending,
        CallbackState::Dispatched => pb::CallbackState::Dispatched,
        CallbackState::Completed => pb::CallbackState::Completed,
        CallbackState::Failed => pb::CallbackState::Failed,
        CallbackState::Cancelled => pb::CallbackState::Cancelled,
        CallbackState::Expired => pb::CallbackState::Expired,
    }
}

fn outcome_to_pb(o: DispatchOutcome) -> pb::DispatchOutcome {
    match o {
        DispatchOutcome::Connected => pb::DispatchOutcome::Connected,
        DispatchOutcome::NoAnswer => pb::DispatchOutcome::NoAnswer,
        DispatchOutcome::Busy => pb::DispatchOutcome::Busy,
        DispatchOutcome::Voicemail => pb::DispatchOutcome::Voicemail,
        DispatchOutcome::Failed => pb::DispatchOutcome::Failed,
        DispatchOutcome::InvalidNumber => pb::DispatchOutcome::InvalidNumber,
    }
}

pub fn callback_to_pb(v: CallbackView) -> pb::Callback {
    let CallbackView {
        callback: c,
        position,
    } = v;
    let (kind, slot_start, slot_end) = match c.kind {
        CallbackKind::Asap => (pb::CallbackKind::Asap, None, None),
        CallbackKind::Scheduled { start, end } => (
            pb::CallbackKind::Scheduled,
            Some(timestamp(start)),
            Some(timestamp(end)),
        ),
    };
    pb::Callback {
        callback_id: c.id,
        state: state_to_pb(c.state) as i32,
        kind: kind as i32,
        phone_number: c.phone,
        customer_id: c.customer_id.unwrap_or_default(),
        queue_id: c.queue_id,
        slot_start,
        slot_end,
        time_zone: c.time_zone,
        virtual_enqueue_time: Some(timestamp(c.virtual_enqueued_at)),
        priority: c.priority,
        attempts: c.attempts,
        max_attempts: c.max_attempts,
        next_attempt_time: Some(timestamp(c.not_before)),
        create_time: Some(timestamp(c.created_at)),
        update_time: Some(timestamp(c.updated_at)),
        expire_time: Some(timestamp(c.expires_at)),
        cancel_reason: c.cancel_reason.unwrap_or_default(),
        last_outcome: c
            .last_outcome
            .map_or(pb::DispatchOutcome::Unspecified, outcome_to_pb) as i32,
        origin_call_id: c.origin_call_id.unwrap_or_default(),
        notes: c.notes,
        created_by: c.created_by,
        position: position.map_or(0, |(p, _)| p),
        estimated_wait: position.and_then(|(_, w)| w).map(duration),
    }
}

fn callback_id(field: &str, v: &str) -> Result<String, Status> {
    let mut out = Vec::new();
    check_id(field, v, &mut out).ok_or_else(|| invalid_argument(&out))
}

/// A slot from the wire: both ends or neither.
fn slot(
    start: Option<prost_types::Timestamp>,
    end: Option<prost_types::Timestamp>,
    v: &mut Vec<FieldViolation>,
) -> Option<(chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>)> {
    match (start, end) {
        (None, None) => None,
        (Some(s), Some(e)) => match (instant(&s), instant(&e)) {
            (Some(s), Some(e)) if e > s => Some((s, e)),
            (Some(_), Some(_)) => {
                v.push(FieldViolation::new("slot_end", "must be after slot_start"));
                None
            }
            _ => {
                v.push(FieldViolation::new("slot_start", "is out of range"));
                None
            }
        },
        _ => {
            v.push(FieldViolation::new(
                "slot_end",
                "give both slot_start and slot_end, or neither",
            ));
            None
        }
    }
}

type DispatchStream = Pin<Box<dyn Stream<Item = Result<pb::Dispatch, Status>> + Send>>;

#[tonic::async_trait]
impl CallbackService for CallbackApi {
    #[instrument(level = "debug", skip_all)]
    async fn request_callback(
        &self,
        request: Request<pb::RequestCallbackRequest>,
    ) -> Result<Response<pb::RequestCallbackResponse>, Status> {
        let holdless = ready(&self.ready)?;
        let who = principal(&request);
        let pb::RequestCallbackRequest {
            request_id,
            call_id,
            queue_id,
            phone_number,
            customer_id,
            slot_start,
            slot_end,
            time_zone,
            notes,
        } = request.into_inner();
        let mut v = Vec::new();
        let opt_id = |field: &str, s: &str, v: &mut Vec<FieldViolation>| {
            if s.is_empty() {
                None
            } else {
                check_id(field, s, v)
            }
        };
        let request_id = opt_id("request_id", &request_id, &mut v);
        let call_id = opt_id("call_id", &call_id, &mut v);
        let queue_id = opt_id("queue_id", &queue_id, &mut v);
        let customer_id = opt_id("customer_id", &customer_id, &mut v);
        let phone = if phone_number.is_empty() {
            None
        } else {
            match PhoneNumber::parse(&phone_number) {
                Ok(p) => Some(p),
                Err(e) => {
                    v.push(FieldViolation::new("phone_number", e.to_string()));
                    None
                }
            }
        };
        if call_id.is_none() && queue_id.is_none() {
            v.push(FieldViolation::new(
                "queue_id",
                "is required without call_id",
            ));
        }
        if call_id.is_none() && phone_number.is_empty() {
            v.push(FieldViolation::new(
                "phone_number",
                "is required without call_id",
            ));
        }
        let slot = slot(slot_start, slot_end, &mut v);
        let time_zone = if time_zone.is_empty() {
            None
        } else {
            match time_zone.parse() {
                Ok(tz) => Some(tz),
                Err(_) => {
                    v.push(FieldViolation::new(
                        "time_zone",
                        format!("'{time_zone}' is not an IANA time zone"),
                    ));
                    None
                }
            }
        };
        let notes = check_text("notes", &notes, MAX_TEXT_LEN, &mut v);
        let Some(notes) = notes.filter(|_| v.is_empty()) else {
            return Err(invalid_argument(&v));
        };
        check_requester(&who, call_id.is_some())?;
        // Abuse limits count every request naming a number (a web form hammered with
        // one victim's number gets RESOURCE_EXHAUSTED, and nothing is stored).
        if let Some(p) = &phone {
            self.limits.admit(p.as_str(), who.name())?;
        }
        let (view, created) = holdless
            .request_callback(CallbackRequest {
                request_id,
                call_id,
                queue_id,
                phone,
                customer_id,
                slot,
                time_zone,
                notes,
                principal: who.name().to_owned(),
            })
            .await?;
        let cb = callback_to_pb(view);
        let cb = if sees_all(&who) || cb.created_by == who.name() {
            cb
        } else {
            merged_view(cb)
        };
        Ok(Response::new(pb::RequestCallbackResponse {
            callback: Some(cb),
            created,
        }))
    }

    #[instrument(level = "debug", skip_all)]
    async fn get_callback(
        &self,
        request: Request<pb::GetCallbackRequest>,
    ) -> Result<Response<pb::GetCallbackResponse>, Status> {
        let holdless = ready(&self.ready)?;
        let who = principal(&request);
        let id = callback_id("callback_id", &request.into_inner().callback_id)?;
        let cb = callback_to_pb(holdless.get_callback(&id).await?);
        check_owner(&who, &cb)?;
        Ok(Response::new(pb::GetCallbackResponse {
            callback: Some(cb),
        }))
    }

    #[instrument(level = "debug", skip_all)]
    async fn list_callbacks(
        &self,
        request: Request<pb::ListCallbacksRequest>,
    ) -> Result<Response<pb::ListCallbacksResponse>, Status> {
        let holdless = ready(&self.ready)?;
        let who = principal(&request);
        let pb::ListCallbacksRequest {
            queue_id,
            state,
            phone_number,
            page_size,
            page_token,
        } = request.into_inner();
        let mut v = Vec::new();
        let state = match pb::CallbackState::try_from(state) {
            Ok(pb::CallbackState::Unspecified) => None,
            Ok(pb::CallbackState::Pending) => Some(CallbackState::Pending),
            Ok(pb::CallbackState::Dispatched) => Some(CallbackState::Dispatched),
            Ok(pb::CallbackState::Completed) => Some(CallbackState::Completed),
            Ok(pb::CallbackState::Failed) => Some(CallbackState::Failed),
            Ok(pb::CallbackState::Cancelled) => Some(CallbackState::Cancelled),
            Ok(pb::CallbackState::Expired) => Some(CallbackState::Expired),
            Err(_) => {
                v.push(unknown_enum_value("state", state));
                None
            }
        };
        if page_size < 0 {
            v.push(FieldViolation::new("page_size", "must not be negative"));
        }
        let phone = if phone_number.is_empty() {
            None
        } else {
            PhoneNumber::parse(&phone_number)
                .map_err(|e| v.push(FieldViolation::new("phone_number", e.to_string())))
                .ok()
                .map(|p| p.as_str().to_owned())
        };
        // A page token is the last callback id of the previous page: anything that is
        // not a callback id did not come from this API, and answering it with an empty
        // page would look like the end of the list.
        let token = if page_token.is_empty() {
            None
        } else if ulid::Ulid::from_string(&page_token).is_ok() {
            Some(page_token)
        } else {
            v.push(FieldViolation::new(
                "page_token",
                "is not a next_page_token from a ListCallbacks reply",
            ));
            None
        };
        if !v.is_empty() {
            return Err(invalid_argument(&v));
        }
        let filter = CallbackFilter {
            queue_id: (!queue_id.is_empty()).then_some(queue_id),
            state,
            phone,
            created_by: (!sees_all(&who)).then(|| who.name().to_owned()),
        };
        let (items, next) = holdless
            .list_callbacks(filter, token, usize::try_from(page_size).unwrap_or(0))
            .await?;
        Ok(Response::new(pb::ListCallbacksResponse {
            callbacks: items.into_iter().map(callback_to_pb).collect(),
            next_page_token: next.unwrap_or_default(),
        }))
    }

    #[instrument(level = "debug", skip_all)]
    async fn reschedule_callback(
        &self,
        request: Request<pb::RescheduleCallbackRequest>,
    ) -> Result<Response<pb::RescheduleCallbackResponse>, Status> {
        let holdless = ready(&self.ready)?;
        let who = principal(&request);
        let pb::RescheduleCallbackRequest {
            callback_id: id,
            slot_start,
            slot_end,
        } = request.into_inner();
        let mut v = Vec::new();
        let id = check_id("callback_id", &id, &mut v);
        let slot = slot(slot_start, slot_end, &mut v);
        if slot.is_none() && v.is_empty() {
            v.push(FieldViolation::new("slot_start", "is required"));
        }
        let (Some(id), Some((start, end)), true) = (id, slot, v.is_empty()) else {
            return Err(invalid_argument(&v));
        };
        check_owner(&who, &callback_to_pb(holdless.get_callback(&id).await?))?;
        let view = holdless.reschedule_callback(&id, start, end).await?;
        Ok(Response::new(pb::RescheduleCallbackResponse {
            callback: Some(callback_to_pb(view)),
        }))
    }

    #[instrument(level = "debug", skip_all)]
    async fn cancel_callback(
        &self,
        request: Request<pb::CancelCallbackRequest>,
    ) -> Result<Response<pb::CancelCallbackResponse>, Status> {
        let holdless = ready(&self.ready)?;
        let who = principal(&request);
        let pb::CancelCallbackRequest {
            callback_id: id,
            reason,
        } = request.into_inner();
        let mut v = Vec::new();
        let id = check_id("callback_id", &id, &mut v);
        let reason = check_text("reason", &reason, 256, &mut v);
        let (Some(id), Some(reason)) = (id, reason) else {
            return Err(invalid_argument(&v));
        };
        let reason = if reason.is_empty() {
            "cancelled".to_owned()
        } else {
            reason
        };
        check_owner(&who, &callback_to_pb(holdless.get_callback(&id).await?))?;
        let view = holdless.cancel_callback(&id, reason.clone()).await?;
        if sees_all(&who) {
            // Supervisors' cancels go into the audit log (customers cancel their own).
            let entry = crate::domain::audit::AuditEntry {
                seq: 0,
                time: holdless.clock().now(),
                principal: who.name().to_owned(),
                action: crate::domain::audit::AuditAction::CallbackCancel,
                target: format!("callback {id}"),
                request_id: String::new(),
                detail: reason,
                author: String::new(),
            };
            if let Err(e) = holdless.audit(entry).await {
                tracing::error!(callback_id = %id, error = %e, "callback cancelled but not audited");
            }
        }
        Ok(Response::new(pb::CancelCallbackResponse {
            callback: Some(callback_to_pb(view)),
        }))
    }

    #[instrument(level = "debug", skip_all)]
    async fn list_slots(
        &self,
        request: Request<pb::ListSlotsRequest>,
    ) -> Result<Response<pb::ListSlotsResponse>, Status> {
        let holdless = ready(&self.ready)?;
        let pb::ListSlotsRequest {
            queue_id,
            time_zone,
            days,
        } = request.into_inner();
        let mut v = Vec::new();
        let queue = check_id("queue_id", &queue_id, &mut v);
        let tz = if time_zone.is_empty() {
            None
        } else {
            time_zone
                .parse()
                .map_err(|_| v.push(FieldViolation::new("time_zone", "is not an IANA time zone")))
                .ok()
        };
        // One horizon for listing and booking (callbacks.slot_horizon_days): a slot
        // this lists can be booked, and nothing further out can.
        let horizon = holdless.slot_horizon_days();
        if days > horizon {
            v.push(FieldViolation::new(
                "days",
                format!("at most {horizon} (slots are booked at most {horizon} days ahead)"),
            ));
        }
        let (Some(queue), true) = (queue, v.is_empty()) else {
            return Err(invalid_argument(&v));
        };
        let days = if days == 0 {
            DEFAULT_SLOT_DAYS.min(horizon)
        } else {
            days
        };
        let slots = holdless.list_slots(&queue, tz, days).await?;
        Ok(Response::new(pb::ListSlotsResponse {
            slots: slots
                .into_iter()
                .map(|s| pb::Slot {
                    start: Some(timestamp(s.start)),
                    end: Some(timestamp(s.end)),
                    free: s.free,
                })
                .collect(),
        }))
    }
}

fn dispatch_to_pb(d: DispatchMsg) -> pb::Dispatch {
    let attempt_number = d.callback.attempts;
    pb::Dispatch {
        attempt_id: d.attempt_id,
        callback: Some(callback_to_pb(CallbackView {
            callback: d.callback,
            position: None,
        })),
        agent_id: d.agent_id.unwrap_or_default(),
        lease_deadline: Some(timestamp(d.lease_until)),
        attempt_number,
    }
}

#[tonic::async_trait]
impl DispatchService for DispatchApi {
    type WatchDispatchesStream = DispatchStream;

    #[instrument(level = "debug", skip_all, fields(dialer_id = %request.get_ref().dialer_id))]
    async fn watch_dispatches(
        &self,
        request: Request<pb::WatchDispatchesRequest>,
    ) -> Result<Response<Self::WatchDispatchesStream>, Status> {
        let holdless = ready(&self.ready)?;
        let dialer = callback_id("dialer_id", &request.into_inner().dialer_id)?;
        if *self.draining.borrow() {
            return Err(Status::unavailable("draining: holdless is shutting down"));
        }
        let rx = holdless.watch_dispatches(dialer).await?;
        // Ending the stream at shutdown costs nothing: the dispatches already sent keep
        // their leases in the store, and a lease that runs out while holdless is down
        // sends the same attempt again after the next start. Dispatches queued for this
        // dialer but not yet sent are leased as well and go out again the same way.
        let dispatches = ReceiverStream::new(rx).map(|d| Ok(dispatch_to_pb(d)));
        Ok(Response::new(Box::pin(UntilDrained::new(
            dispatches,
            self.draining.clone(),
            "draining: holdless is shutting down; reconnect after it restarts \
             (dispatches already sent keep their leases)",
        ))))
    }

    #[instrument(level = "debug", skip_all, fields(attempt_id = %request.get_ref().attempt_id))]
    async fn report_dispatch_outcome(
        &self,
        request: Request<pb::ReportDispatchOutcomeRequest>,
    ) -> Result<Response<pb::ReportDispatchOutcomeResponse>, Status> {
        let holdless = ready(&self.ready)?;
        let pb::ReportDispatchOutcomeRequest {
            attempt_id,
            outcome,
        } = request.into_inner();
        let mut v = Vec::new();
        let attempt = check_id("attempt_id", &attempt_id, &mut v);
        let outcome = match pb::DispatchOutcome::try_from(outcome) {
            Ok(pb::DispatchOutcome::Connected) => Some(DispatchOutcome::Connected),
            Ok(pb::DispatchOutcome::NoAnswer) => Some(DispatchOutcome::NoAnswer),
            Ok(pb::DispatchOutcome::Busy) => Some(DispatchOutcome::Busy),
            Ok(pb::DispatchOutcome::Voicemail) => Some(DispatchOutcome::Voicemail),
            Ok(pb::DispatchOutcome::Failed) => Some(DispatchOutcome::Failed),
            Ok(pb::DispatchOutcome::InvalidNumber) => Some(DispatchOutcome::InvalidNumber),
            Ok(pb::DispatchOutcome::Unspecified) => {
                v.push(FieldViolation::new("outcome", "is required"));
                None
            }
            Err(_) => {
                v.push(unknown_enum_value("outcome", outcome));
                None
            }
        };
        let (Some(attempt), Some(outcome)) = (attempt, outcome) else {
            return Err(invalid_argument(&v));
        };
        let (duplicate, view) = holdless.report_dispatch_outcome(attempt, outcome).await?;
        Ok(Response::new(pb::ReportDispatchOutcomeResponse {
            duplicate,
            callback: Some(callback_to_pb(view)),
        }))
    }
}
