//! Callback operations: request (from an offered call or fresh), read, list, move,
//! cancel, slots, and the dialer side (watch dispatches, report outcomes).

use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use tokio::sync::mpsc;

use super::{queue_info, Holdless, ServiceError};
use crate::domain::callback::{Callback, CallbackKind, CallbackState, DispatchOutcome};
use crate::domain::phone::LineType;
use crate::domain::{FieldViolation, PhoneNumber};
use crate::scheduler::policy::{self, Slot};
use crate::scheduler::DispatchMsg;
use crate::store::{CallbackCreate, CallbackFilter, RequestKey};

/// A validated callback request.
#[derive(Debug, Clone)]
pub struct CallbackRequest {
    pub request_id: Option<String>,
    pub call_id: Option<String>,
    pub queue_id: Option<String>,
    pub phone: Option<PhoneNumber>,
    pub customer_id: Option<String>,
    pub slot: Option<(DateTime<Utc>, DateTime<Utc>)>,
    pub time_zone: Option<Tz>,
    pub notes: String,
    /// Who asks (customer tokens see only their own callbacks).
    pub principal: String,
}

impl CallbackRequest {
    /// The request's idempotency key: its `request_id` in the principal's own space,
    /// with a fingerprint of everything else it asks for.
    fn key(&self) -> Option<RequestKey> {
        let request_id = self.request_id.clone()?;
        Some(RequestKey {
            principal: self.principal.clone(),
            request_id,
            fingerprint: self.fingerprint(),
        })
    }

    /// Hex SHA-256 over a canonical encoding of the request's fields (each one tagged,
    /// absent or length-prefixed), so a retry of the same request matches and a reused
    /// key with any field changed does not.
    fn fingerprint(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        let mut field = |tag: u8, v: Option<&str>| {
            h.update([tag]);
            match v {
                None => h.update([0]),
                Some(v) => {
                    h.update([1]);
                    h.update((v.len() as u64).to_be_bytes());
                    h.update(v.as_bytes());
                }
            }
        };
        let instant = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
        field(1, self.call_id.as_deref());
        field(2, self.queue_id.as_deref());
        field(3, self.phone.as_ref().map(PhoneNumber::as_str));
        field(4, self.customer_id.as_deref());
        let slot = self.slot.map(|(s, e)| (instant(s), instant(e)));
        field(5, slot.as_ref().map(|(s, _)| s.as_str()));
        field(6, slot.as_ref().map(|(_, e)| e.as_str()));
        field(7, self.time_zone.map(|tz| tz.name()));
        field(8, Some(&self.notes));
        hex::encode(h.finalize())
    }
}

/// A callback with its live place in line (pending ASAP callbacks only).
#[derive(Debug, Clone)]
pub struct CallbackView {
    pub callback: Callback,
    pub position: Option<(u32, Option<Duration>)>,
}

/// Most callbacks per page.
pub const MAX_PAGE: usize = 500;
pub const DEFAULT_PAGE: usize = 50;

fn invalid(field: &str, msg: impl Into<String>) -> ServiceError {
    ServiceError::InvalidArgument(vec![FieldViolation::new(field, msg)])
}

impl Holdless {
    fn scheduler(&self) -> Result<&crate::scheduler::Scheduler, ServiceError> {
        self.scheduler
            .get()
            .ok_or_else(|| ServiceError::Unavailable("the callback scheduler is starting".into()))
    }

    /// The customer's zone: the request's, else the customer record's, else the
    /// number's location, else the queue's business-hours zone, else UTC.
    fn customer_zone(
        &self,
        req_tz: Option<Tz>,
        customer: Option<&crate::domain::Customer>,
        phone: &PhoneNumber,
        queue_tz: Option<Tz>,
    ) -> Tz {
        req_tz
            .or_else(|| customer.and_then(|c| c.time_zone))
            .or_else(|| {
                crate::routing::location::resolve_location(&self.active_plan(), Some(phone))
                    .time_zone
            })
            .or(queue_tz)
            .unwrap_or(chrono_tz::UTC)
    }

