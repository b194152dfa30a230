//! PostgreSQL-only behaviour (the shared contract is in `store::conformance`).

use tokio_postgres::NoTls;

use super::*;
use crate::domain::audit::AuditAction;
use crate::domain::callback::CallbackState;
use crate::store::conformance::{audit, customer, open_callback};
use crate::store::{pgtest, CallbackCreate, CallbackFilter, Store};

fn options(url: &str) -> PgOptions {
    PgOptions {
        url: url.to_owned(),
        pool_size: 4,
        synchronous_commit: "on".into(),
        ca_file: None,
    }
}

/// Moves the lease to `epoch`, as a takeover by another node would.
async fn set_lease_epoch(url: &str, epoch: i64) {
    let (client, conn) = tokio_postgres::connect(url, NoTls).await.unwrap();
    let task = tokio::spawn(conn);
    client
        .execute(
            "UPDATE cluster_lease SET epoch = $1, holder = 'other' WHERE id = 1",
            &[&epoch],
        )
        .await
        .unwrap();
    drop(client);
    task.await.unwrap().unwrap();
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
