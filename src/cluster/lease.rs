//! The lease task: claims the lease as a follower, renews it as the leader, and steps
//! down when a renewal is refused or has not succeeded in time.
//!
//! Timing, for a lease of `ttl`: leaders renew every `ttl / 3`; followers poll every
//! `ttl / 10` (a claim that fails is one single-row UPDATE that changes nothing); a
//! failed renewal is retried every `ttl / 10`; a leader serves until `ttl - ttl / 4`
//! after the send time of its last successful renewal. So a leader that cannot reach
//! the database keeps serving for two or three attempts, then stops a quarter of a
//! lease before the database would let another node in, and a follower claims the
//! lease at most `ttl + ttl / 10` after the leader's last renewal.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::{sleep, sleep_until, timeout_at, Instant};

use super::{Claim, ClusterState, LeaseBackend};

/// The lease's rhythm, derived from its time to live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseTiming {
    pub ttl: Duration,
    /// Between a leader's renewals.
    pub renew_every: Duration,
    /// Between a follower's claims.
    pub poll_every: Duration,
    /// After a failed renewal, until the next attempt.
    pub retry_every: Duration,
    /// How long after a successful renewal was sent the leader may serve.
    pub serve_for: Duration,
}

impl LeaseTiming {
    pub fn from_ttl(ttl: Duration) -> Self {
        Self {
            ttl,
            renew_every: ttl / 3,
            poll_every: ttl / 10,
            retry_every: ttl / 10,
            serve_for: ttl - ttl / 4,
        }
    }
}

/// How the task ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseEnd {
    /// Asked to stop (shutdown); the lease, if held, was released.
    Stopped,
    /// Lost the lease; the role is `SteppedDown` with this reason.
    SteppedDown(String),
}

/// Runs until `stop` turns true or the lease is lost. Changes `state`'s role; the app
/// reacts to those changes (loads the store on `TakingOver`, exits on `SteppedDown`).
pub async fn run(
    backend: Arc<dyn LeaseBackend>,
    state: Arc<ClusterState>,
    timing: LeaseTiming,
    mut stop: watch::Receiver<bool>,
) -> LeaseEnd {
    let me = state.me().clone();
    // Follower: claim until won.
    let (epoch, mut serve_until) = loop {
        if *stop.borrow() {
            return LeaseEnd::Stopped;
        }
        let sent = Instant::now();
        // Bounded: a claim waits on the row lock of a write in flight, which a stalled
        // leader can hold until the database ends its idle transaction.
        match tokio::time::timeout(timing.ttl, backend.claim(&me, timing.ttl)).await {
            Ok(Ok(Claim::Won { epoch })) => break (epoch, sent + timing.serve_for),
            Ok(Ok(Claim::Held(holder))) => state.set_follower(holder),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot read the cluster lease; staying follower")
            }
            Err(_) => tracing::warn!(
                timeout_ms = timing.ttl.as_millis() as u64,
                "claiming the cluster lease timed out; staying follower"
            ),
        }
        tokio::select! {
            _ = sleep(timing.poll_every) => {}
            _ = stop.changed() => {}
        }
    };
    tracing::info!(node_id = %me.node_id, epoch, "won the cluster lease; taking over");
    metrics::counter!("holdless_cluster_takeovers_total").increment(1);
    state.take_over(epoch, serve_until);

    // Leader: renew until stopped or lost.
    let mut next = Instant::now() + timing.renew_every;
    loop {
        tokio::select! {
            _ = sleep_until(next) => {}
            _ = sleep_until(serve_until) => {
                return step_down(&state, format!(
                    "no successful lease renewal for {} ms", timing.serve_for.as_millis()
                ));
            }
            _ = stop.changed() => {
                if let Err(e) = backend.release(&me, epoch).await {
                    tracing::warn!(error = %e, "could not release the cluster lease; followers wait for it to expire");
                }
                return LeaseEnd::Stopped;
            }
        }
        if Instant::now() >= serve_until {
            // Woken late (a stall): the serving window is already over.
            return step_down(
                &state,
                "the lease ran out while this node was stalled".into(),
            );
        }
        let sent = Instant::now();
        match timeout_at(serve_until, backend.renew(&me, epoch, timing.ttl)).await {
            Ok(Ok(true)) => {
                serve_until = sent + timing.serve_for;
                state.extend(serve_until);
                next = sent + timing.renew_every;
            }
            Ok(Ok(false)) => {
                return step_down(
                    &state,
                    format!("epoch {epoch} is no longer the lease's (another node took over)"),
                );
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, epoch, "lease renewal failed; retrying");
                next = Instant::now() + timing.retry_every;
            }
            Err(_) => {
                return step_down(
                    &state,
                    format!(
                        "no successful lease renewal for {} ms",
                        timing.serve_for.as_millis()
                    ),
                );
            }
        }
    }
}

fn step_down(state: &ClusterState, reason: String) -> LeaseEnd {
    tracing::error!(node_id = %state.me().node_id, %reason, "lost the cluster lease: stepping down");
    metrics::counter!("holdless_cluster_stepdowns_total").increment(1);
    state.step_down(reason.clone());
    LeaseEnd::SteppedDown(reason)
}

#[cfg(test)]
mod tests {
    use super::super::memory::MemoryLease as FakeLease;
    use super::super::{Holder, NodeInfo, Role};
    use super::*;

    fn node(name: &str) -> NodeInfo {
        NodeInfo {
            node_id: name.into(),
            advertise_addr: format!("{name}:50051"),
        }
    }

    const TTL: Duration = Duration::from_secs(3);

    struct Node {
        state: Arc<ClusterState>,
        stop: watch::Sender<bool>,
        task: tokio::task::JoinHandle<LeaseEnd>,
    }

