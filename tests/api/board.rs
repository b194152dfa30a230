//! `StatsService.WatchQueueStats`: the wallboard stream (snapshot, changes, coalescing,
//! slow watchers dropped and counted while routing goes on).

use std::time::Duration;

use holdless::api::pb;
use tonic::Streaming;

use crate::helpers::*;
use crate::live::{agent, event};

const NY: &str = "+12125550100";
/// Bound on waiting for a message that is due (a failing test, not a slow one).
const WAIT: Duration = Duration::from_secs(20);

async fn watch(
    app: &TestApp,
    queues: &[&str],
    rate: f64,
) -> Result<Streaming<pb::WatchQueueStatsResponse>, tonic::Status> {
    stats(app)
        .watch_queue_stats(pb::WatchQueueStatsRequest {
            queue_ids: queues.iter().map(|q| q.to_string()).collect(),
            max_updates_per_second: rate,
        })
        .await
        .map(|r| r.into_inner())
}

async fn next(stream: &mut Streaming<pb::WatchQueueStatsResponse>) -> pb::WatchQueueStatsResponse {
    tokio::time::timeout(WAIT, stream.message())
        .await
        .expect("a message within the bound")
        .expect("stream ok")
        .expect("stream open")
}

/// Reads until a message shows `queue` with `pred` true; returns how many messages
/// that took.
async fn until(
    stream: &mut Streaming<pb::WatchQueueStatsResponse>,
    queue: &str,
    pred: impl Fn(&pb::QueueBoard) -> bool,
) -> (usize, pb::QueueBoard) {
    let mut n = 0;
    loop {
        let m = next(stream).await;
        n += 1;
        if let Some(b) = m.queues.iter().find(|b| b.queue_id == queue && pred(b)) {
            return (n, b.clone());
        }
    }
}

#[tokio::test]
async fn the_first_message_is_a_snapshot_of_every_requested_queue() {
    let app = spawn_app().await;
    agent(&app, "a1", &["support"], pb::AgentState::Busy, 0).await;
    agent(&app, "a2", &["support"], pb::AgentState::WrapUp, 0).await;
    agent(&app, "a3", &["support"], pb::AgentState::Offline, 0).await;
    app.route(call("s1", NY)).await;
    app.clock.advance(chrono::Duration::seconds(30));

    let mut all = watch(&app, &[], 0.0).await.unwrap();
    let first = next(&mut all).await;
    assert!(first.snapshot);
    let plan_queues = [
        "general",
        "priority",
        "uk_support",
        "sales",
        "billing",
        "fraud",
        "supervisor",
    ];
    for q in plan_queues {
        assert!(
            first.queues.iter().any(|b| b.queue_id == q),
            "{q} in the snapshot"
        );
    }

    let mut one = watch(&app, &["general"], 1.0).await.unwrap();
    let first = next(&mut one).await;
    assert!(first.snapshot);
    assert_eq!(first.queues.len(), 1);
    let g = &first.queues[0];
    assert_eq!(g.queue_id, "general");
    assert_eq!(g.name, "General support (North America)");
    assert_eq!((g.waiting, g.longest_wait.unwrap().seconds), (1, 30));
    assert_eq!(
        (
            g.agents_available,
            g.agents_busy,
            g.agents_wrap_up,
            g.agents_away
        ),
        (0, 1, 1, 1)
    );
    assert!(g.estimated_wait.is_some());
    assert_eq!(g.service_level_target, 0.8);
    assert_eq!(g.answer_target.unwrap().seconds, 20);
    assert_eq!(g.offered_today, 0, "nothing finished yet today");
    assert_eq!(g.service_level_today, None);
}