    pub async fn request_callback(
        &self,
        req: CallbackRequest,
    ) -> Result<(CallbackView, bool), ServiceError> {
        let now = self.clock.now();
        // A retry gets the first answer before anything else is looked at: the call it
        // named has left the line by now, and the slot may be full.
        let key = req.key();
        if let Some(k) = &key {
            if let Some(first) = self.store.requested_callback(k).await? {
                return Ok((self.view(first), false));
            }
        }
        let plan = self.active_plan();
        // From an offered call: its queue, priority, place in line and number.
        let taken = match &req.call_id {
            Some(call_id) => Some(
                self.with_floor(|f| f.peek_call(call_id))
                    .map_err(ServiceError::from)?,
            ),
            None => None,
        };
        let queue_id = match (&req.queue_id, &taken) {
            (Some(q), _) => q.clone(),
            (None, Some(t)) => t.queue.clone(),
            (None, None) => return Err(invalid("queue_id", "is required without call_id")),
        };
        let queue = plan.queue(&queue_id).ok_or_else(|| {
            invalid(
                "queue_id",
                format!("queue '{queue_id}' is not in the active plan"),
            )
        })?;
        if !queue.callback.enabled {
            return Err(ServiceError::FailedPrecondition(format!(
                "queue {queue_id} does not offer callbacks"
            )));
        }
        let phone = match (&req.phone, taken.as_ref().and_then(|t| t.caller.as_deref())) {
            (Some(p), _) => p.clone(),
            (None, Some(caller)) => {
                PhoneNumber::parse(caller).map_err(|e| invalid("phone_number", e.to_string()))?
            }
            (None, None) => {
                return Err(invalid(
                    "phone_number",
                    "is required (the call's number is withheld)",
                ))
            }
        };
        // Never dial a number that is not allocated or costs the customer money.
        match phone.line_type() {
            LineType::Unallocated => {
                return Err(invalid("phone_number", "is not an allocated number"))
            }
            LineType::PremiumRate => {
                return Err(invalid(
                    "phone_number",
                    "premium-rate numbers are never called back",
                ))
            }
            LineType::Dialable => {}
        }
        let customer_id = req
            .customer_id
            .clone()
            .or_else(|| taken.as_ref().and_then(|t| t.customer_id.clone()));
        // A customer id the request names must be on file: a typo or a customer the
        // CRM has not synced would otherwise be stored on the callback unnoticed (and
        // carry none of the customer's time zone or do-not-call flag). The id a routed
        // call carries is the platform's, and kept as it came, as RouteCall does.
        let on_file = match &customer_id {
            Some(id) => {
                let found = self
                    .store
                    .customer(&crate::domain::CustomerId::new_checked(id.clone()))?;
                if found.is_none() && req.customer_id.is_some() {
                    return Err(ServiceError::NotFound(format!(
                        "customer {id} not found (customer_id); upsert it first, or leave \
                         customer_id empty to request by phone number"
                    )));
                }
                found
            }
            None => self.store.customer_by_phone(phone.as_str())?,
        };
        if on_file.as_ref().is_some_and(|c| c.do_not_call) {
            return Err(ServiceError::FailedPrecondition(
                "the customer is on the do-not-call list".into(),
            ));
        }
        let queue_tz = queue.business_hours.as_ref().map(|h| h.time_zone());
        let tz = self.customer_zone(req.time_zone, on_file.as_ref(), &phone, queue_tz);
        if let Some((start, end)) = req.slot {
            policy::validate_slot(queue, tz, start, end, now, self.slot_horizon_days).map_err(
                |e| match e {
                    policy::SlotError::InPast
                    | policy::SlotError::WrongLength { .. }
                    | policy::SlotError::TooFarAhead { .. }
                    | policy::SlotError::Misaligned { .. } => invalid("slot_start", e.to_string()),
                    policy::SlotError::OutsideHours | policy::SlotError::OutsideWindow => {
                        ServiceError::FailedPrecondition(e.to_string())
                    }
                },
            )?;
        }
        let (kind, not_before, virtual_at) = match req.slot {
            Some((start, end)) => (CallbackKind::Scheduled { start, end }, start, start),
            None => (
                CallbackKind::Asap,
                now,
                taken.as_ref().map_or(now, |t| t.enqueued_at),
            ),
        };
        let cb = Callback {
            id: ulid::Ulid::new().to_string(),
            state: CallbackState::Pending,
            kind,
            phone: phone.as_str().to_owned(),
            customer_id,
            queue_id: queue_id.clone(),
            time_zone: tz.name().to_owned(),
            virtual_enqueued_at: virtual_at,
            priority: taken.as_ref().map_or(0, |t| t.priority),
            attempts: 0,
            max_attempts: queue.callback.max_attempts,
            not_before,
            expires_at: policy::expires_at(&queue.callback, not_before),
            lease: None,
            last_outcome: None,
            cancel_reason: None,
            origin_call_id: req.call_id.clone(),
            notes: req.notes.clone(),
            ewt_at_request_secs: taken
                .as_ref()
                .and_then(|t| t.predicted_wait)
                .map(|d| d.as_secs_f64()),
            created_by: req.principal.clone(),
            created_at: now,
            updated_at: now,
            version: 1,
        }
        .at_stored_precision();
        let scheduler = self.scheduler()?;
        let out = match req.slot {
            Some(_) => {
                scheduler
                    .create_scheduled(cb, key.clone(), queue.callback.slot_capacity)
                    .await?
            }
            None => {
                // Should this request be dropped (its client went away) once the
                // create is under way, the scheduler still learns of the callback.
                let guard = RecheckOnDrop(Some((scheduler.clone(), cb.id.clone())));
                let out = self.store.create_callback(cb, key.clone()).await?;
                if let CallbackCreate::Created(c) = &out {
                    // Take its place in line now, so the next caller counts it.
                    self.with_floor(|f| {
                        f.enqueue_callback(
                            &c.id,
                            queue_info(queue),
                            c.priority,
                            c.virtual_enqueued_at,
                            taken.as_ref().map(|t| t.seq),
                            now,
                        )
                    });
                    scheduler.added(c.clone()).await;
                }
                guard.disarm();
                out
            }
        };
        // The caller accepted: their call leaves the line (not abandoned), its place
        // passes to the callback.
        if let Some(call_id) = &req.call_id {
            let _ = self.with_floor(|f| f.take_call(call_id, now));
        }
        let (cb, created) = match out {
            CallbackCreate::Created(c) => (c, true),
            CallbackCreate::Existing(c) | CallbackCreate::Replayed(c) => (c, false),
        };
        if created {
            tracing::info!(callback_id = %cb.id, queue = %cb.queue_id, "callback requested");
        }
        Ok((self.view(cb), created))
    }

