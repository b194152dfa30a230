//! Callbacks end to end: offers, requests, a test dialer on WatchDispatches, outcomes,
//! retries, leases, windows, cancellation, restarts.

use std::time::Duration;

use holdless::api::pb;
use tonic::Streaming;

use crate::helpers::*;
use crate::live::{agent, event};

const NY: &str = "+12125550100";

fn callbacks(
    app: &TestApp,
) -> pb::callback_service_client::CallbackServiceClient<tonic::transport::Channel> {
    pb::callback_service_client::CallbackServiceClient::new(app.channel.clone())
}

fn dispatch(
    app: &TestApp,
) -> pb::dispatch_service_client::DispatchServiceClient<tonic::transport::Channel> {
    pb::dispatch_service_client::DispatchServiceClient::new(app.channel.clone())
}

async fn dialer(app: &TestApp, id: &str) -> Streaming<pb::Dispatch> {
    dispatch(app)
        .watch_dispatches(pb::WatchDispatchesRequest {
            dialer_id: id.into(),
        })
        .await
        .expect("watch")
        .into_inner()
}

async fn next(stream: &mut Streaming<pb::Dispatch>) -> pb::Dispatch {
    tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("a dispatch within 10 s")
        .expect("stream ok")
        .expect("stream open")
}

/// An available agent, dialer `dialer_id` watching, and an ASAP callback for `NY` in
/// `general` that has been dispatched to it: the dialer, the callback, the dispatch.
async fn one_dispatched(
    app: &TestApp,
    dialer_id: &str,
) -> (Streaming<pb::Dispatch>, pb::Callback, pb::Dispatch) {
    agent(app, "a1", &["support"], pb::AgentState::Available, 0).await;
    let mut d = dialer(app, dialer_id).await;
    let cb = request(app, asap("general", NY)).await.callback.unwrap();
    let dispatched = next(&mut d).await;
    (d, cb, dispatched)
}

/// Nothing arrives within a short grace period (a negative check, not a wait for work).
async fn nothing(stream: &mut Streaming<pb::Dispatch>) {
    if let Ok(m) = tokio::time::timeout(Duration::from_millis(300), stream.message()).await {
        panic!("unexpected dispatch: {m:?}");
    }
}

async fn report(
    app: &TestApp,
    attempt: &str,
    outcome: pb::DispatchOutcome,
) -> pb::ReportDispatchOutcomeResponse {
    dispatch(app)
        .report_dispatch_outcome(pb::ReportDispatchOutcomeRequest {
            attempt_id: attempt.into(),
            outcome: outcome as i32,
        })
        .await
        .expect("outcome ok")
        .into_inner()
}