#[tokio::test]
async fn a_routed_call_changes_waiting_in_the_next_message() {
    let app = spawn_app().await;
    let mut s = watch(&app, &["general", "sales"], 0.0).await.unwrap();
    let first = next(&mut s).await;
    assert_eq!(first.queues.len(), 2);
    app.route(call("c1", NY)).await;
    let m = next(&mut s).await;
    assert!(!m.snapshot);
    assert_eq!(
        m.queues
            .iter()
            .map(|b| b.queue_id.as_str())
            .collect::<Vec<_>>(),
        vec!["general"],
        "only the queue that changed"
    );
    assert_eq!(m.queues[0].waiting, 1);

    // An abandoned call shows in today's figures.
    app.clock.advance(chrono::Duration::seconds(30));
    event(&app, "c1", pb::CallEventType::Abandoned, "", "")
        .await
        .unwrap();
    let (_, g) = until(&mut s, "general", |b| b.abandoned_today == 1).await;
    assert_eq!((g.waiting, g.offered_today), (0, 1));
    assert_eq!(
        g.service_level_today,
        Some(0.0),
        "abandoned after the 20 s target"
    );
    assert_eq!(g.abandon_rate_today, Some(1.0));
}

#[tokio::test]
async fn bad_requests_are_refused_and_change_nothing() {
    let app = spawn_app().await;
    let e = watch(&app, &["general", "nope"], 0.0).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
    assert!(e.message().contains("nope"), "{e:?}");
    let e = watch(&app, &[""], 0.0).await.unwrap_err();
    assert_eq!(violations(&e), vec!["queue_ids[0]"]);
    for rate in [-1.0, f64::NAN, f64::INFINITY, 0.001, 2.5] {
        let e = watch(&app, &[], rate).await.unwrap_err();
        assert_eq!(violations(&e), vec!["max_updates_per_second"], "{rate}");
    }
}

/// Many changes in a burst give at most the watcher's rate in messages. The rate
/// allowed here (20 a second, from `stats.watch_max_per_sec`) bounds the messages by
/// the time the burst took, so a slower machine only loosens the bound; without
/// coalescing every one of the 60 calls would be a message. (The exact coalescing,
/// in tokio's paused time, is `service::board`'s unit test.)
#[tokio::test]
async fn a_burst_of_changes_is_coalesced_to_the_rate() {
    let app = spawn_app_with(|s| s.stats.watch_max_per_sec = 20.0).await;
    let mut s = watch(&app, &["general"], 0.0).await.unwrap();
    next(&mut s).await;
    let started = tokio::time::Instant::now();
    let reader = tokio::spawn(async move {
        let (n, _) = until(&mut s, "general", |b| b.waiting == 60).await;
        (n, started.elapsed())
    });
    for i in 0..60 {
        app.route(call(&format!("burst-{i}"), NY)).await;
    }
    let (messages, took) = reader.await.unwrap();
    let allowed = (took.as_secs_f64() * 20.0).floor() as usize + 1;
    assert!(
        messages <= allowed,
        "{messages} messages in {took:?} (at most {allowed} at 20 a second)"
    );
}