    fn view(&self, callback: Callback) -> CallbackView {
        let plan = self.active_plan();
        let position = plan
            .queue(&callback.queue_id)
            .and_then(|q| self.with_floor(|f| f.callback_position(&callback.id, &q.skills)));
        CallbackView { callback, position }
    }

    pub async fn get_callback(&self, id: &str) -> Result<CallbackView, ServiceError> {
        let cb = self
            .store
            .callback(id)
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("callback {id} not found")))?;
        Ok(self.view(cb))
    }

    /// A page of callbacks; the token is the last id of the previous page.
    pub async fn list_callbacks(
        &self,
        filter: CallbackFilter,
        page_token: Option<String>,
        page_size: usize,
    ) -> Result<(Vec<CallbackView>, Option<String>), ServiceError> {
        let size = if page_size == 0 {
            DEFAULT_PAGE
        } else {
            page_size.min(MAX_PAGE)
        };
        let mut items = self
            .store
            .list_callbacks(&filter, page_token.as_deref(), size + 1)
            .await?;
        let next = if items.len() > size {
            items.truncate(size);
            items.last().map(|c| c.id.clone())
        } else {
            None
        };
        Ok((items.into_iter().map(|c| self.view(c)).collect(), next))
    }

    pub async fn cancel_callback(
        &self,
        id: &str,
        reason: String,
    ) -> Result<CallbackView, ServiceError> {
        let cb = self.scheduler()?.cancel(id.to_owned(), reason).await?;
        Ok(self.view(cb))
    }

    pub async fn reschedule_callback(
        &self,
        id: &str,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Result<CallbackView, ServiceError> {
        let now = self.clock.now();
        let current = self.get_callback(id).await?.callback;
        let plan = self.active_plan();
        let queue = plan.queue(&current.queue_id).ok_or_else(|| {
            ServiceError::FailedPrecondition("the callback's queue left the plan".into())
        })?;
        let tz: Tz = current.time_zone.parse().unwrap_or(chrono_tz::UTC);
        policy::validate_slot(queue, tz, start, end, now, self.slot_horizon_days)
            .map_err(|e| invalid("slot_start", e.to_string()))?;
        let booked = self.scheduler()?.booked(current.queue_id.clone()).await;
        if booked.get(&start).copied().unwrap_or(0) >= queue.callback.slot_capacity {
            return Err(ServiceError::FailedPrecondition("that slot is full".into()));
        }
        let cb = self
            .scheduler()?
            .reschedule(id.to_owned(), start, end)
            .await?;
        Ok(self.view(cb))
    }

    pub async fn list_slots(
        &self,
        queue_id: &str,
        tz: Option<Tz>,
        days: u32,
    ) -> Result<Vec<Slot>, ServiceError> {
        let plan = self.active_plan();
        let queue = plan.queue(queue_id).ok_or_else(|| {
            invalid(
                "queue_id",
                format!("queue '{queue_id}' is not in the active plan"),
            )
        })?;
        let tz = tz
            .or(queue.business_hours.as_ref().map(|h| h.time_zone()))
            .unwrap_or(chrono_tz::UTC);
        let booked = self.scheduler()?.booked(queue_id.to_owned()).await;
        Ok(policy::list_slots(
            queue,
            tz,
            self.clock.now(),
            days.min(self.slot_horizon_days),
            &|s| booked.get(&s).copied().unwrap_or(0),
        ))
    }

    pub async fn watch_dispatches(
        &self,
        dialer_id: String,
    ) -> Result<mpsc::Receiver<DispatchMsg>, ServiceError> {
        self.scheduler()?.watch(dialer_id).await
    }

    pub async fn report_dispatch_outcome(
        &self,
        attempt_id: String,
        outcome: DispatchOutcome,
    ) -> Result<(bool, CallbackView), ServiceError> {
        let (dup, cb) = self.scheduler()?.outcome(attempt_id, outcome).await?;
        Ok((dup, self.view(cb)))
    }
}

/// Asks the scheduler to recheck a callback unless disarmed: dropped with a request
/// that was cancelled between starting a create and telling the scheduler about it.
struct RecheckOnDrop(Option<(crate::scheduler::Scheduler, String)>);

impl RecheckOnDrop {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for RecheckOnDrop {
    fn drop(&mut self) {
        if let Some((scheduler, id)) = self.0.take() {
            scheduler.recheck(id);
        }
    }
}
