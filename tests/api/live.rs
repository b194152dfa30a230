//! Live queue state through gRPC: agents, events, positions, waits, reservations,
//! context that follows the caller.

use std::collections::HashSet;

use holdless::api::pb;
use prost_types::{Duration, Timestamp};

use crate::helpers::*;

pub async fn agent(
    app: &TestApp,
    id: &str,
    skills: &[&str],
    state: pb::AgentState,
    secs: i64,
) -> bool {
    app.routing()
        .report_agent_state(pb::ReportAgentStateRequest {
            agent_id: id.into(),
            skills: skills.iter().map(|s| (s.to_string(), 1)).collect(),
            state: state as i32,
            event_time: Some(Timestamp {
                seconds: 1_790_000_000 + secs,
                nanos: 0,
            }),
        })
        .await
        .expect("agent report ok")
        .into_inner()
        .applied
}

pub async fn event(
    app: &TestApp,
    call_id: &str,
    kind: pb::CallEventType,
    agent: &str,
    queue: &str,
) -> Result<bool, tonic::Status> {
    app.routing()
        .report_call_event(pb::ReportCallEventRequest {
            call_id: call_id.into(),
            r#type: kind as i32,
            agent_id: agent.into(),
            queue_id: queue.into(),
            handle_time: (kind == pb::CallEventType::Ended).then_some(Duration {
                seconds: 200,
                nanos: 0,
            }),
        })
        .await
        .map(|r| r.into_inner().duplicate)
}

const NY: &str = "+12125550100";

#[tokio::test]
async fn five_calls_with_three_busy_agents_line_up_with_growing_waits() {
    let app = spawn_app().await;
    for a in ["a1", "a2", "a3"] {
        agent(&app, a, &["support"], pb::AgentState::Busy, 0).await;
    }
    let mut waits = Vec::new();
    for i in 1..=5u32 {
        let d = app.route(call(&format!("c{i}"), NY)).await;
        assert_eq!(d.queue_id, "general");
        assert_eq!(d.position, i);
        assert_eq!(d.reserved_agent_id, "");
        let w = d.estimated_wait.expect("known wait");
        waits.push(w.seconds);
    }
    // AHT 300 s (the plan's seed) over 3 agents: 100 s per place in line.
    assert_eq!(waits, vec![100, 200, 300, 400, 500]);
}

#[tokio::test]
async fn one_free_agent_is_reserved_for_exactly_one_of_100_concurrent_calls() {
    let app = spawn_app().await;
    agent(&app, "solo", &["support"], pb::AgentState::Available, 0).await;
    let mut tasks = Vec::new();
    for i in 0..100 {
        let mut client = app.routing();
        tasks.push(tokio::spawn(async move {
            client
                .route_call(call(&format!("burst-{i}"), NY))
                .await
                .unwrap()
                .into_inner()
                .decision
                .unwrap()
        }));
    }
    let mut reserved = Vec::new();
    let mut positions = HashSet::new();
    for t in tasks {
        let d = t.await.unwrap();
        if d.reserved_agent_id.is_empty() {
            assert!(
                positions.insert(d.position),
                "position {} given twice",
                d.position
            );
        } else {
            reserved.push((d.reserved_agent_id, d.position));
        }
    }
    assert_eq!(reserved, vec![("solo".to_string(), 0)]);
    assert_eq!(positions, (1..=99).collect::<HashSet<u32>>());
}

