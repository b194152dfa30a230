//! One leader at a time: nodes sharing a lease (in memory here; the PostgreSQL lease in
//! tests/api/failover.rs). Real servers on loopback, real time: the lease lasts 2 s.

use std::sync::Arc;
use std::time::{Duration, Instant};

use holdless::app::AppError;
use holdless::cluster::memory::MemoryLease;
use holdless::cluster::{Holder, LEADER_ADDR_KEY, NOT_LEADER_REASON};
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;
use tonic_types::StatusExt;

use crate::helpers::{call, spawn_cluster_node, wait_serving, TestApp};

async fn health(app: &TestApp) -> i32 {
    HealthClient::new(app.channel.clone())
        .check(HealthCheckRequest {
            service: "holdless.v1.RoutingService".into(),
        })
        .await
        .expect("health answers on every node")
        .into_inner()
        .status
}

/// RouteCall on `app` until it is refused naming a leader (bounded: a follower learns
/// the leader at its first claim, at once).
async fn refusal_naming_leader(app: &TestApp) -> tonic::Status {
    let t0 = Instant::now();
    loop {
        let status = app
            .routing()
            .route_call(call("c-follower", "+12125550100"))
            .await
            .expect_err("a follower refuses");
        let named = status
            .get_details_error_info()
            .is_some_and(|i| i.metadata.contains_key(LEADER_ADDR_KEY));
        if named {
            return status;
        }
        assert!(t0.elapsed() < Duration::from_secs(5), "{status:?}");
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn follower_is_not_serving_and_names_the_leader_then_takes_over_when_it_leaves() {
    let lease = Arc::new(MemoryLease::new());
    let a = spawn_cluster_node(lease.clone(), |_| {}).await;
    wait_serving(a.channel.clone()).await;
    let b = spawn_cluster_node(lease.clone(), |_| {}).await;

    let refused = refusal_naming_leader(&b).await;
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    let info = refused.get_details_error_info().expect("ErrorInfo");
    assert_eq!(info.reason, NOT_LEADER_REASON);
    assert_eq!(info.metadata[LEADER_ADDR_KEY], a.addr.to_string());
    assert_eq!(health(&b).await, ServingStatus::NotServing as i32);
    assert_eq!(health(&a).await, ServingStatus::Serving as i32);
    a.route(call("c-1", "+12125550100")).await;

    // A leader that shuts down releases the lease: the follower need not wait it out.
    let left = Instant::now();
    a.stop().await.expect("clean shutdown");
    wait_serving(b.channel.clone()).await;
    let took = left.elapsed();
    assert!(took < Duration::from_secs(2), "took over in {took:?}");
    b.route(call("c-2", "+12125550100")).await;
    assert_eq!(
        lease.holder().expect("held").advertise_addr,
        b.addr.to_string()
    );
}

#[tokio::test]
async fn leader_whose_lease_was_taken_stops_serving_and_exits_lost_lease() {
    let lease = Arc::new(MemoryLease::new());
    let mut a = spawn_cluster_node(lease.clone(), |_| {}).await;
    wait_serving(a.channel.clone()).await;
    // Another node took the lease under a newer epoch (a's renewals stalled).
    lease.force(
        Holder {
            node_id: "b".into(),
            epoch: 2,
            advertise_addr: "127.0.0.1:9".into(),
        },
        Duration::from_secs(60),
    );
    let ended = a.exited(Duration::from_secs(5)).await;
    assert!(
        matches!(&ended, Err(AppError::LostLease(r)) if r.contains("epoch 1")),
        "{ended:?}"
    );
}

#[tokio::test]
async fn leader_cut_off_from_the_lease_stops_serving_before_the_lease_expires() {
    let lease = Arc::new(MemoryLease::new());
    let mut a = spawn_cluster_node(lease.clone(), |_| {}).await;
    wait_serving(a.channel.clone()).await;
    lease.set_hang(true);
    let expires = lease.expires_at().expect("held");
    let ended = a.exited(Duration::from_secs(5)).await;
    assert!(matches!(ended, Err(AppError::LostLease(_))), "{ended:?}");
    let left = tokio::time::Instant::now();
    assert!(
        left < expires,
        "exited {:?} after the lease expired",
        left - expires
    );
}