/// A watcher that stops reading is dropped and counted; RouteCall keeps answering
/// meanwhile, and other watchers keep getting boards.
#[tokio::test]
async fn a_watcher_that_does_not_read_is_dropped_and_counted_while_routing_goes_on() {
    let app = spawn_app_with(|s| s.stats.watch_max_per_sec = 1000.0).await;
    let dropped_before = gauge(&scrape(&app).await, "holdless_stats_watchers_dropped_total")
        .expect("dropped counter exported from start");
    // A small HTTP/2 window, so the unread stream backs up into holdless quickly.
    let slow_channel = tonic::transport::Endpoint::from_shared(format!("http://{}", app.addr))
        .unwrap()
        .initial_stream_window_size(Some(1024))
        .initial_connection_window_size(Some(1024))
        .connect()
        .await
        .unwrap();
    let mut slow = pb::stats_service_client::StatsServiceClient::new(slow_channel)
        .watch_queue_stats(pb::WatchQueueStatsRequest {
            queue_ids: vec![],
            max_updates_per_second: 0.0,
        })
        .await
        .unwrap()
        .into_inner();
    let mut reading = watch(&app, &["general"], 1.0).await.unwrap();
    next(&mut reading).await;

    let mut dropped = false;
    for i in 0..5_000 {
        // Each round changes the boards (an agent's state flips; calls fill the line
        // until it is full): one more message for the watcher that reads none.
        let state = if i % 2 == 0 {
            pb::AgentState::Busy
        } else {
            pb::AgentState::WrapUp
        };
        agent(&app, "flood-agent", &["support"], state, i).await;
        app.route(call(&format!("flood-{i}"), NY)).await;
        if i % 50 == 49 {
            let now = gauge(&scrape(&app).await, "holdless_stats_watchers_dropped_total");
            if now.is_some_and(|n| n > dropped_before) {
                dropped = true;
                break;
            }
        }
    }
    assert!(
        dropped,
        "the watcher that read nothing was dropped and counted"
    );
    // Routing answers on, and the watcher that reads still gets boards.
    app.route(call("after-drop", NY)).await;
    let (_, g) = until(&mut reading, "general", |b| b.waiting > 1).await;
    assert!(g.waiting > 1);
    // The dropped stream ends with RESOURCE_EXHAUSTED once its backlog is read.
    let end = tokio::time::timeout(WAIT, async {
        loop {
            match slow.message().await {
                Ok(Some(_)) => continue,
                Ok(None) => return None,
                Err(e) => return Some(e.code()),
            }
        }
    })
    .await
    .expect("the dropped stream ends");
    assert_eq!(end, Some(tonic::Code::ResourceExhausted));
}

/// Open callbacks show on their queue's board: pending (and due), then dispatched
/// once a dialer takes one for a free agent.
#[tokio::test]
async fn callbacks_show_pending_due_and_dispatched() {
    let app = spawn_app().await;
    let mut s = watch(&app, &["general"], 0.0).await.unwrap();
    next(&mut s).await;
    pb::callback_service_client::CallbackServiceClient::new(app.channel.clone())
        .request_callback(pb::RequestCallbackRequest {
            queue_id: "general".into(),
            phone_number: NY.into(),
            ..Default::default()
        })
        .await
        .expect("callback requested");
    let (_, g) = until(&mut s, "general", |b| b.callbacks_pending == 1).await;
    assert_eq!((g.callbacks_due, g.callbacks_dispatched), (1, 0));

    let mut dialer = pb::dispatch_service_client::DispatchServiceClient::new(app.channel.clone())
        .watch_dispatches(pb::WatchDispatchesRequest {
            dialer_id: "dialer-1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    agent(&app, "a1", &["support"], pb::AgentState::Available, 0).await;
    tokio::time::timeout(WAIT, dialer.message())
        .await
        .expect("a dispatch")
        .unwrap()
        .expect("dispatched");
    let (_, g) = until(&mut s, "general", |b| b.callbacks_dispatched == 1).await;
    assert_eq!((g.callbacks_pending, g.callbacks_due), (0, 0));
    assert_eq!(g.agents_busy, 1, "the reserved agent counts as busy");
    assert_eq!(g.agents_reserved, 1);
}

/// At shutdown an open wallboard stream ends at once with UNAVAILABLE: it does not
/// hold the server for the grace period (set far beyond the bound here).
#[tokio::test]
async fn wallboard_streams_end_at_once_on_shutdown() {
    let app = spawn_app_with(|s| s.server.shutdown_grace_secs = 3600).await;
    let mut s = watch(&app, &[], 0.0).await.unwrap();
    next(&mut s).await;
    tokio::time::timeout(WAIT, app.stop())
        .await
        .expect("shutdown does not wait for the wallboard")
        .expect("clean shutdown");
    let end = tokio::time::timeout(WAIT, s.message())
        .await
        .expect("the stream ends");
    assert_eq!(end.unwrap_err().code(), tonic::Code::Unavailable);
}
