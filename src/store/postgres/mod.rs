//! The PostgreSQL backend: the only code in holdless that imports the driver.
//!
//! **Driver.** tokio-postgres with a deadpool-postgres pool: plain async, no macros, no
//! database needed at build time, prepared statements cached per connection. (sqlx
//! would bring compile-time checked queries, which need a database or an offline cache
//! at build time, and a larger dependency tree for nothing we use.)
//!
//! **Durability.** Every write method runs one transaction (a callback write: one
//! autocommitted call of a function in the database, creates grouped several to a
//! transaction; see `callbacks`) and returns after its `COMMIT` returned, on sessions whose `synchronous_commit` is the configured one
//! (`on` by default: the commit record is flushed to the server's disk, and to a
//! synchronous standby's when the server is set up with one). Multi-row changes (a
//! customer and their phones, a callback and its request key, a contact and its KPI
//! counts and first-contact marks, an import) are each one transaction. A transaction
//! that lost a race (unique violation on the one-open-callback index, serialization
//! failure, deadlock) is run again from the start, up to [`MAX_TRIES`] times.
//!
//! **Fencing.** [`PgStore::set_fence`] gives the store the epoch under which this node
//! leads. From then on every write transaction first reads the `cluster_lease` row
//! `FOR KEY SHARE` and aborts with [`StoreError::Fenced`] unless the lease still carries
//! that epoch: a leader that was paused while another took over can no longer write,
//! and the row lock makes a takeover (which locks the row `FOR UPDATE` before it
//! changes the epoch) wait for writes already past the check. A key-share lock does
//! not conflict with the leader's renewals (an UPDATE of non-key columns), so renewals
//! never queue behind writes. Epoch 0 (the default) means "no cluster": nothing is
//! checked.
//!
//! **Read cache.** `customer`, `customer_by_phone` and `recent_contacts` are called on
//! the RouteCall hot path without an await, so they read an in-memory copy the store
//! keeps: every customer with their phone numbers (loaded at open; written only
//! through this store, and the cache is changed after the commit, customer writes
//! taking a process-wide lock so the cache sees them in commit order), and the contacts
//! entered within [`CONTACT_CACHE_DAYS`] of the newest one at open plus every contact
//! this process recorded since (dropped by `prune_contacts`). Limits: writes made by
//! another process (another node, `psql`) are not seen until a restart, so one node
//! writes at a time (the leader); contacts older than the cache's horizon are not
//! returned by `recent_contacts` (routing asks for the last 7 days); a very large
//! customer base costs memory on every node.

pub(crate) mod admin;
mod cache;
mod callbacks;
mod kpi;
pub mod lease;
mod schema;
mod store_impl;
mod tx;
mod warm;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::error::SqlState;
use tokio_postgres::NoTls;

use self::cache::Cache;
use crate::store::{StoreError, StoreResult};

/// Times a transaction that lost a race is tried in all.
const MAX_TRIES: u32 = 8;
/// Contacts kept in the read cache: a day more than routing's 7-day context.
pub(crate) const CONTACT_CACHE_DAYS: i64 = 8;

/// How to reach the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgOptions {
    /// A libpq-style URL (`postgres://user:pass@host:5432/db`) or key=value string.
    pub url: String,
    /// Connections in the pool.
    pub pool_size: usize,
    /// The sessions' `synchronous_commit`: `on` (default), `remote_apply`,
    /// `remote_write`, `local` or `off` (`off` gives up the acknowledged-means-durable
    /// rule and is refused by the config check).
    pub synchronous_commit: String,
    /// With a CA file: TLS is required and the server's certificate is verified
    /// against it. Without: plaintext (a server on the same host or a private network).
    pub ca_file: Option<std::path::PathBuf>,
}