#[tokio::test]
async fn gold_customers_last_agent_is_preferred_when_available() {
    let app = spawn_app().await;
    app.customers()
        .upsert_customer(pb::UpsertCustomerRequest {
            customer: Some(pb::Customer {
                customer_id: "gold-1".into(),
                phone_numbers: vec![NY.into()],
                status: "gold".into(),
                last_agent_id: "favourite".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    // "idle" has been idle longest, but the rule prefers the customer's last agent.
    agent(
        &app,
        "idle",
        &["support", "priority"],
        pb::AgentState::Available,
        0,
    )
    .await;
    agent(
        &app,
        "favourite",
        &["support", "priority"],
        pb::AgentState::Available,
        50,
    )
    .await;
    let d = app.route(call("g1", NY)).await;
    assert_eq!(d.queue_id, "priority");
    assert_eq!(d.reserved_agent_id, "favourite");
    assert_eq!(d.preferred_agent_id, "favourite");
}

#[tokio::test]
async fn a_busy_preferred_agent_is_waited_for_and_nobody_else_is_reserved() {
    let app = spawn_app().await;
    app.customers()
        .upsert_customer(pb::UpsertCustomerRequest {
            customer: Some(pb::Customer {
                customer_id: "gold-1".into(),
                phone_numbers: vec![NY.into()],
                status: "gold".into(),
                last_agent_id: "favourite".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    agent(
        &app,
        "idle",
        &["support", "priority"],
        pb::AgentState::Available,
        0,
    )
    .await;
    agent(
        &app,
        "favourite",
        &["support", "priority"],
        pb::AgentState::Busy,
        1,
    )
    .await;
    // One answer: wait for the favourite, reserve nobody else.
    let d = app.route(call("g1", NY)).await;
    assert_eq!(d.queue_id, "priority");
    assert_eq!(d.preferred_agent_id, "favourite");
    assert!(d.preferred_agent_timeout_seconds > 0);
    assert_eq!(
        d.reserved_agent_id, "",
        "nobody else while waiting for them"
    );
    assert_eq!(d.position, 1);
    // The favourite frees up within the wait: the call is theirs.
    agent(
        &app,
        "favourite",
        &["support", "priority"],
        pb::AgentState::Available,
        5,
    )
    .await;
    let d = app.route(call("g1", NY)).await;
    assert_eq!(d.reserved_agent_id, "favourite");
    assert_eq!(d.position, 0);

    // Another gold call while the favourite is held: it waits for them, and after the
    // rule's timeout it is an ordinary member of the line, so the free agent takes it.
    let d = app.route(call("g2", NY)).await;
    assert_eq!(d.reserved_agent_id, "");
    let wait = d.preferred_agent_timeout_seconds;
    assert!(wait > 0);
    app.clock
        .advance(chrono::Duration::seconds(i64::from(wait) + 1));
    let d = app.route(call("g2", NY)).await;
    assert_eq!(d.reserved_agent_id, "idle");
    assert_eq!(d.preferred_agent_id, "", "the wait for them is over");
}

#[tokio::test]
async fn a_new_call_never_takes_the_agent_of_calls_already_waiting() {
    let app = spawn_app().await;
    agent(&app, "a1", &["support"], pb::AgentState::Busy, 0).await;
    for id in ["w1", "w2", "w3"] {
        let d = app.route(call(id, NY)).await;
        assert_eq!(d.reserved_agent_id, "");
    }
    // An agent frees up: the head of the line gets them, at once.
    agent(&app, "a2", &["support"], pb::AgentState::Available, 1).await;
    // A new call is placed behind the three, with an honest wait.
    let d = app.route(call("new", NY)).await;
    assert_eq!(d.reserved_agent_id, "", "no jumping the line");
    assert_eq!(d.position, 3);
    assert!(d.estimated_wait.is_some_and(|w| w.seconds > 0));
    // The head asked again is told its agent; the others moved up one.
    let d = app.route(call("w1", NY)).await;
    assert_eq!(d.reserved_agent_id, "a2");
    assert_eq!(d.position, 0);
    assert_eq!(app.route(call("w2", NY)).await.position, 1);
    // Asking about w3 first does not take anything either.
    let d = app.route(call("w3", NY)).await;
    assert_eq!((d.position, d.reserved_agent_id.as_str()), (2, ""));
    // The reservation lapses (15 s): the agent stays with the head, and the queue never
    // shows free agents beside waiting calls.
    app.clock.advance(chrono::Duration::seconds(16));
    let stats = pb::stats_service_client::StatsServiceClient::new(app.channel.clone())
        .get_queue_stats(pb::GetQueueStatsRequest {
            queue_id: "general".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let q = &stats.queues[0];
    assert_eq!(q.agents_available, 0, "{q:?}");
    assert_eq!(q.waiting, 3, "{q:?}");
    assert_eq!(app.route(call("w1", NY)).await.reserved_agent_id, "a2");
}

#[tokio::test]
async fn a_what_if_route_places_reserves_and_records_nothing() {
    let app = spawn_app().await;
    agent(&app, "a1", &["support"], pb::AgentState::Available, 0).await;
    let mut req = call("probe", NY);
    req.dry_run = true;
    for _ in 0..3 {
        let d = app.route(req.clone()).await;
        assert!(d.dry_run);
        assert_eq!(d.reserved_agent_id, "a1", "the agent routing would reserve");
    }
    // Nothing changed: a real call still gets the agent, and the probe is unknown.
    let d = app.route(call("real", NY)).await;
    assert!(!d.dry_run);
    assert_eq!(d.reserved_agent_id, "a1");
    let err = event(&app, "probe", pb::CallEventType::Abandoned, "", "")
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    // With the agent taken, a what-if tells the place a call would get.
    let d = app.route(req.clone()).await;
    assert_eq!((d.position, d.reserved_agent_id.as_str()), (1, ""));
    let d = app.route(call("second", NY)).await;
    assert_eq!(d.position, 1, "the probe holds no place");
}

#[tokio::test]
async fn caller_who_called_before_gets_the_earlier_contact_in_context() {
    let app = spawn_app().await;
    agent(&app, "a1", &["support"], pb::AgentState::Available, 0).await;
    let first = app.route(call("first", NY)).await;
    assert_eq!(first.reserved_agent_id, "a1");
    assert!(first.agent_context.unwrap().recent_contacts.is_empty());
    event(&app, "first", pb::CallEventType::Answered, "a1", "")
        .await
        .unwrap();
    event(&app, "first", pb::CallEventType::Ended, "", "")
        .await
        .unwrap();

    app.clock.advance(chrono::Duration::days(3));
    let second = app.route(call("second", NY)).await;
    let ctx = second.agent_context.unwrap();
    assert_eq!(ctx.recent_contacts.len(), 1);
    let c = &ctx.recent_contacts[0];
    assert_eq!(
        (c.call_id.as_str(), c.queue_id.as_str(), c.agent_id.as_str()),
        ("first", "general", "a1")
    );
    assert_eq!(c.outcome, pb::ContactOutcome::Completed as i32);

    // Eight days later the first call is out of the 7-day context.
    app.clock.advance(chrono::Duration::days(5));
    let third = app.route(call("third", NY)).await;
    assert!(third.agent_context.unwrap().recent_contacts.is_empty());
}

#[tokio::test]
async fn call_transferred_back_to_a_visited_queue_is_flagged_and_goes_to_a_supervisor() {
    let app = spawn_app().await;
    let d = app.route(call("loop", NY)).await;
    assert_eq!(d.queue_id, "general");
    event(&app, "loop", pb::CallEventType::Answered, "a1", "")
        .await
        .unwrap();
    event(&app, "loop", pb::CallEventType::Transferred, "", "billing")
        .await
        .unwrap();
    event(&app, "loop", pb::CallEventType::Answered, "b1", "")
        .await
        .unwrap();
    event(&app, "loop", pb::CallEventType::Transferred, "", "")
        .await
        .unwrap();
    // The platform asks again where the call goes; the plan says general, where it was.
    let mut req = call("loop", NY);
    req.explain = true;
    let d = app.route(req).await;
    let ctx = d.agent_context.unwrap();
    assert!(ctx.transfer_loop);
    assert_eq!(ctx.transfer_count, 2);
    assert_eq!(d.queue_id, "supervisor");
    assert_eq!(d.rule_id, "transfer-loop");
    assert_eq!(ctx.visited_queues, vec!["general", "billing", "supervisor"]);
    // Asked about again while it waits there, it stays flagged, with the supervisors.
    let again = app.route(call("loop", NY)).await;
    assert_eq!(again.queue_id, "supervisor");
    let ctx = again.agent_context.unwrap();
    assert!(ctx.transfer_loop);
    assert_eq!(ctx.visited_queues, vec!["general", "billing", "supervisor"]);
}

#[tokio::test]
async fn long_wait_offers_a_callback_with_the_reason() {
    let app = spawn_app().await;
    agent(&app, "a1", &["support"], pb::AgentState::Busy, 0).await;
    // One busy agent, AHT 300 s: the first caller waits 300 s > 120 s threshold.
    let d = app.route(call("long", NY)).await;
    assert!(d.offer_callback);
    assert_eq!(d.offer_reason, pb::OfferReason::LongWait as i32);

    // With nobody staffed in billing the wait is unknown, not made up.
    let mut req = call("nobody", NY);
    req.intent = "billing".into();
    let d = app.route(req).await;
    assert_eq!(d.queue_id, "billing");
    assert_eq!(d.estimated_wait, None);
    assert!(d.offer_callback);
    assert_eq!(d.offer_reason, pb::OfferReason::NoAgents as i32);

    // An agent frees up: the caller waiting in billing gets them.
    agent(&app, "b1", &["billing"], pb::AgentState::Available, 1).await;
    let mut req = call("nobody", NY);
    req.intent = "billing".into();
    assert_eq!(app.route(req).await.reserved_agent_id, "b1");
    // A free agent for a new caller: no offer.
    agent(&app, "b2", &["billing"], pb::AgentState::Available, 2).await;
    let mut req = call("quick", NY);
    req.intent = "billing".into();
    let d = app.route(req).await;
    assert_eq!(d.reserved_agent_id, "b2");
    assert!(!d.offer_callback);
}

#[tokio::test]
async fn unknown_calls_and_impossible_transitions_are_refused_repeats_are_harmless() {
    let app = spawn_app().await;
    let e = event(&app, "ghost", pb::CallEventType::Answered, "a1", "")
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition);

    app.route(call("c", NY)).await;
    assert!(!event(&app, "c", pb::CallEventType::Abandoned, "", "")
        .await
        .unwrap());
    assert!(
        event(&app, "c", pb::CallEventType::Abandoned, "", "")
            .await
            .unwrap(),
        "repeat is a duplicate"
    );
    let e = event(&app, "c", pb::CallEventType::Answered, "a1", "")
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition);

    let e = event(&app, "c", pb::CallEventType::Unspecified, "", "")
        .await
        .unwrap_err();
    assert_eq!(violations(&e), vec!["type"]);
    let e = event(&app, "c", pb::CallEventType::Answered, "", "")
        .await
        .unwrap_err();
    assert_eq!(violations(&e), vec!["agent_id"]);

    // Agent events: older or repeated timestamps change nothing.
    assert!(agent(&app, "a9", &["support"], pb::AgentState::Busy, 10).await);
    assert!(!agent(&app, "a9", &["support"], pb::AgentState::Available, 5).await);
    assert!(!agent(&app, "a9", &["support"], pb::AgentState::Available, 10).await);
    let e = app
        .routing()
        .report_agent_state(pb::ReportAgentStateRequest {
            agent_id: "a9".into(),
            skills: Default::default(),
            state: pb::AgentState::Reserved as i32,
            event_time: None,
        })
        .await
        .unwrap_err();
    assert_eq!(violations(&e), vec!["state", "event_time"]);
}

#[tokio::test]
async fn queue_stats_show_the_line_agents_and_wait_estimate_error() {
    let app = spawn_app().await;
    agent(&app, "a1", &["support"], pb::AgentState::Busy, 0).await;
    agent(&app, "a2", &["support"], pb::AgentState::WrapUp, 0).await;
    let d = app.route(call("s1", NY)).await;
    assert_eq!(d.estimated_wait.unwrap().seconds, 150);
    app.clock.advance(chrono::Duration::seconds(90));
    let mut stats = pb::stats_service_client::StatsServiceClient::new(app.channel.clone());
    let q = stats
        .get_queue_stats(pb::GetQueueStatsRequest {
            queue_id: "general".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .queues
        .remove(0);
    assert_eq!(
        (
            q.waiting,
            q.agents_busy,
            q.agents_wrap_up,
            q.agents_available
        ),
        (1, 1, 1, 0)
    );
    assert_eq!(q.longest_wait.unwrap().seconds, 90);
    event(&app, "s1", pb::CallEventType::Answered, "a2", "")
        .await
        .unwrap();
    let q = stats
        .get_queue_stats(pb::GetQueueStatsRequest {
            queue_id: "general".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .queues
        .remove(0);
    assert_eq!(q.waiting, 0);
    assert_eq!(q.ewt_samples, 1);
    assert_eq!(
        q.ewt_mean_absolute_error.unwrap().seconds,
        60,
        "told 150 s, waited 90 s"
    );
    let e = stats
        .get_queue_stats(pb::GetQueueStatsRequest {
            queue_id: "nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
}

#[tokio::test]
async fn after_a_restart_history_remains_and_unknown_call_events_are_refused_cleanly() {
    let app = spawn_app().await;
    app.route(call("before", NY)).await;
    event(&app, "before", pb::CallEventType::Answered, "a1", "")
        .await
        .unwrap();
    let app = app.restart().await;
    let e = event(&app, "before", pb::CallEventType::Ended, "", "")
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition);
    let d = app.route(call("after", NY)).await;
    let ctx = d.agent_context.unwrap();
    assert_eq!(ctx.recent_contacts.len(), 1);
    assert_eq!(ctx.recent_contacts[0].call_id, "before");
}
