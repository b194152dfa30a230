//! Failover end to end: PostgreSQL (the private test cluster) and three `holdless serve`
//! processes on loopback with a 2-second lease, under the torture's workload (clients
//! asking for callbacks, dialers, agents re-reported as a platform does). Run 1 SIGKILLs
//! the leader; run 2 SIGSTOPs the next leader past its lease, lets the third node take
//! load, then SIGCONTs it. See `holdless::torture::failover` for how each promise is
//! checked (the stalled node's commits are read from a write log in the database).

use std::time::Duration;

use holdless::torture::failover::{run, FailoverOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_keeps_every_callback_once_and_fences_the_stalled_leader() {
    let opts = FailoverOptions {
        runs: 2,
        seed: 26,
        nodes: 3,
        postgres_url: holdless::store::pgtest::test_postgres().await,
        binary: env!("CARGO_BIN_EXE_holdless").into(),
        lease_ttl_secs: 2,
        lease_secs: 2,
        clients: 4,
        dialers: 2,
        agents: 4,
    };
    let summary = run(&opts, &mut |line| eprintln!("failover: {line}"))
        .await
        .expect("the failover torture runs");
    eprintln!("failover: {}", summary.line());
    assert!(summary.is_clean(), "{:#?}", summary.problems);
    assert!(summary.acked > 0 && summary.dispatches > 0, "{summary:?}");
    assert_eq!(summary.stale_writes, 0);
    assert_eq!(summary.takeover_ms.len(), 2);
    // A new leader SERVING within the lease + 2 s, after a crash and after a stall.
    let limit = Duration::from_secs(opts.lease_ttl_secs + 2);
    for ms in &summary.takeover_ms {
        assert!(
            Duration::from_millis(*ms) <= limit,
            "{:?}",
            summary.takeover_ms
        );
    }
}
