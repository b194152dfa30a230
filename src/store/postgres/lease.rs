//! The cluster lease in PostgreSQL: the single `cluster_lease` row (holder, epoch,
//! expires_at, advertise_addr) the store's migrations create, read and written on a
//! connection of its own, so a saturated write pool never delays a renewal.
//!
//! Every expiry is computed and compared with the database's `now()`: node clocks are
//! never compared with each other. Taking the lease increments the epoch, which is the
//! fencing token the store checks in every write transaction (`PgStore::set_fence`).
//! A broken connection is dropped and reopened on the next call. The connection uses
//! the store's URL and TLS settings, and applies the store's migrations when it first
//! connects: a follower claims the lease before it opens the store, possibly on a
//! database no node has used yet.

use std::time::Duration;

use tokio::sync::Mutex;
use tokio_postgres::{Client, NoTls};

use super::{tls_connector, PgOptions};
use crate::cluster::{Claim, Holder, LeaseBackend, LeaseError, NodeInfo};
use crate::store::StoreError;

/// The lease as one row in PostgreSQL.
pub struct PgLease {
    config: tokio_postgres::Config,
    /// Set: TLS trusting only `store.postgres.ca_file`.
    tls: Option<tokio_postgres_rustls::MakeRustlsConnect>,
    /// Bounds a connection attempt (a lease call must never wait longer than a lease).
    connect_timeout: Duration,
    client: Mutex<Option<Client>>,
}

impl PgLease {
    /// Nothing is opened yet: the first call connects. Fails on a URL that does not
    /// parse or a CA file that cannot be read.
    pub fn new(options: &PgOptions, connect_timeout: Duration) -> Result<Self, StoreError> {
        let config = options
            .url
            .parse::<tokio_postgres::Config>()
            .map_err(|e| StoreError::Io(format!("store.postgres.url: {e}")))?;
        let tls = options.ca_file.as_deref().map(tls_connector).transpose()?;
        Ok(Self {
            config,
            tls,
            connect_timeout,
            client: Mutex::new(None),
        })
    }

    async fn connect(&self) -> Result<Client, tokio_postgres::Error> {
        let mut client = match &self.tls {
            Some(tls) => {
                let (client, conn) = self.config.connect(tls.clone()).await?;
                tokio::spawn(log_end(conn));
                client
            }
            None => {
                let (client, conn) = self.config.connect(NoTls).await?;
                tokio::spawn(log_end(conn));
                client
            }
        };
        // Idempotent, and serialized among nodes by the migrations' own lock; only
        // what the lease needs (the store's open applies the rest, unbounded).
        super::schema::migrate_for_lease(&mut client).await?;
        Ok(client)
    }

    /// Runs `f` on the connection, opening it first if needed; drops it on error so
    /// the next call starts afresh.
    async fn with_client<T>(
        &self,
        f: impl for<'c> FnOnce(
            &'c Client,
        ) -> std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<T, tokio_postgres::Error>> + Send + 'c>,
        >,
    ) -> Result<T, LeaseError> {
        let mut slot = self.client.lock().await;
        if slot.as_ref().is_none_or(|c| c.is_closed()) {
            let client = tokio::time::timeout(self.connect_timeout, self.connect())
                .await
                .map_err(|_| LeaseError("connecting to PostgreSQL timed out".into()))?
                .map_err(|e| LeaseError(format!("connecting to PostgreSQL: {}", why(&e))))?;
            *slot = Some(client);
        }
        // Taken out while in use: a call cancelled midway (the lease loop's timeout)
        // leaves the slot empty, so a connection possibly inside a transaction is
        // never reused.
        let client = slot.take().expect("connection opened above");
        match f(&client).await {
            Ok(v) => {
                *slot = Some(client);
                Ok(v)
            }
            Err(e) => Err(LeaseError(why(&e))),
        }
    }
}

async fn log_end<F: std::future::Future<Output = Result<(), tokio_postgres::Error>>>(conn: F) {
    if let Err(e) = conn.await {
        tracing::debug!(error = %e, "lease connection closed");
    }
}

