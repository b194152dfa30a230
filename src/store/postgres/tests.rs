//! PostgreSQL-only behaviour (the shared contract is in `store::conformance`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio_postgres::NoTls;

use super::*;
use crate::domain::audit::AuditAction;
use crate::domain::callback::{Callback, CallbackState};
use crate::store::conformance::{audit, customer, open_callback, utc};
use crate::store::{pgtest, CallbackCreate, CallbackFilter, Store};

fn options(url: &str) -> PgOptions {
    PgOptions {
        url: url.to_owned(),
        pool_size: 4,
        synchronous_commit: "on".into(),
        ca_file: None,
    }
}

/// Runs `sql` on a connection of its own, as an operator's `psql` would.
async fn psql(url: &str, sql: &str) {
    let (client, conn) = tokio_postgres::connect(url, NoTls).await.unwrap();
    let task = tokio::spawn(conn);
    client.batch_execute(sql).await.unwrap();
    drop(client);
    task.await.unwrap().unwrap();
}

/// Moves the lease to `epoch`, as a takeover by another node would.
async fn set_lease_epoch(url: &str, epoch: i64) {
    psql(
        url,
        &format!("UPDATE cluster_lease SET epoch = {epoch}, holder = 'other' WHERE id = 1"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_under_a_superseded_epoch_is_refused_and_changes_nothing() {
    let url = pgtest::test_postgres().await;
    let s = PgStore::open(&options(&url)).await.unwrap();
    set_lease_epoch(&url, 3).await;
    s.set_fence(3);
    s.upsert_customer(customer("a", &["+441"]), audit(AuditAction::CustomerUpsert))
        .await
        .unwrap();
    // Another node takes over while this one was paused.
    set_lease_epoch(&url, 4).await;
    let fenced = Err(StoreError::Fenced {
        epoch: 3,
        current: 4,
    });
    assert_eq!(
        s.upsert_customer(customer("b", &["+442"]), audit(AuditAction::CustomerUpsert))
            .await
            .map(|_| ()),
        fenced
    );
    let cb = open_callback("01J0000000000000000000000A", "+443", CallbackState::Pending);
    assert_eq!(s.create_callback(cb, None).await.map(|_| ()), fenced);
    assert_eq!(
        s.append_audit(audit(AuditAction::CallbackCancel))
            .await
            .map(|_| ()),
        fenced
    );
    // Nothing of the refused writes reached the database or the cache.
    assert_eq!(s.customer_by_phone("+442").unwrap(), None);
    let fresh = PgStore::open(&options(&url)).await.unwrap();
    assert_eq!(fresh.all_customers().await.unwrap().len(), 1);
    assert_eq!(fresh.list_audit(0, 10).await.unwrap().len(), 1);
    assert!(fresh
        .list_callbacks(&CallbackFilter::default(), None, 10)
        .await
        .unwrap()
        .is_empty());
    // The node holding the new epoch writes.
    fresh.set_fence(4);
    let cb = open_callback("01J0000000000000000000000B", "+443", CallbackState::Pending);
    assert!(matches!(
        fresh.create_callback(cb, None).await,
        Ok(CallbackCreate::Created(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_fence_writes_do_not_look_at_the_lease() {
    let url = pgtest::test_postgres().await;
    let s = PgStore::open(&options(&url)).await.unwrap();
    set_lease_epoch(&url, 9).await;
    assert_eq!(s.fence(), 0);
    s.upsert_customer(customer("a", &[]), audit(AuditAction::CustomerUpsert))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opening_twice_applies_the_migrations_once() {
    let url = pgtest::test_postgres().await;
    let opts = options(&url);
    let (a, b) = tokio::join!(PgStore::open(&opts), PgStore::open(&opts));
    a.unwrap();
    b.unwrap();
    let (client, conn) = tokio_postgres::connect(&url, NoTls).await.unwrap();
    let task = tokio::spawn(conn);
    let n: i64 = client
        .query_one("SELECT count(*) FROM schema_version", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, i64::try_from(schema::MIGRATIONS.len()).unwrap());
    drop(client);
    task.await.unwrap().unwrap();
}

/// The exchanges a client starts with the server: simple queries ('Q') and the Syncs
/// that end each extended-protocol batch ('S'); the client waits for an answer after
/// each, so this is the number of round trips.
#[derive(Clone, Default)]
struct RoundTrips(Arc<AtomicU64>);

impl RoundTrips {
    fn get(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// A loopback proxy in front of the test server that counts [`RoundTrips`]; returns a
/// key=value connection string that goes through it.
async fn counting_proxy(url: &str) -> (String, RoundTrips) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let config: tokio_postgres::Config = url.parse().unwrap();
    let host = match &config.get_hosts()[0] {
        tokio_postgres::config::Host::Tcp(h) => h.clone(),
        other => panic!("the test server is not on TCP: {other:?}"),
    };
    let upstream = format!("{host}:{}", config.get_ports()[0]);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let trips = RoundTrips::default();
    let counter = trips.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let server = tokio::net::TcpStream::connect(&upstream).await.unwrap();
            let (mut server_read, mut server_write) = server.into_split();
            let (mut client_read, mut client_write) = client.into_split();
            tokio::spawn(async move {
                let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
            });
            let counter = counter.clone();
            tokio::spawn(async move {
                // The startup message has no type byte: a length, then the rest.
                let len = client_read.read_i32().await.unwrap();
                let mut rest = vec![0; usize::try_from(len - 4).unwrap()];
                client_read.read_exact(&mut rest).await.unwrap();
                server_write.write_i32(len).await.unwrap();
                server_write.write_all(&rest).await.unwrap();
                while let Ok(kind) = client_read.read_u8().await {
                    let len = client_read.read_i32().await.unwrap();
                    let mut body = vec![0; usize::try_from(len - 4).unwrap()];
                    client_read.read_exact(&mut body).await.unwrap();
                    if kind == b'Q' || kind == b'S' {
                        counter.0.fetch_add(1, Ordering::SeqCst);
                    }
                    let mut msg = vec![kind];
                    msg.extend_from_slice(&len.to_be_bytes());
                    msg.extend_from_slice(&body);
                    if server_write.write_all(&msg).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    let mut conn = format!("host=127.0.0.1 port={port} sslmode=disable");
    if let Some(user) = config.get_user() {
        conn.push_str(&format!(" user='{user}'"));
    }
    if let Some(password) = config.get_password() {
        conn.push_str(&format!(
            " password='{}'",
            String::from_utf8_lossy(password)
        ));
    }
    if let Some(db) = config.get_dbname() {
        conn.push_str(&format!(" dbname='{db}'"));
    }
    (conn, trips)
}

/// A store with `pool_size` connections through a [`counting_proxy`], fenced at
/// `epoch` (the lease row set to it); returns it with the server's own URL and the
/// proxy's count.
async fn fenced_through_proxy(pool_size: usize, epoch: i64) -> (PgStore, String, RoundTrips) {
    let url = pgtest::test_postgres().await;
    let (proxied, trips) = counting_proxy(&url).await;
    let mut opts = options(&proxied);
    opts.pool_size = pool_size;
    let s = PgStore::open(&opts).await.unwrap();
    set_lease_epoch(&url, epoch).await;
    s.set_fence(u64::try_from(epoch).unwrap());
    (s, url, trips)
}

/// A request key of the `web` principal.
fn key(id: &str) -> crate::store::RequestKey {
    crate::store::RequestKey {
        principal: "web".into(),
        request_id: id.into(),
        fingerprint: "body".into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callback_create_change_or_settle_is_one_round_trip_with_the_fence_on() {
    let (s, _, trips) = fenced_through_proxy(1, 2).await;
    // The first use of each statement also prepares it (a round trip more).
    let warm = open_callback("01J0000000000000000000000A", "+441", CallbackState::Pending);
    s.create_callback(warm.clone(), Some(key("r1")))
        .await
        .unwrap();
    let mut changed = warm.clone();
    changed.version += 1;
    changed.state = CallbackState::Dispatched;
    s.update_callback(changed.clone()).await.unwrap();

    let cb = open_callback("01J0000000000000000000000B", "+442", CallbackState::Pending);
    let before = trips.get();
    assert!(matches!(
        s.create_callback(cb.clone(), Some(key("r2"))).await,
        Ok(CallbackCreate::Created(_))
    ));
    assert_eq!(trips.get() - before, 1, "create");
    let before = trips.get();
    assert_eq!(
        s.create_callback(cb.clone(), Some(key("r2"))).await,
        Ok(CallbackCreate::Replayed(cb.clone()))
    );
    assert_eq!(trips.get() - before, 1, "replay");
    let mut dispatched = cb.clone();
    dispatched.version += 1;
    dispatched.state = CallbackState::Dispatched;
    let before = trips.get();
    s.update_callback(dispatched.clone()).await.unwrap();
    assert_eq!(trips.get() - before, 1, "change");
    let mut done = dispatched.clone();
    done.version += 1;
    done.state = CallbackState::Completed;
    let before = trips.get();
    s.settle_callback(done.clone(), "a1".into()).await.unwrap();
    assert_eq!(trips.get() - before, 1, "settle");
    assert_eq!(s.callback(&cb.id).await.unwrap(), Some(done));
    assert_eq!(s.settled_attempt("a1").await.unwrap(), Some(cb.id.clone()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callback_change_or_settle_under_a_superseded_epoch_is_refused_and_changes_nothing() {
    let url = pgtest::test_postgres().await;
    let s = PgStore::open(&options(&url)).await.unwrap();
    set_lease_epoch(&url, 3).await;
    s.set_fence(3);
    let cb = open_callback(
        "01J0000000000000000000000A",
        "+441",
        CallbackState::Dispatched,
    );
    s.create_callback(cb.clone(), None).await.unwrap();
    set_lease_epoch(&url, 4).await;
    let fenced = Err(StoreError::Fenced {
        epoch: 3,
        current: 4,
    });
    let mut done = cb.clone();
    done.version += 1;
    done.state = CallbackState::Completed;
    assert_eq!(s.update_callback(done.clone()).await, fenced);
    assert_eq!(s.settle_callback(done, "a1".into()).await, fenced);
    assert_eq!(s.callback(&cb.id).await.unwrap(), Some(cb));
    assert_eq!(s.settled_attempt("a1").await.unwrap(), None);
    // Only the create's request was counted.
    let kpi = s
        .kpi_buckets(
            None,
            utc("2000-01-01T00:00:00Z"),
            utc("2100-01-01T00:00:00Z"),
        )
        .await
        .unwrap();
    let mut total = crate::metrics::kpi::KpiCounters::default();
    for b in &kpi {
        total.add(&b.counters);
    }
    assert_eq!((total.cb_requested, total.cb_completed), (1, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migration_numbered_below_the_newest_applied_is_still_applied() {
    let url = pgtest::test_postgres().await;
    let (mut client, conn) = tokio_postgres::connect(&url, NoTls).await.unwrap();
    let task = tokio::spawn(conn);
    // A database migrated by a build without migration 2 (it has 1 and 3) ...
    let without_2: Vec<(i64, &str)> = schema::MIGRATIONS
        .iter()
        .copied()
        .filter(|(v, _)| *v != 2)
        .collect();
    let tx = client.transaction().await.unwrap();
    schema::migrate_with(&tx, &without_2).await.unwrap();
    tx.commit().await.unwrap();
    assert!(client
        .query("SELECT slot_start_ms FROM callbacks", &[])
        .await
        .is_err());
    // ... meets one that has it: it is applied.
    let tx = client.transaction().await.unwrap();
    schema::migrate_with(&tx, schema::MIGRATIONS).await.unwrap();
    tx.commit().await.unwrap();
    client
        .query("SELECT slot_start_ms FROM callbacks", &[])
        .await
        .unwrap();
    let versions: Vec<i64> = client
        .query("SELECT version FROM schema_version ORDER BY version", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let expected: Vec<i64> = schema::MIGRATIONS.iter().map(|(v, _)| *v).collect();
    assert_eq!(versions, expected);
    drop(client);
    task.await.unwrap().unwrap();
    // And the store opens on it.
    PgStore::open(&options(&url)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_open_callbacks_estimate_is_the_index_statistics() {
    let url = pgtest::test_postgres().await;
    let s = PgStore::open(&options(&url)).await.unwrap();
    // Never vacuumed or analyzed: no figure.
    assert_eq!(s.open_callbacks_estimate().await.unwrap(), None);
    let t = chrono::DateTime::from_timestamp(1_790_000_000, 0).unwrap();
    let id = |i: usize| format!("01J000000000000000000000{i:02}");
    for (i, state) in [
        CallbackState::Pending,
        CallbackState::Dispatched,
        CallbackState::Pending,
    ]
    .into_iter()
    .enumerate()
    {
        let cb = open_callback(&id(i), &format!("+44{i}"), state);
        s.create_callback(cb, None).await.unwrap();
    }
    let mut closed = s.callback(&id(2)).await.unwrap().unwrap();
    closed.cancel("test".into(), t).unwrap();
    s.update_callback(closed).await.unwrap();
    // Statistics, not a count: unchanged until the table is vacuumed or analyzed.
    assert_eq!(s.open_callbacks_estimate().await.unwrap(), None);
    let (client, conn) = tokio_postgres::connect(&url, NoTls).await.unwrap();
    let task = tokio::spawn(conn);
    client.batch_execute("VACUUM callbacks").await.unwrap();
    assert_eq!(s.open_callbacks_estimate().await.unwrap(), Some(2));
    drop(client);
    task.await.unwrap().unwrap();
}

/// Creates queued while another create's transaction waits: `first` is sent and held
/// (its fence check waits on the lease row, locked by another session), then `rest`
/// are started and left queued; returns their tasks and the lock holder to release.
async fn queue_behind_a_held_create(
    s: &PgStore,
    url: &str,
    first: Callback,
    rest: Vec<(Callback, Option<crate::store::RequestKey>)>,
) -> (
    Vec<tokio::task::JoinHandle<StoreResult<CallbackCreate>>>,
    tokio_postgres::Client,
) {
    let (holder, conn) = tokio_postgres::connect(url, NoTls).await.unwrap();
    tokio::spawn(conn);
    holder
        .batch_execute("BEGIN; SELECT epoch FROM cluster_lease WHERE id = 1 FOR UPDATE")
        .await
        .unwrap();
    let s1 = s.clone();
    let mut tasks = vec![tokio::spawn(async move {
        s1.create_callback(first, None).await
    })];
    let waiting = "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'";
    let mut polls = 0;
    while holder
        .query_one(waiting, &[])
        .await
        .unwrap()
        .get::<_, i64>(0)
        == 0
    {
        polls += 1;
        assert!(
            polls < 10_000,
            "the first create never reached the lease row"
        );
        tokio::task::yield_now().await;
    }
    let n = rest.len();
    for (cb, key) in rest {
        let s = s.clone();
        tasks.push(tokio::spawn(
            async move { s.create_callback(cb, key).await },
        ));
    }
    // The queue's worker holds the next one while it waits for the transaction slot
    // (a pool of 4 has one), the others stay in the queue.
    let mut polls = 0;
    while callbacks::CREATE_QUEUE - s.inner.creates.capacity() < n - 1 {
        polls += 1;
        assert!(polls < 1_000_000, "the creates were never queued");
        tokio::task::yield_now().await;
    }
    (tasks, holder)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creates_queued_behind_a_transaction_share_the_next_one_and_keep_their_checks() {
    let (s, url, trips) = fenced_through_proxy(4, 5).await;
    let warm = open_callback("01J0000000000000000000000A", "+440", CallbackState::Pending);
    s.create_callback(warm, None).await.unwrap();
    let before = trips.get();
    let first = open_callback("01J0000000000000000000000B", "+441", CallbackState::Pending);
    // 60 numbers, a twin of the held first one, a twin within the batch and a
    // repeated request key.
    let mut rest: Vec<_> = (0..60)
        .map(|i| {
            let cb = open_callback(
                &format!("01J1{i:022}"),
                &format!("+4420{i:02}"),
                CallbackState::Pending,
            );
            (cb, None)
        })
        .collect();
    rest.push((
        open_callback("01J2000000000000000000000A", "+441", CallbackState::Pending),
        None,
    ));
    rest.push((
        open_callback(
            "01J2000000000000000000000B",
            "+442000",
            CallbackState::Pending,
        ),
        None,
    ));
    let keyed = open_callback("01J2000000000000000000000C", "+449", CallbackState::Pending);
    rest.push((keyed.clone(), Some(key("k"))));
    rest.push((keyed.clone(), Some(key("k"))));
    let (tasks, holder) = queue_behind_a_held_create(&s, &url, first.clone(), rest).await;
    holder.batch_execute("COMMIT").await.unwrap();
    let mut outcomes = Vec::new();
    for t in tasks {
        outcomes.push(t.await.unwrap().unwrap());
    }
    // The held create's transaction, then one for the 64 queued behind it.
    assert_eq!(trips.get() - before, 2);
    assert_eq!(outcomes[0], CallbackCreate::Created(first.clone()));
    let created = outcomes
        .iter()
        .filter(|o| matches!(o, CallbackCreate::Created(_)))
        .count();
    assert_eq!(created, 1 + 60 + 1, "{outcomes:?}");
    assert_eq!(outcomes[61], CallbackCreate::Existing(first));
    assert!(matches!(&outcomes[62], CallbackCreate::Existing(c) if c.phone == "+442000"));
    let mut keyed_answers = vec![outcomes[63].clone(), outcomes[64].clone()];
    keyed_answers.sort_by_key(|o| matches!(o, CallbackCreate::Replayed(_)));
    assert_eq!(
        keyed_answers,
        vec![
            CallbackCreate::Created(keyed.clone()),
            CallbackCreate::Replayed(keyed)
        ]
    );
    assert_eq!(s.open_callbacks().await.unwrap().len(), 1 + 1 + 60 + 1);
    assert!(s.check_callback_indexes().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callback_the_database_refuses_fails_alone_and_its_batch_is_created() {
    let url = pgtest::test_postgres().await;
    let s = PgStore::open(&options(&url)).await.unwrap();
    set_lease_epoch(&url, 5).await;
    s.set_fence(5);
    let first = open_callback("01J0000000000000000000000A", "+441", CallbackState::Pending);
    let mut rest: Vec<_> = (0..8)
        .map(|i| {
            let cb = open_callback(
                &format!("01J1{i:022}"),
                &format!("+4420{i}"),
                CallbackState::Pending,
            );
            (cb, None)
        })
        .collect();
    // PostgreSQL's jsonb cannot hold a NUL character.
    rest[3].0.notes = "call after \u{0} 5 pm".into();
    let (tasks, holder) = queue_behind_a_held_create(&s, &url, first, rest).await;
    holder.batch_execute("COMMIT").await.unwrap();
    let mut outcomes = Vec::new();
    for t in tasks {
        outcomes.push(t.await.unwrap());
    }
    for (i, o) in outcomes.iter().enumerate() {
        if i == 4 {
            assert!(matches!(o, Err(StoreError::Io(_))), "{o:?}");
        } else {
            assert!(matches!(o, Ok(CallbackCreate::Created(_))), "{i}: {o:?}");
        }
    }
    assert_eq!(s.open_callbacks().await.unwrap().len(), 8);
    let kpi = s
        .kpi_buckets(
            None,
            utc("2000-01-01T00:00:00Z"),
            utc("2100-01-01T00:00:00Z"),
        )
        .await
        .unwrap();
    let requested: u64 = kpi.iter().map(|b| b.counters.cb_requested).sum();
    assert_eq!(requested, 8);
}

/// A create whose caller stopped waiting still commits on its own time; a flush
/// returns only once it has, so whoever reads next (the scheduler rechecking the
/// callback) sees it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_whose_caller_gave_up_is_in_the_store_once_a_flush_returns() {
    let url = pgtest::test_postgres().await;
    let s = PgStore::open(&options(&url)).await.unwrap();
    let cb = open_callback("01J0000000000000000000000A", "+441", CallbackState::Pending);
    {
        let create = s.create_callback(cb.clone(), None);
        tokio::pin!(create);
        // One poll hands the create to the queue; then its caller goes away.
        let first = std::future::poll_fn(|cx| {
            std::task::Poll::Ready(std::future::Future::poll(create.as_mut(), cx))
        })
        .await;
        assert!(first.is_pending());
    }
    s.flush().await.unwrap();
    assert_eq!(s.callback(&cb.id).await.unwrap(), Some(cb));
}

/// The warm-start image is deleted by a write to `callbacks` from anyone (here an
/// operator's statement), and a node whose epoch was overtaken can neither save one
/// nor take the one the new leader saved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_warm_start_image_goes_with_any_callback_write_and_stays_behind_the_fence() {
    let url = pgtest::test_postgres().await;
    let s = PgStore::open(&options(&url)).await.unwrap();
    let cb = open_callback("01J0000000000000000000000A", "+441", CallbackState::Pending);
    s.create_callback(cb.clone(), None).await.unwrap();
    let image = b"the scheduler's image".to_vec();
    s.save_warm_image(image.clone()).await.unwrap();
    psql(
        &url,
        "UPDATE callbacks SET created_by = created_by WHERE false",
    )
    .await;
    assert_eq!(
        s.take_warm_image().await.unwrap(),
        None,
        "even a no-op write"
    );

    set_lease_epoch(&url, 7).await;
    s.set_fence(7);
    s.save_warm_image(image.clone()).await.unwrap();
    let old = PgStore::open(&options(&url)).await.unwrap();
    old.set_fence(6);
    let fenced = StoreError::Fenced {
        epoch: 6,
        current: 7,
    };
    assert_eq!(old.take_warm_image().await, Err(fenced.clone()));
    assert_eq!(old.save_warm_image(b"stale".to_vec()).await, Err(fenced));
    assert_eq!(s.take_warm_image().await.unwrap(), Some(image));
}