async fn get(app: &TestApp, id: &str) -> pb::Callback {
    callbacks(app)
        .get_callback(pb::GetCallbackRequest {
            callback_id: id.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .callback
        .unwrap()
}

fn asap(queue: &str, phone: &str) -> pb::RequestCallbackRequest {
    pb::RequestCallbackRequest {
        queue_id: queue.into(),
        phone_number: phone.into(),
        ..Default::default()
    }
}

async fn request(app: &TestApp, req: pb::RequestCallbackRequest) -> pb::RequestCallbackResponse {
    callbacks(app)
        .request_callback(req)
        .await
        .expect("request ok")
        .into_inner()
}

#[tokio::test]
async fn full_lifecycle_offer_request_dispatch_no_answer_retry_connected() {
    let app = spawn_app().await;
    agent(&app, "a1", &["support"], pb::AgentState::Busy, 0).await;
    let offered = app.route(call("call-1", NY)).await;
    assert!(offered.offer_callback);
    let r = request(
        &app,
        pb::RequestCallbackRequest {
            call_id: "call-1".into(),
            request_id: "req-1".into(),
            ..Default::default()
        },
    )
    .await;
    assert!(r.created);
    let cb = r.callback.unwrap();
    assert_eq!(cb.state, pb::CallbackState::Pending as i32);
    assert_eq!(
        (cb.queue_id.as_str(), cb.phone_number.as_str()),
        ("general", NY)
    );
    assert_eq!(cb.origin_call_id, "call-1");
    assert_eq!(cb.position, 1, "keeps the call's place");
    assert_eq!(cb.time_zone, "America/New_York");

    let mut d = dialer(&app, "dialer-1").await;
    nothing(&mut d).await; // no agent free yet
    agent(&app, "a1", &["support"], pb::AgentState::Available, 10).await;
    let first = next(&mut d).await;
    assert_eq!(first.agent_id, "a1", "agent reserved first");
    assert_eq!(first.attempt_number, 1);
    assert_eq!(first.callback.as_ref().unwrap().callback_id, cb.callback_id);

    let out = report(&app, &first.attempt_id, pb::DispatchOutcome::NoAnswer).await;
    assert!(!out.duplicate);
    let after = out.callback.unwrap();
    assert_eq!(after.state, pb::CallbackState::Pending as i32);
    assert_eq!(after.attempts, 1);
    assert!(
        report(&app, &first.attempt_id, pb::DispatchOutcome::NoAnswer)
            .await
            .duplicate
    );

    // The plan's backoff before attempt 2 is 300 s: nothing before, a new attempt after.
    app.clock.advance(chrono::Duration::seconds(299));
    nothing(&mut d).await;
    app.clock.advance(chrono::Duration::seconds(2));
    let second = next(&mut d).await;
    assert_ne!(second.attempt_id, first.attempt_id);
    assert_eq!(second.attempt_number, 2);
    let done = report(&app, &second.attempt_id, pb::DispatchOutcome::Connected)
        .await
        .callback
        .unwrap();
    assert_eq!(done.state, pb::CallbackState::Completed as i32);
    assert_eq!(
        get(&app, &cb.callback_id).await.state,
        pb::CallbackState::Completed as i32
    );
}

#[tokio::test]
async fn duplicate_requests_return_the_same_callback() {
    let app = spawn_app().await;
    let a = request(&app, asap("general", NY)).await;
    let b = request(&app, asap("general", NY)).await;
    assert!(a.created && !b.created);
    assert_eq!(
        a.callback.unwrap().callback_id,
        b.callback.as_ref().unwrap().callback_id
    );
    let mut with_key = asap("billing", "+13125550101");
    with_key.request_id = "web-123".into();
    let c = request(&app, with_key.clone()).await;
    let d = request(&app, with_key).await;
    assert!(c.created && !d.created);
    assert_eq!(
        c.callback.unwrap().callback_id,
        d.callback.unwrap().callback_id
    );
    let all = callbacks(&app)
        .list_callbacks(pb::ListCallbacksRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(all.callbacks.len(), 2, "one per number and queue");
}

#[tokio::test]
async fn no_dispatch_outside_the_customers_calling_window() {
    let app = spawn_app().await;
    agent(&app, "a1", &["support"], pb::AgentState::Available, 0).await;
    let mut d = dialer(&app, "dialer-1").await;
    // 15:00 UTC is midnight in Tokyo.
    let mut req = asap("general", "+81312345678");
    req.time_zone = "Asia/Tokyo".into();
    let cb = request(&app, req).await.callback.unwrap();
    nothing(&mut d).await;
    assert_eq!(
        get(&app, &cb.callback_id).await.state,
        pb::CallbackState::Pending as i32
    );
    // 23:00 UTC: 08:00 in Tokyo, 18:00 in New York (queue open).
    app.clock.set(at("2026-11-25T23:00:00Z"));
    let got = next(&mut d).await;
    assert_eq!(got.callback.unwrap().callback_id, cb.callback_id);
}

#[tokio::test]
async fn lease_expiry_redispatches_the_same_attempt_to_another_dialer() {
    let app = spawn_app().await;
    agent(&app, "a1", &["support"], pb::AgentState::Available, 0).await;
    let mut d1 = dialer(&app, "d1").await;
    let mut d2 = dialer(&app, "d2").await;
    let cb = request(&app, asap("general", NY)).await.callback.unwrap();
    // Round robin starts with d1.
    let first = next(&mut d1).await;
    nothing(&mut d2).await;
    app.clock.advance(chrono::Duration::seconds(61));
    let again = next(&mut d2).await;
    assert_eq!(again.attempt_id, first.attempt_id);
    assert_eq!(again.callback.unwrap().callback_id, cb.callback_id);
    assert_eq!(again.attempt_number, 1, "a re-lease is not a new attempt");
    // The outcome of the attempt settles it once.
    let done = report(&app, &first.attempt_id, pb::DispatchOutcome::Connected).await;
    assert_eq!(
        done.callback.unwrap().state,
        pb::CallbackState::Completed as i32
    );
}

#[tokio::test]
async fn dialer_that_disconnects_mid_lease_loses_nothing() {
    let app = spawn_app().await;
    let (d1, cb, first) = one_dispatched(&app, "d1").await;
    drop(d1);
    assert_eq!(
        get(&app, &cb.callback_id).await.state,
        pb::CallbackState::Dispatched as i32
    );
    let mut d2 = dialer(&app, "d2").await;
    nothing(&mut d2).await; // leased to d1 until its lease runs out
    app.clock.advance(chrono::Duration::seconds(61));
    let again = next(&mut d2).await;
    assert_eq!(again.attempt_id, first.attempt_id);
}

#[tokio::test]
async fn cancel_and_auto_cancel_when_the_customer_gets_through() {
    let app = spawn_app().await;
    let cb = request(&app, asap("general", "+13125550101"))
        .await
        .callback
        .unwrap();
    let c = callbacks(&app)
        .cancel_callback(pb::CancelCallbackRequest {
            callback_id: cb.callback_id.clone(),
            reason: "customer".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .callback
        .unwrap();
    assert_eq!(
        (c.state, c.cancel_reason.as_str()),
        (pb::CallbackState::Cancelled as i32, "customer")
    );
    let e = callbacks(&app)
        .cancel_callback(pb::CancelCallbackRequest {
            callback_id: cb.callback_id.clone(),
            reason: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition);

    // A second callback; the customer calls in and is answered in that queue.
    let cb = request(&app, asap("general", NY)).await.callback.unwrap();
    app.route(call("inbound", NY)).await;
    event(&app, "inbound", pb::CallEventType::Answered, "a9", "")
        .await
        .unwrap();
    let mut state = get(&app, &cb.callback_id).await;
    for _ in 0..50 {
        if state.state == pb::CallbackState::Cancelled as i32 {
            break;
        }
        tokio::task::yield_now().await;
        state = get(&app, &cb.callback_id).await;
    }
    assert_eq!(
        (state.state, state.cancel_reason.as_str()),
        (pb::CallbackState::Cancelled as i32, "answered_inbound")
    );
}

#[tokio::test]
async fn bad_requests_are_refused_and_store_nothing() {
    let app = spawn_app().await;
    let mut c = callbacks(&app);
    let e = c
        .request_callback(asap("general", "2125550100"))
        .await
        .unwrap_err();
    assert_eq!(violations(&e), vec!["phone_number"]);
    let e = c.request_callback(asap("nowhere", NY)).await.unwrap_err();
    assert_eq!(violations(&e), vec!["queue_id"]);
    let ts = |s: &str| {
        let t = at(s);
        Some(prost_types::Timestamp {
            seconds: t.timestamp(),
            nanos: 0,
        })
    };
    let mut past = asap("general", NY);
    past.slot_start = ts("2026-11-24T15:00:00Z");
    past.slot_end = ts("2026-11-24T15:30:00Z");
    let e = c.request_callback(past).await.unwrap_err();
    assert_eq!(violations(&e), vec!["slot_start"]);
    // Sunday: the general queue is closed.
    let mut closed = asap("general", NY);
    closed.slot_start = ts("2026-11-29T15:00:00Z");
    closed.slot_end = ts("2026-11-29T15:30:00Z");
    let e = c.request_callback(closed).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition);
    let e = c
        .request_callback(pb::RequestCallbackRequest {
            call_id: "never-routed".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition);
    let all = c
        .list_callbacks(pb::ListCallbacksRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(all.callbacks.is_empty());
}

/// The example plan's `general` slots over two days, as a New York customer sees them.
async fn general_slots(app: &TestApp) -> Vec<pb::Slot> {
    callbacks(app)
        .list_slots(pb::ListSlotsRequest {
            queue_id: "general".into(),
            time_zone: "America/New_York".into(),
            days: 2,
        })
        .await
        .unwrap()
        .into_inner()
        .slots
}

#[tokio::test]
async fn scheduled_callback_in_a_listed_slot_is_dispatched_at_its_start() {
    let app = spawn_app().await;
    let slots = general_slots(&app).await;
    assert!(!slots.is_empty());
    let slot = slots[2];
    let mut req = asap("general", NY);
    req.slot_start = slot.start;
    req.slot_end = slot.end;
    let cb = request(&app, req).await.callback.unwrap();
    assert_eq!(cb.kind, pb::CallbackKind::Scheduled as i32);
    agent(&app, "a1", &["support"], pb::AgentState::Available, 0).await;
    let mut d = dialer(&app, "d").await;
    nothing(&mut d).await;
    let start = slot.start.unwrap();
    app.clock
        .set(chrono::DateTime::from_timestamp(start.seconds, 0).unwrap());
    assert_eq!(
        next(&mut d).await.callback.unwrap().callback_id,
        cb.callback_id
    );
}

/// Pending, scheduled and dispatched callbacks come back after a restart: the
/// scheduler's index is rebuilt from the store's index fields (the slot booking, the
/// lease and its attempt), and the records are read when the callbacks are acted on.
async fn callbacks_and_their_leases_survive_a_restart_on(
    configure: impl Fn(&mut holdless::config::Settings) + Clone,
) {
    let app = spawn_app_with(configure.clone()).await;
    let (d, dispatched, attempt) = one_dispatched(&app, "d").await;
    let pending = request(&app, asap("billing", "+13125550101"))
        .await
        .callback
        .unwrap();
    let slot = general_slots(&app).await[3];
    let mut req = asap("general", "+12125550177");
    req.slot_start = slot.start;
    req.slot_end = slot.end;
    let scheduled = request(&app, req).await.callback.unwrap();
    drop(d);
    let app = app.restart_with(configure).await;
    assert_eq!(
        get(&app, &pending.callback_id).await.state,
        pb::CallbackState::Pending as i32
    );
    assert_eq!(
        get(&app, &scheduled.callback_id).await.state,
        pb::CallbackState::Pending as i32
    );
    assert_eq!(
        get(&app, &dispatched.callback_id).await.state,
        pb::CallbackState::Dispatched as i32
    );
    // The slot's booking was rebuilt: one of its places is still taken.
    let again = general_slots(&app).await;
    let same = again.iter().find(|s| s.start == slot.start).unwrap();
    assert_eq!(same.free, slot.free - 1);
    // The lease ran out during the downtime: the same attempt goes out again.
    app.clock.advance(chrono::Duration::seconds(120));
    let mut d = dialer(&app, "d-after").await;
    let again = next(&mut d).await;
    assert_eq!(again.attempt_id, attempt.attempt_id);
    assert_eq!(again.callback.unwrap().callback_id, dispatched.callback_id);
    app.stop().await.expect("clean shutdown");
}

#[tokio::test]
async fn callbacks_and_their_leases_survive_a_restart() {
    callbacks_and_their_leases_survive_a_restart_on(|_| {}).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callbacks_and_their_leases_survive_a_restart_on_postgres() {
    let url = holdless::store::pgtest::test_postgres().await;
    callbacks_and_their_leases_survive_a_restart_on(on_postgres_store(&url)).await;
}

/// A clean stop leaves a warm-start image, and the next start reads it instead of the
/// store; what it serves is what a start from the store serves: every callback with
/// its state, place in line and estimated wait, the booked slot, the lease.
#[tokio::test]
async fn a_start_from_the_warm_start_image_serves_what_a_start_from_the_store_does() {
    a_start_from_the_warm_start_image_serves_what_a_start_from_the_store_does_on(|_| {}).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_from_the_warm_start_image_serves_what_a_start_from_the_store_does_on_postgres() {
    let url = holdless::store::pgtest::test_postgres().await;
    a_start_from_the_warm_start_image_serves_what_a_start_from_the_store_does_on(
        on_postgres_store(&url),
    )
    .await;
}

async fn a_start_from_the_warm_start_image_serves_what_a_start_from_the_store_does_on(
    on: impl Fn(&mut holdless::config::Settings) + Clone,
) {
    let app = spawn_app_with(on.clone()).await;
    let (d, dispatched, attempt) = one_dispatched(&app, "d").await;
    let mut ids = vec![dispatched.callback_id.clone()];
    for phone in ["+13125550101", "+13125550102", "+13125550103"] {
        ids.push(
            request(&app, asap("billing", phone))
                .await
                .callback
                .unwrap()
                .callback_id,
        );
    }
    let slot = general_slots(&app).await[3];
    let mut req = asap("general", "+12125550177");
    req.slot_start = slot.start;
    req.slot_end = slot.end;
    ids.push(request(&app, req).await.callback.unwrap().callback_id);
    drop(d);
    async fn seen(app: &TestApp, ids: &[String]) -> (Vec<pb::Callback>, u32, Option<f64>) {
        let mut cbs = Vec::new();
        for id in ids {
            cbs.push(get(app, id).await);
        }
        let slots = general_slots(app).await;
        let metrics = scrape(app).await;
        (
            cbs,
            slots.iter().map(|s| s.free).sum(),
            gauge(&metrics, "holdless_callbacks_in_line"),
        )
    }

    let app = app.restart_with(on.clone()).await;
    let metrics = scrape(&app).await;
    assert_eq!(
        gauge(&metrics, "holdless_callbacks_warm_started"),
        Some(1.0)
    );
    assert_eq!(gauge(&metrics, "holdless_callbacks_open"), Some(5.0));
    let warm = seen(&app, &ids).await;
    let places: Vec<u32> = warm.0[1..4].iter().map(|c| c.position).collect();
    assert_eq!(places, [1, 2, 3], "the line keeps its order");

    let app = app
        .restart_with(|s| {
            on(s);
            s.store.warm_start = false
        })
        .await;
    let metrics = scrape(&app).await;
    assert_eq!(
        gauge(&metrics, "holdless_callbacks_warm_started"),
        Some(0.0)
    );
    assert_eq!(seen(&app, &ids).await, warm);

    // The image is good for one start: the next one, after a stop that kept none,
    // reads the store.
    let app = app.restart_with(on.clone()).await;
    assert_eq!(
        gauge(&scrape(&app).await, "holdless_callbacks_warm_started"),
        Some(0.0)
    );
    let app = app.restart_with(on.clone()).await;
    assert_eq!(
        gauge(&scrape(&app).await, "holdless_callbacks_warm_started"),
        Some(1.0)
    );
    assert_eq!(seen(&app, &ids).await, warm);
    // The lease ran out: the same attempt goes out again.
    app.clock.advance(chrono::Duration::seconds(120));
    let mut d = dialer(&app, "d-after").await;
    assert_eq!(next(&mut d).await.attempt_id, attempt.attempt_id);
    app.stop().await.expect("clean shutdown");
}

#[tokio::test]
async fn a_repeated_outcome_after_a_restart_is_a_duplicate_and_changes_nothing() {
    let app = spawn_app().await;
    let (d, cb, attempt) = one_dispatched(&app, "d").await;
    let first = report(&app, &attempt.attempt_id, pb::DispatchOutcome::NoAnswer).await;
    assert!(!first.duplicate);
    drop(d);
    let app = app.restart().await;
    // The dialer never heard the answer and reports again, to the restarted server.
    let again = report(&app, &attempt.attempt_id, pb::DispatchOutcome::Connected).await;
    assert!(again.duplicate);
    let after = again.callback.unwrap();
    assert_eq!(after.callback_id, cb.callback_id);
    assert_eq!(
        after.state,
        pb::CallbackState::Pending as i32,
        "NO_ANSWER stands"
    );
    assert_eq!(after.attempts, 1);
    assert_eq!(get(&app, &cb.callback_id).await.state, after.state);
    // An attempt never dispatched is still unknown.
    let e = dispatch(&app)
        .report_dispatch_outcome(pb::ReportDispatchOutcomeRequest {
            attempt_id: "01ZZZZZZZZZZZZZZZZZZZZZZZZ".into(),
            outcome: pb::DispatchOutcome::Connected as i32,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
}

#[tokio::test]
async fn a_full_slot_refuses_more_and_leaves_the_listing() {
    let app = spawn_app().await;
    let slot = general_slots(&app).await[3];
    assert_eq!(slot.free, 4, "the example plan's slot capacity");
    for i in 0..4 {
        let mut req = asap("general", &format!("+1212555010{i}"));
        req.slot_start = slot.start;
        req.slot_end = slot.end;
        request(&app, req).await;
    }
    let mut req = asap("general", "+12125550109");
    req.slot_start = slot.start;
    req.slot_end = slot.end;
    let e = callbacks(&app).request_callback(req).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition);
    assert!(!general_slots(&app)
        .await
        .iter()
        .any(|s| s.start == slot.start));
}

fn with_token<T>(msg: T, token: &str) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    r
}

#[tokio::test]
async fn ten_requests_for_one_number_in_an_hour_give_three_ok_and_seven_refusals() {
    let app = spawn_app().await;
    let mut c = callbacks(&app);
    let mut ok = 0;
    let mut exhausted = 0;
    for i in 0..10 {
        // Different queues, so deduplication does not hide the limit.
        let queue = ["general", "billing", "sales", "priority", "uk_support"][i % 5];
        match c.request_callback(asap(queue, NY)).await {
            Ok(_) => ok += 1,
            Err(e) => {
                assert_eq!(e.code(), tonic::Code::ResourceExhausted, "{e:?}");
                use tonic_types::StatusExt;
                assert!(e.get_details_retry_info().is_some(), "retry info");
                exhausted += 1;
            }
        }
    }
    assert_eq!((ok, exhausted), (3, 7));
    let all = c
        .list_callbacks(pb::ListCallbacksRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(all.callbacks.len(), 3, "nothing extra stored");
    // An hour later the number may ask again.
    app.clock.advance(chrono::Duration::minutes(61));
    assert!(c.request_callback(asap("billing", NY)).await.is_ok());
}

#[tokio::test]
async fn customer_tokens_see_and_cancel_only_their_own_callbacks() {
    use holdless::auth::{token_sha256, Role};
    use holdless::config::PrincipalSettings;
    let principal = |name: &str, role: Role| PrincipalSettings {
        name: name.into(),
        token_sha256: token_sha256(&format!("{name}-token")),
        roles: vec![role],
    };
    let app = spawn_app_with(|s| {
        s.auth.principals = vec![
            principal("web", Role::Customer),
            principal("app", Role::Customer),
            principal("desk", Role::Supervisor),
        ]
    })
    .await;
    let mut c = callbacks(&app);
    let mine = c
        .request_callback(with_token(asap("general", NY), "web-token"))
        .await
        .unwrap()
        .into_inner()
        .callback
        .unwrap();
    assert_eq!(mine.created_by, "web");
    let get = |token: &'static str, id: String| {
        let mut c = callbacks(&app);
        async move {
            c.get_callback(with_token(
                pb::GetCallbackRequest { callback_id: id },
                token,
            ))
            .await
        }
    };
    assert!(get("web-token", mine.callback_id.clone()).await.is_ok());
    assert_eq!(
        get("app-token", mine.callback_id.clone())
            .await
            .unwrap_err()
            .code(),
        tonic::Code::NotFound
    );
    assert!(get("desk-token", mine.callback_id.clone()).await.is_ok());
    let listed = c
        .list_callbacks(with_token(pb::ListCallbacksRequest::default(), "app-token"))
        .await
        .unwrap()
        .into_inner();
    assert!(listed.callbacks.is_empty());
    let e = c
        .cancel_callback(with_token(
            pb::CancelCallbackRequest {
                callback_id: mine.callback_id.clone(),
                reason: "x".into(),
            },
            "app-token",
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
    // The supervisor's cancel is audited under their name.
    c.cancel_callback(with_token(
        pb::CancelCallbackRequest {
            callback_id: mine.callback_id.clone(),
            reason: "duplicate".into(),
        },
        "desk-token",
    ))
    .await
    .unwrap();
    let mut plans = pb::plan_service_client::PlanServiceClient::new(app.channel.clone());
    let audit = plans
        .list_audit(with_token(pb::ListAuditRequest::default(), "desk-token"))
        .await
        .unwrap()
        .into_inner();
    let last = audit.entries.last().unwrap();
    assert_eq!(
        (last.principal.as_str(), last.action),
        ("desk", pb::AuditAction::CallbackCancel as i32)
    );
}

#[tokio::test]
async fn unallocated_premium_rate_and_do_not_call_numbers_are_refused() {
    let app = spawn_app().await;
    let mut c = callbacks(&app);
    let e = c
        .request_callback(asap("general", "+12020000000"))
        .await
        .unwrap_err();
    assert_eq!(violations(&e), vec!["phone_number"]);
    let e = c
        .request_callback(asap("general", "+19005550100"))
        .await
        .unwrap_err();
    assert_eq!(violations(&e), vec!["phone_number"]);
    app.customers()
        .upsert_customer(pb::UpsertCustomerRequest {
            customer: Some(pb::Customer {
                customer_id: "dnc-1".into(),
                phone_numbers: vec!["+13125550101".into()],
                do_not_call: true,
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    let e = c
        .request_callback(asap("general", "+13125550101"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition);
    let all = c
        .list_callbacks(pb::ListCallbacksRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(all.callbacks.is_empty());
}

/// Principals `web` and `app` (customer), `ivr` (telephony) and `desk` (supervisor);
/// each one's token is its name with `-token`. No per-number request limit.
async fn spawn_app_with_channels() -> TestApp {
    use holdless::auth::{token_sha256, Role};
    use holdless::config::PrincipalSettings;
    let principal = |name: &str, role: Role| PrincipalSettings {
        name: name.into(),
        token_sha256: token_sha256(&format!("{name}-token")),
        roles: vec![role],
    };
    spawn_app_with(|s| {
        s.auth.principals = vec![
            principal("web", Role::Customer),
            principal("app", Role::Customer),
            principal("ivr", Role::Telephony),
            principal("desk", Role::Supervisor),
        ];
        // These tests repeat requests for one number on purpose.
        s.limits.callback_requests_per_phone_per_hour = 0;
    })
    .await
}

#[tokio::test]
async fn a_live_call_becomes_a_callback_only_through_the_ivr_or_a_supervisor() {
    let app = spawn_app_with_channels().await;
    let mut routing = app.routing();
    for id in ["call-1", "call-2"] {
        routing
            .route_call(with_token(call(id, NY), "ivr-token"))
            .await
            .unwrap();
    }
    let from_call = |id: &str| pb::RequestCallbackRequest {
        call_id: id.into(),
        ..Default::default()
    };
    let mut c = callbacks(&app);
    let e = c
        .request_callback(with_token(from_call("call-1"), "web-token"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    assert!(e.message().contains("IVR"), "{e:?}");
    let e = c
        .request_callback(with_token(asap("general", NY), "ivr-token"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    let listed = c
        .list_callbacks(with_token(
            pb::ListCallbacksRequest::default(),
            "desk-token",
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(
        listed.callbacks.is_empty(),
        "a refused request stores nothing"
    );

    // The call is still in line: the IVR turns it into a callback that keeps its place.
    let ivr = c
        .request_callback(with_token(from_call("call-1"), "ivr-token"))
        .await
        .unwrap()
        .into_inner();
    let cb = ivr.callback.unwrap();
    assert!(ivr.created);
    assert_eq!((cb.origin_call_id.as_str(), cb.position), ("call-1", 1));
    let mut other = from_call("call-2");
    other.phone_number = "+13125550101".into();
    let desk = c
        .request_callback(with_token(other, "desk-token"))
        .await
        .unwrap()
        .into_inner();
    assert!(desk.created);
    assert_eq!(desk.callback.unwrap().origin_call_id, "call-2");
}

async fn request_as(
    app: &TestApp,
    token: &str,
    req: pb::RequestCallbackRequest,
) -> Result<pb::RequestCallbackResponse, tonic::Status> {
    callbacks(app)
        .request_callback(with_token(req, token))
        .await
        .map(tonic::Response::into_inner)
}

async fn all_callbacks(app: &TestApp) -> Vec<pb::Callback> {
    callbacks(app)
        .list_callbacks(with_token(
            pb::ListCallbacksRequest::default(),
            "desk-token",
        ))
        .await
        .unwrap()
        .into_inner()
        .callbacks
}

#[tokio::test]
async fn request_ids_belong_to_their_principal_and_a_reused_one_with_another_body_is_refused() {
    let app = spawn_app_with_channels().await;
    let keyed = |phone: &str, notes: &str| pb::RequestCallbackRequest {
        request_id: "1".into(),
        notes: notes.into(),
        ..asap("general", phone)
    };
    let web = request_as(&app, "web-token", keyed(NY, "web: billing dispute"))
        .await
        .unwrap();
    assert!(web.created);
    let web_cb = web.callback.unwrap();
    // The app channel numbers its requests too: its "1" is its own request.
    let app_first = request_as(&app, "app-token", keyed("+13125550101", ""))
        .await
        .unwrap();
    assert!(app_first.created, "{app_first:?}");
    let app_cb = app_first.callback.unwrap();
    assert_ne!(app_cb.callback_id, web_cb.callback_id);
    assert_eq!(app_cb.phone_number, "+13125550101");
    // A retry with the same body gets the first answer, notes included.
    let again = request_as(&app, "web-token", keyed(NY, "web: billing dispute"))
        .await
        .unwrap();
    assert!(!again.created);
    let again = again.callback.unwrap();
    assert_eq!(
        (again.callback_id.as_str(), again.notes.as_str()),
        (web_cb.callback_id.as_str(), "web: billing dispute")
    );
    // The same key with another number, other notes, or a slot is another request.
    for changed in [
        keyed("+13125550102", "web: billing dispute"),
        keyed(NY, "web: other notes"),
        pb::RequestCallbackRequest {
            slot_start: Some(prost_types::Timestamp {
                seconds: at("2026-11-26T15:00:00Z").timestamp(),
                nanos: 0,
            }),
            slot_end: Some(prost_types::Timestamp {
                seconds: at("2026-11-26T15:30:00Z").timestamp(),
                nanos: 0,
            }),
            ..keyed(NY, "web: billing dispute")
        },
    ] {
        let e = request_as(&app, "web-token", changed).await.unwrap_err();
        assert_eq!(violations(&e), vec!["request_id"], "{e:?}");
    }
    assert_eq!(all_callbacks(&app).await.len(), 2, "nothing else stored");
}

#[tokio::test]
async fn a_retry_from_a_live_call_gets_its_first_answer_after_the_call_left_the_line() {
    let app = spawn_app_with_channels().await;
    app.routing()
        .route_call(with_token(call("call-1", NY), "ivr-token"))
        .await
        .unwrap();
    let req = pb::RequestCallbackRequest {
        call_id: "call-1".into(),
        request_id: "ivr-7".into(),
        ..Default::default()
    };
    let first = request_as(&app, "ivr-token", req.clone()).await.unwrap();
    let again = request_as(&app, "ivr-token", req).await.unwrap();
    assert!(first.created && !again.created);
    assert_eq!(
        first.callback.unwrap().callback_id,
        again.callback.unwrap().callback_id
    );
}

#[tokio::test]
async fn a_request_that_merges_into_another_channels_callback_learns_only_its_place() {
    let app = spawn_app_with_channels().await;
    let mut req = asap("general", NY);
    req.notes = "Ada: disputes the March invoice".into();
    let web = request_as(&app, "web-token", req.clone()).await.unwrap();
    let web_cb = web.callback.unwrap();
    assert_eq!(web_cb.created_by, "web");

    let merged = request_as(&app, "app-token", asap("general", NY))
        .await
        .unwrap();
    assert!(!merged.created);
    let cb = merged.callback.unwrap();
    assert_eq!(cb.callback_id, web_cb.callback_id);
    assert_eq!(cb.state, pb::CallbackState::Pending as i32);
    assert_eq!(cb.position, 1);
    assert_eq!(
        (
            cb.notes.as_str(),
            cb.created_by.as_str(),
            cb.customer_id.as_str(),
            cb.time_zone.as_str(),
        ),
        ("", "", "", ""),
        "{cb:?}"
    );
    // The owner and supervisors still see it whole.
    for token in ["web-token", "desk-token"] {
        let cb = request_as(&app, token, req.clone())
            .await
            .unwrap()
            .callback
            .unwrap();
        assert_eq!(cb.notes, "Ada: disputes the March invoice", "{token}");
    }
}

/// The callback's state once the scheduler has handled what was sent before (a bounded
/// poll: auto-cancel runs on the scheduler after the event's reply).
async fn settled_state(app: &TestApp, id: &str, want: pb::CallbackState) -> pb::Callback {
    let mut cb = get(app, id).await;
    for _ in 0..50 {
        if cb.state == want as i32 {
            break;
        }
        tokio::task::yield_now().await;
        cb = get(app, id).await;
    }
    cb
}

#[tokio::test]
async fn a_customer_answered_from_another_of_their_numbers_gets_their_callback_cancelled() {
    let app = spawn_app().await;
    const MOBILE: &str = "+13125550101";
    app.customers()
        .upsert_customer(pb::UpsertCustomerRequest {
            customer: Some(pb::Customer {
                customer_id: "cust-2num".into(),
                phone_numbers: vec![NY.into(), MOBILE.into()],
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    // Asked from the mobile; a stranger's callback waits in the same queue.
    let mine = request(&app, asap("general", MOBILE))
        .await
        .callback
        .unwrap();
    let stranger = request(&app, asap("general", "+13125550199"))
        .await
        .callback
        .unwrap();
    // They call from the landline and are answered in that queue.
    let decision = app.route(call("inbound", NY)).await;
    assert_eq!(decision.queue_id, "general");
    event(&app, "inbound", pb::CallEventType::Answered, "a9", "")
        .await
        .unwrap();
    let cb = settled_state(&app, &mine.callback_id, pb::CallbackState::Cancelled).await;
    assert_eq!(
        (cb.state, cb.cancel_reason.as_str()),
        (pb::CallbackState::Cancelled as i32, "answered_inbound")
    );
    assert_eq!(
        get(&app, &stranger.callback_id).await.state,
        pb::CallbackState::Pending as i32
    );
}

/// `field`'s description in an INVALID_ARGUMENT status's BadRequest detail.
fn violation_text(status: &tonic::Status, field: &str) -> String {
    use tonic_types::StatusExt;
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    status
        .get_details_bad_request()
        .expect("BadRequest detail")
        .field_violations
        .into_iter()
        .find(|v| v.field == field)
        .unwrap_or_else(|| panic!("no violation of {field}: {status:?}"))
        .description
}

#[tokio::test]
async fn a_page_token_that_no_reply_gave_is_invalid_argument() {
    let app = spawn_app().await;
    request(&app, asap("general", NY)).await;
    request(&app, asap("billing", NY)).await;
    let mut c = callbacks(&app);
    let page = |token: &str| pb::ListCallbacksRequest {
        page_size: 1,
        page_token: token.into(),
        ..Default::default()
    };
    for garbage in ["garbage", "page-2", "01ZZZZZZZZZZZZZZZZZZZZZZZZZZ"] {
        let e = c.list_callbacks(page(garbage)).await.unwrap_err();
        assert_eq!(violations(&e), vec!["page_token"], "{garbage}");
    }
    let first = c.list_callbacks(page("")).await.unwrap().into_inner();
    assert_eq!(first.callbacks.len(), 1);
    let second = c
        .list_callbacks(page(&first.next_page_token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(second.callbacks.len(), 1);
    assert_ne!(
        second.callbacks[0].callback_id,
        first.callbacks[0].callback_id
    );
}

#[tokio::test]
async fn a_callback_reads_back_exactly_as_the_request_answered() {
    let app = spawn_app().await;
    app.clock.set(at("2026-11-25T15:00:00.123456789Z"));
    let created = request(&app, asap("general", NY)).await.callback.unwrap();
    assert_eq!(created.create_time.unwrap().nanos, 123_000_000);
    assert_eq!(get(&app, &created.callback_id).await, created);
    app.clock.set(at("2026-11-25T15:00:01.987654321Z"));
    let cancelled = callbacks(&app)
        .cancel_callback(pb::CancelCallbackRequest {
            callback_id: created.callback_id.clone(),
            reason: "customer".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .callback
        .unwrap();
    assert_eq!(get(&app, &created.callback_id).await, cancelled);
}

#[tokio::test]
async fn slots_are_listed_and_booked_over_one_horizon() {
    let app = spawn_app().await;
    let mut c = callbacks(&app);
    let list = |days: u32| pb::ListSlotsRequest {
        queue_id: "general".into(),
        time_zone: "America/New_York".into(),
        days,
    };
    let e = c.list_slots(list(15)).await.unwrap_err();
    assert_eq!(violations(&e), vec!["days"]);
    let slots = c.list_slots(list(14)).await.unwrap().into_inner().slots;
    let last = *slots.last().expect("slots within two weeks");
    // 2026-12-08 is the horizon's last day (today, 11-25, is the first).
    assert!(last.start.unwrap().seconds < at("2026-12-09T05:00:00Z").timestamp());
    let mut req = asap("general", NY);
    req.slot_start = last.start;
    req.slot_end = last.end;
    assert!(request(&app, req).await.created);
    // A grid slot inside business hours, 27 days out: beyond what is listed.
    let mut far = asap("general", "+13125550101");
    far.slot_start = Some(prost_types::Timestamp {
        seconds: at("2026-12-22T15:00:00Z").timestamp(),
        nanos: 0,
    });
    far.slot_end = Some(prost_types::Timestamp {
        seconds: at("2026-12-22T15:30:00Z").timestamp(),
        nanos: 0,
    });
    let e = c.request_callback(far.clone()).await.unwrap_err();
    assert!(
        violation_text(&e, "slot_start").contains("14 days"),
        "{e:?}"
    );

    // One key moves both.
    let app = spawn_app_with(|s| s.callbacks.slot_horizon_days = 30).await;
    let mut c = callbacks(&app);
    assert!(c.list_slots(list(30)).await.is_ok());
    assert!(c.request_callback(far).await.is_ok());
}

#[tokio::test]
async fn errors_name_states_and_unknown_values_as_the_api_does() {
    let app = spawn_app().await;
    let mut c = callbacks(&app);
    let cb = request(&app, asap("general", NY)).await.callback.unwrap();
    let cancel = pb::CancelCallbackRequest {
        callback_id: cb.callback_id.clone(),
        reason: String::new(),
    };
    c.cancel_callback(cancel.clone()).await.unwrap();
    let e = c.cancel_callback(cancel).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition);
    assert!(e.message().contains("CALLBACK_STATE_CANCELLED"), "{e:?}");
    assert!(!e.message().contains("Cancelled"), "{e:?}");

    let e = c
        .list_callbacks(pb::ListCallbacksRequest {
            state: 99,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(violation_text(&e, "state"), "unknown value 99");
    let e = dispatch(&app)
        .report_dispatch_outcome(pb::ReportDispatchOutcomeRequest {
            attempt_id: "01ZZZZZZZZZZZZZZZZZZZZZZZZ".into(),
            outcome: 99,
        })
        .await
        .unwrap_err();
    assert_eq!(violation_text(&e, "outcome"), "unknown value 99");
    let e = dispatch(&app)
        .report_dispatch_outcome(pb::ReportDispatchOutcomeRequest {
            attempt_id: "01ZZZZZZZZZZZZZZZZZZZZZZZZ".into(),
            outcome: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(violation_text(&e, "outcome"), "is required");
    let e = app
        .routing()
        .report_agent_state(pb::ReportAgentStateRequest {
            agent_id: "a1".into(),
            state: 99,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(violation_text(&e, "state"), "unknown value 99");
    let e = app
        .routing()
        .report_call_event(pb::ReportCallEventRequest {
            call_id: "c1".into(),
            r#type: 99,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(violation_text(&e, "type"), "unknown value 99");
}

#[tokio::test]
async fn a_customer_id_that_is_not_on_file_is_not_found_and_stores_nothing() {
    let app = spawn_app().await;
    let mut c = callbacks(&app);
    let mut req = asap("general", NY);
    req.customer_id = "cust-typo".into();
    let e = c.request_callback(req.clone()).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");
    assert!(e.message().contains("cust-typo"), "{e:?}");
    let all = c
        .list_callbacks(pb::ListCallbacksRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(all.callbacks.is_empty());
    app.customers()
        .upsert_customer(pb::UpsertCustomerRequest {
            customer: Some(pb::Customer {
                customer_id: "cust-typo".into(),
                phone_numbers: vec![NY.into()],
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    let cb = request(&app, req).await.callback.unwrap();
    assert_eq!(cb.customer_id, "cust-typo");
}

/// The example plan with `general` dialing customer-first.
fn general_customer_first() -> String {
    let plan = crate::plans::uk_to_sales().replace(
        "[queues.callback]\noffer_after_ewt_secs = 120\n",
        "[queues.callback]\noffer_after_ewt_secs = 120\ndialing = \"customer_first\"\n",
    );
    assert!(
        plan.contains("customer_first"),
        "the example plan changed shape"
    );
    plan
}

#[tokio::test]
async fn customer_first_dials_no_more_customers_than_agents_free_to_take_them() {
    let app = spawn_app().await;
    app.plans()
        .apply_plan(crate::plans::apply(&general_customer_first(), 1))
        .await
        .unwrap();
    let mut d = dialer(&app, "d1").await;
    for i in 0..5 {
        request(&app, asap("general", &format!("+1212555010{i}"))).await;
    }
    // No agent staffed: nobody is dialed into an empty queue.
    nothing(&mut d).await;
    // Agents free one at a time: one customer dialed for each, and the dispatch
    // names no agent (the platform connects the customer to the next free one).
    agent(&app, "a1", &["support"], pb::AgentState::Available, 1).await;
    let first = next(&mut d).await;
    assert_eq!(first.agent_id, "");
    nothing(&mut d).await;
    agent(&app, "a2", &["support"], pb::AgentState::Available, 2).await;
    next(&mut d).await;
    nothing(&mut d).await;
    // A new caller does not take an agent counted for a customer being dialed.
    let c = app.route(call("live-1", NY)).await;
    assert_eq!(c.reserved_agent_id, "");
    // Two agents free at once: two more customers dialed, not three.
    agent(&app, "a3", &["support"], pb::AgentState::Available, 3).await;
    agent(&app, "a4", &["support"], pb::AgentState::Available, 4).await;
    next(&mut d).await;
    next(&mut d).await;
    nothing(&mut d).await;
    // The first customer answered: their agent is busy, not handed on.
    let r = report(&app, &first.attempt_id, pb::DispatchOutcome::Connected).await;
    assert!(!r.duplicate);
    nothing(&mut d).await;
}

#[tokio::test]
async fn shutdown_ends_open_dispatch_streams_at_once_and_keeps_their_leases() {
    let app = spawn_app_with(|s| s.server.shutdown_grace_secs = 30).await;
    let (mut d, cb, dispatched) = one_dispatched(&app, "d").await;
    let started = std::time::Instant::now();
    // Restart, not stop: `restart` brings up the next server on the same store.
    let app = app.restart().await;
    let took = started.elapsed();
    // A stream that stayed open held shutdown for the whole grace period (30 s here).
    assert!(took < Duration::from_secs(5), "shutdown took {took:?}");
    let ended = tokio::time::timeout(Duration::from_secs(5), d.message())
        .await
        .expect("the stream ends");
    let status = ended.expect_err("the stream ends with a status");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(status.message().contains("draining"), "{status:?}");
    // The lease was kept: after it runs out the same attempt goes out again.
    assert_eq!(
        get(&app, &cb.callback_id).await.state,
        pb::CallbackState::Dispatched as i32
    );
    app.clock.advance(chrono::Duration::seconds(120));
    let mut d = dialer(&app, "d-after").await;
    assert_eq!(next(&mut d).await.attempt_id, dispatched.attempt_id);
}