/// The server's own message when there is one (the driver's Display says only "db
/// error").
fn why(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => e.to_string(),
    }
}

fn secs(ttl: Duration) -> f64 {
    ttl.as_secs_f64()
}

fn epoch_of(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// A claim takes the lease when it has expired, was released, or names this node
/// already (a claim whose reply was lost to a timeout did take it): always under a new
/// epoch, so nothing written under an older one can land. Node ids are unique per
/// process (`cluster.node_id`).
#[async_trait::async_trait]
impl LeaseBackend for PgLease {
    async fn claim(&self, me: &NodeInfo, ttl: Duration) -> Result<Claim, LeaseError> {
        let (node, addr, ttl) = (me.node_id.clone(), me.advertise_addr.clone(), secs(ttl));
        let row = self
            .with_client(move |c| {
                Box::pin(async move {
                    // FOR UPDATE first: it waits for every write transaction past its
                    // fence check (they hold the row FOR KEY SHARE), so none commits
                    // under the old epoch after the new one exists.
                    c.batch_execute("BEGIN").await?;
                    let claimed = async {
                        c.execute("SELECT 1 FROM cluster_lease WHERE id = 1 FOR UPDATE", &[])
                            .await?;
                        c.query_opt(
                            "UPDATE cluster_lease
                                SET holder = $1, advertise_addr = $2, epoch = epoch + 1,
                                    expires_at = now() + make_interval(secs => $3)
                              WHERE id = 1
                                AND (expires_at IS NULL OR expires_at <= now() OR holder = $1)
                          RETURNING epoch",
                            &[&node, &addr, &ttl],
                        )
                        .await
                    }
                    .await;
                    let won = match claimed {
                        Ok(won) => {
                            c.batch_execute("COMMIT").await?;
                            won
                        }
                        Err(e) => {
                            let _ = c.batch_execute("ROLLBACK").await;
                            return Err(e);
                        }
                    };
                    if let Some(r) = won {
                        return Ok(Err(r.get::<_, i64>(0)));
                    }
                    let held = c
                        .query_opt(
                            "SELECT holder, epoch, advertise_addr FROM cluster_lease WHERE id = 1",
                            &[],
                        )
                        .await?;
                    Ok(Ok(held.map(|r| {
                        (
                            r.get::<_, String>(0),
                            r.get::<_, i64>(1),
                            r.get::<_, String>(2),
                        )
                    })))
                })
            })
            .await?;
        Ok(match row {
            Err(epoch) => Claim::Won {
                epoch: epoch_of(epoch),
            },
            Ok(Some((holder, epoch, addr))) if !holder.is_empty() => Claim::Held(Some(Holder {
                node_id: holder,
                epoch: epoch_of(epoch),
                advertise_addr: addr,
            })),
            Ok(Some(_)) => Claim::Held(None),
            Ok(None) => {
                return Err(LeaseError(
                    "the cluster_lease row is missing (store not migrated?)".into(),
                ))
            }
        })
    }

    async fn renew(&self, me: &NodeInfo, epoch: u64, ttl: Duration) -> Result<bool, LeaseError> {
        let (node, ttl) = (me.node_id.clone(), secs(ttl));
        let epoch = i64::try_from(epoch).map_err(|_| LeaseError("epoch out of range".into()))?;
        self.with_client(move |c| {
            Box::pin(async move {
                let n = c
                    .execute(
                        "UPDATE cluster_lease SET expires_at = now() + make_interval(secs => $3)
                          WHERE id = 1 AND holder = $1 AND epoch = $2 AND expires_at > now()",
                        &[&node, &epoch, &ttl],
                    )
                    .await?;
                Ok(n == 1)
            })
        })
        .await
    }

    async fn release(&self, me: &NodeInfo, epoch: u64) -> Result<(), LeaseError> {
        let node = me.node_id.clone();
        let epoch = i64::try_from(epoch).map_err(|_| LeaseError("epoch out of range".into()))?;
        self.with_client(move |c| {
            Box::pin(async move {
                c.execute(
                    "UPDATE cluster_lease SET expires_at = now()
                      WHERE id = 1 AND holder = $1 AND epoch = $2",
                    &[&node, &epoch],
                )
                .await?;
                Ok(())
            })
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh, empty database: the lease migrates it on first use.
    async fn lease_db() -> String {
        crate::store::pgtest::test_postgres().await
    }

    fn options(url: &str) -> PgOptions {
        PgOptions {
            url: url.into(),
            pool_size: 1,
            synchronous_commit: "on".into(),
            ca_file: None,
        }
    }

    fn lease(url: &str) -> PgLease {
        PgLease::new(&options(url), Duration::from_secs(5)).expect("lease")
    }

    fn node(n: &str) -> NodeInfo {
        NodeInfo {
            node_id: n.into(),
            advertise_addr: format!("{n}:50051"),
        }
    }

    #[tokio::test]
    async fn one_claim_wins_each_epoch_and_the_loser_learns_the_holder() {
        let url = lease_db().await;
        let (a, b) = (lease(&url), lease(&url));
        let ttl = Duration::from_secs(30);
        assert_eq!(
            a.claim(&node("a"), ttl).await.unwrap(),
            Claim::Won { epoch: 1 }
        );
        let Claim::Held(Some(h)) = b.claim(&node("b"), ttl).await.unwrap() else {
            panic!("b must see a's lease");
        };
        assert_eq!((h.node_id.as_str(), h.epoch), ("a", 1));
        assert_eq!(h.advertise_addr, "a:50051");
        assert!(a.renew(&node("a"), 1, ttl).await.unwrap());
        assert!(!b.renew(&node("b"), 1, ttl).await.unwrap(), "not b's lease");
        // Released: the next claim wins at once, under a new epoch.
        a.release(&node("a"), 1).await.unwrap();
        assert_eq!(
            b.claim(&node("b"), ttl).await.unwrap(),
            Claim::Won { epoch: 2 }
        );
        assert!(
            !a.renew(&node("a"), 1, ttl).await.unwrap(),
            "epoch 1 is over"
        );
    }

    #[tokio::test]
    async fn the_lease_connects_while_the_store_migrates() {
        let url = lease_db().await;
        lease(&url)
            .claim(&node("a"), Duration::from_secs(30))
            .await
            .unwrap();
        // A store opening holds the migration lock (for as long as a table rewrite
        // takes); a lease connecting meanwhile has nothing to apply and does not wait.
        let (client, conn) = tokio_postgres::connect(&url, NoTls).await.unwrap();
        let task = tokio::spawn(conn);
        client
            .execute(
                "SELECT pg_advisory_lock($1)",
                &[&super::super::schema::MIGRATION_LOCK],
            )
            .await
            .unwrap();
        let b = PgLease::new(&options(&url), Duration::from_secs(5)).expect("lease");
        assert!(matches!(
            b.claim(&node("b"), Duration::from_secs(30)).await,
            Ok(Claim::Held(Some(_)))
        ));
        drop(client);
        task.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn an_expired_lease_is_taken_by_the_database_clock() {
        let url = lease_db().await;
        let (a, b) = (lease(&url), lease(&url));
        assert_eq!(
            a.claim(&node("a"), Duration::from_millis(1)).await.unwrap(),
            Claim::Won { epoch: 1 }
        );
        // Poll (bounded) until the database's clock passes the 1 ms expiry.
        let t0 = std::time::Instant::now();
        loop {
            match b.claim(&node("b"), Duration::from_secs(30)).await.unwrap() {
                Claim::Won { epoch } => {
                    assert_eq!(epoch, 2);
                    break;
                }
                Claim::Held(_) => assert!(t0.elapsed() < Duration::from_secs(5)),
            }
        }
        assert!(!a
            .renew(&node("a"), 1, Duration::from_secs(30))
            .await
            .unwrap());
    }
}