/// The TLS connector that trusts only `ca_file`'s certificates.
fn tls_connector(
    ca_file: &std::path::Path,
) -> StoreResult<tokio_postgres_rustls::MakeRustlsConnect> {
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::CertificateDer;
    let bad =
        |m: String| StoreError::Io(format!("store.postgres.ca_file {}: {m}", ca_file.display()));
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(ca_file).map_err(|e| bad(e.to_string()))?;
    for cert in CertificateDer::pem_slice_iter(&pem) {
        roots
            .add(cert.map_err(|e| bad(e.to_string()))?)
            .map_err(|e| bad(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(bad("no PEM certificate found".into()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

/// Longest a write transaction may sit idle between statements before the server
/// ends it. holdless's transactions never wait on anything but the database, so only
/// a stalled process reaches this.
pub const IDLE_TX_TIMEOUT_MS: u64 = 1_000;

/// The PostgreSQL store (see the module docs).
#[derive(Clone)]
pub struct PgStore {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    /// The create queue (`callbacks::run_creates`).
    creates: tokio::sync::mpsc::Sender<callbacks::CreateJob>,
    /// The creates handed to it and not answered yet (`Store::flush` waits for them).
    unanswered: Arc<callbacks::Unanswered>,
    fence: AtomicU64,
    /// The newest `kpi_deltas` id the last KPI fold saw (`kpi`).
    kpi_folded_upto: std::sync::atomic::AtomicI64,
    closed: AtomicBool,
    cache: Cache,
    /// Held by customer writes from before their transaction until the cache has
    /// their result, so the cache applies them in commit order.
    customer_writes: tokio::sync::Mutex<()>,
}

/// What went wrong inside a transaction: one of ours, or the database's.
enum TxError {
    Store(StoreError),
    Pg(tokio_postgres::Error),
}

impl From<StoreError> for TxError {
    fn from(e: StoreError) -> Self {
        TxError::Store(e)
    }
}

impl From<tokio_postgres::Error> for TxError {
    fn from(e: tokio_postgres::Error) -> Self {
        TxError::Pg(e)
    }
}

impl From<deadpool_postgres::PoolError> for TxError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        TxError::Store(StoreError::Io(format!("database connection: {e}")))
    }
}

impl TxError {
    /// A race another transaction won: running again sees its result.
    fn retryable(&self) -> bool {
        let TxError::Pg(e) = self else {
            return false;
        };
        matches!(
            e.code(),
            Some(c) if *c == SqlState::UNIQUE_VIOLATION
                || *c == SqlState::T_R_SERIALIZATION_FAILURE
                || *c == SqlState::T_R_DEADLOCK_DETECTED
        )
    }

    fn into_store(self) -> StoreError {
        match self {
            TxError::Store(e) => e,
            TxError::Pg(e) => pg_err(e),
        }
    }
}

fn pg_err(e: tokio_postgres::Error) -> StoreError {
    match e.as_db_error() {
        Some(db) => StoreError::Io(format!("database: {} ({})", db.message(), db.code().code())),
        None => StoreError::Io(format!("database: {e}")),
    }
}

/// Runs `$body` (an expression using the transaction `$tx`, returning
/// `Result<T, TxError>`) in a write transaction behind the fence, commits, and runs it
/// again when it lost a race.
macro_rules! in_tx {
    ($self:expr, $tx:ident => $body:expr) => {{
        let mut tries = 0u32;
        loop {
            tries += 1;
            let r: Result<_, $crate::store::postgres::TxError> = async {
                let mut client = $self.client().await?;
                let $tx = client.transaction().await?;
                $self.check_fence(&$tx).await?;
                let v = $body;
                $tx.commit().await?;
                Ok(v)
            }
            .await;
            match r {
                Ok(v) => break Ok(v),
                Err(e) if e.retryable() && tries < $crate::store::postgres::MAX_TRIES => continue,
                Err(e) => break Err(e.into_store()),
            }
        }
    }};
}
pub(crate) use in_tx;

impl PgStore {
    /// Connects, applies the schema migrations and loads the read cache.
    pub async fn open(options: &PgOptions) -> StoreResult<Self> {
        let mut config: tokio_postgres::Config = options
            .url
            .parse()
            .map_err(|e| StoreError::Io(format!("store.postgres.url: {e}")))?;
        // A transaction left idle (its client stalled: SIGSTOP, a partition) is ended
        // by the server after IDLE_TX_TIMEOUT_MS, so the lease row it holds FOR KEY SHARE
        // (the fence check) cannot block another node's takeover for long. JIT
        // compilation is off: the server turns it on for plans it thinks expensive,
        // which for holdless means whole-table reads, and on the start-up scan of a
        // million open callbacks compiling cost more (~0.1 s) than it saved.
        config.options(format!(
            "-c synchronous_commit={} -c idle_in_transaction_session_timeout={IDLE_TX_TIMEOUT_MS} \
             -c jit=off",
            options.synchronous_commit
        ));
        // The URL's own application_name wins (one per node shows who writes what).
        if config.get_application_name().is_none() {
            config.application_name("holdless");
        }
        let manager_config = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let manager = match &options.ca_file {
            Some(ca) => {
                config.ssl_mode(tokio_postgres::config::SslMode::Require);
                Manager::from_config(config, tls_connector(ca)?, manager_config)
            }
            None => Manager::from_config(config, NoTls, manager_config),
        };
        let pool = Pool::builder(manager)
            .max_size(options.pool_size.max(1))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(|e| StoreError::Io(format!("database pool: {e}")))?;
        let mut client = pool
            .get()
            .await
            .map_err(|e| StoreError::Io(format!("cannot connect to PostgreSQL: {e}")))?;
        schema::migrate_client(&mut client).await.map_err(pg_err)?;
        let cache = Cache::load(&client).await.map_err(TxError::into_store)?;
        drop(client);
        let batches = callbacks::create_batches(options.pool_size.max(1));
        let inner = Arc::new_cyclic(|weak| {
            let (creates, queue) = tokio::sync::mpsc::channel(callbacks::CREATE_QUEUE);
            tokio::spawn(callbacks::run_creates(queue, weak.clone(), batches));
            Inner {
                pool,
                creates,
                unanswered: callbacks::Unanswered::new(),
                fence: AtomicU64::new(0),
                kpi_folded_upto: std::sync::atomic::AtomicI64::new(0),
                closed: AtomicBool::new(false),
                cache,
                customer_writes: tokio::sync::Mutex::new(()),
            }
        });
        Ok(Self { inner })
    }

    /// Makes every later write require that the cluster lease still carries `epoch`
    /// (see the module docs); 0 turns the check off. The leader sets it when it takes
    /// the lease, before its first write.
    pub fn set_fence(&self, epoch: u64) {
        self.inner.fence.store(epoch, Ordering::SeqCst);
    }

    /// The epoch writes are fenced with (0: none).
    pub fn fence(&self) -> u64 {
        self.inner.fence.load(Ordering::SeqCst)
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, TxError> {
        if self.inner.closed.load(Ordering::SeqCst) {
            return Err(StoreError::Closed.into());
        }
        Ok(self.inner.pool.get().await?)
    }

    /// Refuses the transaction when the lease moved past our epoch (see module docs).
    async fn check_fence(&self, tx: &deadpool_postgres::Transaction<'_>) -> Result<(), TxError> {
        let epoch = self.fence();
        if epoch == 0 {
            return Ok(());
        }
        let stmt = tx
            .prepare_cached("SELECT epoch FROM cluster_lease WHERE id = 1 FOR KEY SHARE")
            .await?;
        let current: i64 = tx.query_one(&stmt, &[]).await?.get(0);
        let current = u64::try_from(current).unwrap_or(0);
        if current != epoch {
            return Err(StoreError::Fenced { epoch, current }.into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