    fn start(backend: &Arc<FakeLease>, name: &str) -> Node {
        let state = ClusterState::new(node(name));
        let (stop, rx) = watch::channel(false);
        let task = tokio::spawn(run(
            backend.clone(),
            state.clone(),
            LeaseTiming::from_ttl(TTL),
            rx,
        ));
        Node { state, stop, task }
    }

    /// Waits (in paused time, so instantly) until `f` holds, at most `limit`.
    async fn until(limit: Duration, f: impl Fn() -> bool) -> Duration {
        let t0 = Instant::now();
        while !f() {
            assert!(t0.elapsed() <= limit, "condition not met within {limit:?}");
            sleep(Duration::from_millis(10)).await;
        }
        t0.elapsed()
    }

    #[tokio::test(start_paused = true)]
    async fn first_node_takes_the_lease_and_the_second_follows_naming_it() {
        let db = Arc::new(FakeLease::default());
        let a = start(&db, "a");
        until(TTL, || {
            matches!(a.state.role(), Role::TakingOver { epoch: 1 })
        })
        .await;
        assert!(
            a.state.check_serving().is_err(),
            "not serving while loading"
        );
        assert!(a.state.promote(1));
        let b = start(&db, "b");
        until(TTL, || {
            matches!(b.state.role(), Role::Follower { leader: Some(_) })
        })
        .await;
        let refused = b.state.check_serving().expect_err("a follower refuses");
        assert_eq!(
            refused.leader.expect("leader named").advertise_addr,
            "a:50051"
        );
        // Renewals keep a serving and b following, lease after lease.
        sleep(TTL * 5).await;
        assert_eq!(a.state.role(), Role::Leader { epoch: 1 });
        assert!(a.state.check_serving().is_ok());
        assert!(matches!(b.state.role(), Role::Follower { .. }));
        drop((a.stop, b.stop));
    }

    #[tokio::test(start_paused = true)]
    async fn leader_cut_off_from_the_database_stops_serving_before_its_lease_expires() {
        let db = Arc::new(FakeLease::default());
        let a = start(&db, "a");
        until(TTL, || matches!(a.state.role(), Role::TakingOver { .. })).await;
        a.state.promote(1);
        sleep(TTL).await;
        db.set_hang(true);
        let expires = db.expires_at().expect("lease held");
        let end = a.task.await.expect("lease task");
        assert!(matches!(end, LeaseEnd::SteppedDown(_)), "{end:?}");
        let stepped_at = Instant::now();
        assert!(
            stepped_at + TTL / 5 < expires,
            "stepped down {:?} before the lease expired; want a margin",
            expires - stepped_at
        );
        assert!(a.state.check_serving().is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn failed_renewals_are_retried_and_one_success_keeps_the_lease() {
        let db = Arc::new(FakeLease::default());
        let a = start(&db, "a");
        until(TTL, || matches!(a.state.role(), Role::TakingOver { .. })).await;
        a.state.promote(1);
        db.set_down(true);
        sleep(TTL / 2).await;
        db.set_down(false);
        sleep(TTL * 3).await;
        assert_eq!(a.state.role(), Role::Leader { epoch: 1 });
        assert!(a.state.check_serving().is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn follower_takes_over_within_a_lease_and_a_tenth_and_the_old_leader_steps_down() {
        let db = Arc::new(FakeLease::default());
        let a = start(&db, "a");
        until(TTL, || matches!(a.state.role(), Role::TakingOver { .. })).await;
        a.state.promote(1);
        let b = start(&db, "b");
        until(TTL, || {
            matches!(b.state.role(), Role::Follower { leader: Some(_) })
        })
        .await;
        // a stalls (SIGSTOP): its task stops renewing, its lease runs out at the database.
        a.task.abort();
        let taken = until(TTL + TTL / 10 + Duration::from_millis(50), || {
            matches!(b.state.role(), Role::TakingOver { epoch: 2 })
        })
        .await;
        assert!(
            taken <= TTL + TTL / 10 + Duration::from_millis(20),
            "took {taken:?}"
        );
        // a's own check refuses work even though its task never ran to step it down.
        assert!(a.state.check_serving().is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn renewal_refused_under_a_newer_epoch_steps_down_at_once() {
        let db = Arc::new(FakeLease::default());
        let a = start(&db, "a");
        until(TTL, || matches!(a.state.role(), Role::TakingOver { .. })).await;
        // Someone else took the lease with epoch 2 (as after a stall).
        db.force(
            Holder {
                node_id: "b".into(),
                epoch: 2,
                advertise_addr: "b:50051".into(),
            },
            TTL,
        );
        let end = a.task.await.expect("lease task");
        assert!(
            matches!(&end, LeaseEnd::SteppedDown(r) if r.contains("epoch 1")),
            "{end:?}"
        );
        assert!(matches!(a.state.role(), Role::SteppedDown { .. }));
    }

    #[tokio::test(start_paused = true)]
    async fn stopping_a_leader_releases_the_lease_for_an_early_takeover() {
        let db = Arc::new(FakeLease::default());
        let a = start(&db, "a");
        until(TTL, || matches!(a.state.role(), Role::TakingOver { .. })).await;
        let b = start(&db, "b");
        until(TTL, || {
            matches!(b.state.role(), Role::Follower { leader: Some(_) })
        })
        .await;
        a.stop.send(true).unwrap();
        assert_eq!(a.task.await.unwrap(), LeaseEnd::Stopped);
        let taken = until(TTL, || matches!(b.state.role(), Role::TakingOver { .. })).await;
        assert!(
            taken <= TTL / 10 + Duration::from_millis(20),
            "took {taken:?}"
        );
    }
}
