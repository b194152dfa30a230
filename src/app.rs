//! Wiring: bind the listener, serve gRPC (health, reflection, holdless services), open
//! the store and load the plan, then report SERVING. `Application::run` takes the
//! shutdown signal as a future so the binary and the tests share one entry point.
//!
//! Start-up: the port is bound first and health says NOT_SERVING (every holdless RPC
//! answers UNAVAILABLE) until the store is open, the plan loaded and libphonenumber's
//! metadata warmed. Shutdown, in order: health NOT_SERVING -> stop accepting and let
//! in-flight calls finish (bounded by `server.shutdown_grace_secs`) -> flush and close
//! the store.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::OnceCell;
use tokio_stream::StreamExt;
use tonic::transport::Server;
use tonic_health::ServingStatus;

use crate::api::callbacks::{CallbackApi, DispatchApi};
use crate::api::customer::CustomerApi;
use crate::api::pb::callback_service_server::CallbackServiceServer;
use crate::api::pb::customer_service_server::CustomerServiceServer;
use crate::api::pb::dispatch_service_server::DispatchServiceServer;
use crate::api::pb::plan_service_server::PlanServiceServer;
use crate::api::pb::routing_service_server::RoutingServiceServer;
use crate::api::pb::stats_service_server::StatsServiceServer;
use crate::api::plan::PlanApi;
use crate::api::routing::RoutingApi;
use crate::api::stats::StatsApi;
use crate::api::{Ready, FILE_DESCRIPTOR_SET};
use crate::auth::gate::GateLayer;
use crate::auth::limits::CallbackLimits;
use crate::auth::tls::TlsReloader;
use crate::auth::Access;
use crate::clock::Clock;
use crate::cluster::lease::LeaseTiming;
use crate::cluster::serving::ServingGateLayer;
use crate::cluster::{ClusterState, LeaseBackend, NodeInfo, Role};
use crate::config::Settings;
use crate::config::{PgTls, PostgresSettings, StoreBackend, StoreSettings};
use crate::live::LiveConfig;
use crate::scheduler::SchedulerConfig;
use crate::service::{Holdless, ServiceError, EXAMPLE_PLAN};
use crate::store::{PgLease, PgOptions, PgStore, SledStore, Store, StoreError};

/// gRPC service names reported by health (besides the whole server, "").
pub const SERVICE_NAMES: &[&str] = &[
    "holdless.v1.RoutingService",
    "holdless.v1.CustomerService",
    "holdless.v1.PlanService",
    "holdless.v1.StatsService",
    "holdless.v1.CallbackService",
    "holdless.v1.DispatchService",
];

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot read plan file {path}: {source}")]
    PlanFile {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Every issue on a line of its own (a TOML syntax error keeps its caret lines).
    #[error("plan file {path} is invalid:\n{issues}")]
    BadPlan { path: PathBuf, issues: String },
    #[error("cannot open the store {location}: {message}")]
    Store { location: String, message: String },
    #[error("cannot start: {0}")]
    Start(String),
    #[error("bad TLS setup: {0}")]
    Tls(#[from] crate::auth::tls::TlsError),
    #[error("bad auth setup: {0}")]
    Auth(String),
    #[error("gRPC server failed: {0}")]
    Server(String),
    /// This node was the cluster leader and lost its lease: it stopped serving and
    /// exits ([`crate::cluster::EXIT_LOST_LEASE`]) to come back as a follower.
    #[error("lost the cluster lease: {0}")]
    LostLease(String),
}

pub struct Application {
    listener: TcpListener,
    addr: SocketAddr,
    metrics_listener: TcpListener,
    metrics_addr: SocketAddr,
    /// `None` when `console.enabled` is false.
    console_listener: Option<(TcpListener, SocketAddr)>,
    settings: Settings,
    clock: Arc<dyn Clock>,
    access: Arc<Access>,
    tls: Option<Arc<TlsReloader>>,
    /// The plan an empty store starts with, read and validated in `build`.
    plan_text: String,
    /// Set: this node is one of several sharing a store, and serves only while it
    /// holds this lease (see [`crate::cluster`]).
    lease: Option<Arc<dyn LeaseBackend>>,
}

impl Application {
    /// Reads and validates the plan file, loads principals and TLS files, then binds
    /// the gRPC listener (port 0 picks a free port). Nothing is created on disk here:
    /// a bad plan file or TLS file is reported before the store directory exists.
    pub async fn build(settings: Settings, clock: Arc<dyn Clock>) -> Result<Self, AppError> {
        let plan_text = read_plan_file(&settings).await?;
        let access =
            Arc::new(Access::from_settings(&settings.auth.principals).map_err(AppError::Auth)?);
        let tls = match &settings.server.tls {
            Some(t) => Some(Arc::new(TlsReloader::load(t.clone())?)),
            None => None,
        };
        let want = settings.server.listen;
        let listener = TcpListener::bind(want)
            .await
            .map_err(|source| AppError::Bind { addr: want, source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| AppError::Bind { addr: want, source })?;
        let want = settings.metrics.listen;
        let metrics_listener = TcpListener::bind(want)
            .await
            .map_err(|source| AppError::Bind { addr: want, source })?;
        let metrics_addr = metrics_listener
            .local_addr()
            .map_err(|source| AppError::Bind { addr: want, source })?;
        let console_listener = if settings.console.enabled {
            let want = settings.console.listen;
            let l = TcpListener::bind(want)
                .await
                .map_err(|source| AppError::Bind { addr: want, source })?;
            let addr = l
                .local_addr()
                .map_err(|source| AppError::Bind { addr: want, source })?;
            Some((l, addr))
        } else {
            None
        };
        Ok(Self {
            listener,
            addr,
            metrics_listener,
            metrics_addr,
            console_listener,
            clock,
            access,
            tls,
            lease: match settings.store.backend {
                // Several nodes may share a PostgreSQL store: each serves only while
                // it holds the lease. A lease call never waits longer than a lease.
                StoreBackend::Postgres => Some(Arc::new(
                    PgLease::new(
                        &pg_options(&settings.store.postgres),
                        Duration::from_secs(settings.cluster.lease_ttl_secs),
                    )
                    .map_err(|e| AppError::Store {
                        location: store_location(&settings.store),
                        message: e.to_string(),
                    })?,
                ) as Arc<dyn LeaseBackend>),
                StoreBackend::Sled => None,
            },
            settings,
            plan_text,
        })
    }

    /// Runs this node as one of several sharing the lease `backend`: it serves only
    /// while it holds the lease (holdless picks the PostgreSQL lease itself with
    /// `store.backend = "postgres"`; tests pass an in-memory one).
    pub fn with_lease(mut self, backend: Arc<dyn LeaseBackend>) -> Self {
        self.lease = Some(backend);
        self
    }

    /// This node's name and address in the lease row.
    fn node_info(&self) -> NodeInfo {
        let c = &self.settings.cluster;
        NodeInfo {
            node_id: if c.node_id.is_empty() {
                crate::cluster::generated_node_id()
            } else {
                c.node_id.clone()
            },
            advertise_addr: if c.advertise_addr.is_empty() {
                self.addr.to_string()
            } else {
                c.advertise_addr.clone()
            },
        }
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The TLS configuration, to reload it (`run` also reloads it on SIGHUP).
    pub fn tls(&self) -> Option<Arc<TlsReloader>> {
        self.tls.clone()
    }

    /// Where `/metrics` is served (port 0 in `metrics.listen` picks a free port).
    pub fn metrics_addr(&self) -> SocketAddr {
        self.metrics_addr
    }

    /// Where the web console is served (`None` when disabled; port 0 in
    /// `console.listen` picks a free port).
    pub fn console_addr(&self) -> Option<SocketAddr> {
        self.console_listener.as_ref().map(|(_, a)| *a)
    }

    /// Serves until `shutdown` completes, then shuts down in order.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), AppError> {
        let cluster = self
            .lease
            .as_ref()
            .map(|_| ClusterState::new(self.node_info()));
        let Self {
            listener,
            addr,
            metrics_listener,
            metrics_addr,
            console_listener,
            settings,
            clock,
            access,
            tls,
            plan_text,
            lease,
        } = self;
        let mut shutdown = std::pin::pin!(shutdown);
        if !access.enforced() {
            tracing::warn!(
                %addr,
                "no [[auth.principals]] configured: every caller may call every method"
            );
        }
        let gate = GateLayer::for_server(access.clone(), &settings.server);
        let (health, health_service) = tonic_health::server::health_reporter();
        for name in std::iter::once("").chain(SERVICE_NAMES.iter().copied()) {
            health
                .set_service_status(name, ServingStatus::NotServing)
                .await;
        }
        let reflection_v1 = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()
            .map_err(|e| AppError::Start(e.to_string()))?;
        let reflection_v1alpha = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1alpha()
            .map_err(|e| AppError::Start(e.to_string()))?;

        let ready: Ready = Arc::new(OnceCell::new());
        let max = settings.server.max_message_bytes;
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (draining, draining_rx) = tokio::sync::watch::channel(false);
        let router = grpc_server(gate)
            .layer(ServingGateLayer::new(cluster.clone()))
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(
                RoutingServiceServer::new(RoutingApi {
                    ready: ready.clone(),
                })
                .max_decoding_message_size(max),
            )
            .add_service(
                CustomerServiceServer::new(CustomerApi {
                    ready: ready.clone(),
                })
                .max_decoding_message_size(max),
            )
            .add_service(
                CallbackServiceServer::new(CallbackApi {
                    ready: ready.clone(),
                    limits: Arc::new(CallbackLimits::new(&settings.limits, clock.clone())),
                })
                .max_decoding_message_size(max),
            )
            .add_service(
                DispatchServiceServer::new(DispatchApi {
                    ready: ready.clone(),
                    draining: draining_rx.clone(),
                })
                .max_decoding_message_size(max),
            )
            .add_service(
                StatsServiceServer::new(StatsApi {
                    ready: ready.clone(),
                    draining: draining_rx.clone(),
                })
                .max_decoding_message_size(max),
            )
            .add_service(
                PlanServiceServer::new(PlanApi {
                    ready: ready.clone(),
                })
                .max_decoding_message_size(max),
            );
        let stopped = async {
            let _ = stop_rx.await;
        };
        let mut sighup = None;
        let server: std::pin::Pin<
            Box<dyn Future<Output = Result<(), tonic::transport::Error>> + Send>,
        > = match &tls {
            Some(tls) => {
                sighup = Some(tokio::spawn(reload_tls_on_sighup(tls.clone())));
                Box::pin(
                    router.serve_with_incoming_shutdown(
                        crate::auth::tls::incoming(listener, tls.clone())
                            .map(|c| c.map(crate::net::Batched)),
                        stopped,
                    ),
                )
            }
            None => Box::pin(
                router.serve_with_incoming_shutdown(
                    tonic::transport::server::TcpIncoming::from(listener)
                        .with_nodelay(Some(true))
                        .map(|c| c.map(crate::net::Batched)),
                    stopped,
                ),
            ),
        };
        let _sighup = sighup.map(AbortOnDrop);
        let mut server = tokio::spawn(server);
        let (metrics_stop, metrics_stop_rx) = tokio::sync::oneshot::channel::<()>();
        let metrics_server = tokio::spawn(crate::metrics::prometheus::serve(
            metrics_listener,
            ready.clone(),
            async {
                let _ = metrics_stop_rx.await;
            },
        ));
        let (console_stop, console_stop_rx) = tokio::sync::watch::channel(false);
        let console_server = console_listener.map(|(listener, console_addr)| {
            tracing::info!(%console_addr, "web console listening");
            let state = crate::console::ConsoleState::new(
                ready.clone(),
                access.clone(),
                settings.console.clone(),
                tls.is_some(),
                console_stop_rx,
            );
            tokio::spawn(crate::console::serve(listener, state, tls.clone()))
        });
        tracing::info!(%addr, %metrics_addr, tls = tls.is_some(), "gRPC and /metrics listening; starting up");

        // A cluster node follows until it holds the lease, then loads the store under
        // its epoch (the fence every write of its checks).
        let (lease_stop, lease_stop_rx) = tokio::sync::watch::channel(false);
        let mut lease_task = None;
        let mut epoch = None;
        if let (Some(state), Some(backend)) = (&cluster, lease) {
            // What can be readied before leading is, so a takeover only loads the store.
            drop(tokio::task::spawn_blocking(crate::domain::phone::warm_up));
            let timing =
                LeaseTiming::from_ttl(Duration::from_secs(settings.cluster.lease_ttl_secs));
            tracing::info!(
                node_id = %state.me().node_id,
                advertise_addr = %state.me().advertise_addr,
                lease_ttl_secs = settings.cluster.lease_ttl_secs,
                "cluster node: following (health not serving) until it holds the lease"
            );
            lease_task = Some(tokio::spawn(crate::cluster::lease::run(
                backend,
                state.clone(),
                timing,
                lease_stop_rx,
            )));
            let won = tokio::select! {
                won = taking_over(state) => won,
                _ = &mut shutdown => Err(None),
                r = &mut server => Err(Some(AppError::Server(format!("server stopped before leading: {r:?}")))),
            };
            match won {
                Ok(e) => epoch = Some(e),
                Err(why) => {
                    let _ = lease_stop.send(true);
                    if let Some(t) = lease_task {
                        let _ = t.await;
                    }
                    let _ = stop_tx.send(());
                    let _ = tokio::time::timeout(
                        Duration::from_secs(settings.server.shutdown_grace_secs),
                        server,
                    )
                    .await;
                    return why.map_or(Ok(()), Err);
                }
            }
        }
        let taking_over_at = std::time::Instant::now();
        let started = tokio::select! {
            r = start_core(&settings, clock, &plan_text, epoch) => r,
            reason = stepped_down(cluster.as_deref()) => Err(AppError::LostLease(reason)),
        };
        let holdless = match started {
            Ok(h) => h,
            Err(e) => {
                let _ = stop_tx.send(());
                let _ = console_stop.send(true);
                if let Some(console) = console_server {
                    let _ = console.await;
                }
                let _ = server.await;
                let _ = lease_stop.send(true);
                return Err(e);
            }
        };
        let _ = ready.set(holdless.clone());
        let (housekeeping_stop, stop_rx) = tokio::sync::watch::channel(false);
        // Registered before SERVING: SIGHUP's default action would end the process.
        let reload = spawn_reload_on_sighup(holdless.clone(), &settings, stop_rx.clone());
        let housekeeping = tokio::spawn(housekeeping(
            holdless.clone(),
            settings.live.contact_retention_days,
            settings.callbacks.request_id_retention_hours,
            stop_rx,
        ));
        // The serving gate opens (promote) before health says SERVING, so a client or
        // readiness probe that sees SERVING is never refused as "taking over".
        let promoted = match (&cluster, epoch) {
            (Some(state), Some(epoch)) => Some((epoch, state.promote(epoch))),
            _ => None,
        };
        if promoted.is_none_or(|(_, ok)| ok) {
            for name in std::iter::once("").chain(SERVICE_NAMES.iter().copied()) {
                health
                    .set_service_status(name, ServingStatus::Serving)
                    .await;
            }
        }
        match promoted {
            Some((epoch, true)) => tracing::info!(
                %addr,
                epoch,
                load_ms = taking_over_at.elapsed().as_millis() as u64,
                "holdless is SERVING as the cluster leader"
            ),
            // Lost while loading: the select below sees the step-down at once.
            Some((epoch, false)) => {
                tracing::warn!(epoch, "the lease was lost while loading the store")
            }
            None => tracing::info!(%addr, "holdless is SERVING"),
        }

        let server_result = tokio::select! {
            _ = &mut shutdown => None,
            r = &mut server => Some(r),
            reason = stepped_down(cluster.as_deref()) => {
                // Already refusing every RPC (the serving gate reads the role): say so
                // on health, end the dispatch streams, and leave without a grace
                // period; the dialers' work is on the new leader.
                for name in std::iter::once("").chain(SERVICE_NAMES.iter().copied()) {
                    health
                        .set_service_status(name, ServingStatus::NotServing)
                        .await;
                }
                let _ = draining.send(true);
                let _ = stop_tx.send(());
                if tokio::time::timeout(Duration::from_secs(1), &mut server).await.is_err() {
                    server.abort();
                }
                let _ = housekeeping_stop.send(true);
                let _ = housekeeping.await;
                let _ = metrics_stop.send(());
                let _ = tokio::time::timeout(Duration::from_secs(2), holdless.close(false)).await;
                return Err(AppError::LostLease(reason));
            }
        };
        let stop_housekeeping = || async {
            let _ = console_stop.send(true);
            if let Some(console) = console_server {
                if let Err(e) = console.await {
                    tracing::warn!(error = %e, "web console task failed");
                }
            }
            let _ = housekeeping_stop.send(true);
            let _ = housekeeping.await;
            if let Some(r) = reload {
                let _ = r.await;
            }
            let _ = metrics_stop.send(());
            match metrics_server.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "/metrics server failed"),
                Err(e) => tracing::warn!(error = %e, "/metrics server task failed"),
            }
        };
        if let Some(r) = server_result {
            stop_housekeeping().await;
            holdless.close(false).await;
            return match r {
                Ok(Ok(())) => Err(AppError::Server("server stopped unexpectedly".into())),
                Ok(Err(e)) => Err(AppError::Server(e.to_string())),
                Err(e) => Err(AppError::Server(e.to_string())),
            };
        }

        tracing::info!("shutting down: health NOT_SERVING, draining calls");
        for name in std::iter::once("").chain(SERVICE_NAMES.iter().copied()) {
            health
                .set_service_status(name, ServingStatus::NotServing)
                .await;
        }
        // Open streams end now (dialers get UNAVAILABLE "draining"); only unary calls
        // in flight use the grace period.
        let _ = draining.send(true);
        let _ = stop_tx.send(());
        let grace = Duration::from_secs(settings.server.shutdown_grace_secs);
        // Every request answered: nothing but the scheduler can change a callback now.
        let drained = match tokio::time::timeout(grace, &mut server).await {
            Ok(Ok(Ok(()))) => true,
            Ok(Ok(Err(e))) => {
                tracing::warn!(error = %e, "server ended with an error");
                false
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "server task failed");
                false
            }
            Err(_) => {
                tracing::warn!(
                    grace_secs = grace.as_secs(),
                    "in-flight calls outlived the grace period; cancelling them"
                );
                server.abort();
                false
            }
        };
        stop_housekeeping().await;
        holdless.close(drained && settings.store.warm_start).await;
        // Last: a follower may take over only once this node wrote its last.
        let _ = lease_stop.send(true);
        if let Some(t) = lease_task {
            if let Ok(crate::cluster::lease::LeaseEnd::Stopped) = t.await {
                if epoch.is_some() {
                    tracing::info!("cluster lease released");
                }
            }
        }
        tracing::info!("store flushed; bye");
        Ok(())
    }
}

/// The epoch this node took the lease under; `Err(None)` if the lease task ended first.
async fn taking_over(state: &ClusterState) -> Result<u64, Option<AppError>> {
    let mut roles = state.subscribe();
    loop {
        match &*roles.borrow_and_update() {
            Role::TakingOver { epoch } | Role::Leader { epoch } => return Ok(*epoch),
            Role::SteppedDown { reason } => return Err(Some(AppError::LostLease(reason.clone()))),
            Role::Follower { .. } => {}
        }
        if roles.changed().await.is_err() {
            return Err(None);
        }
    }
}

/// Completes with the reason when this node steps down; never without a cluster.
async fn stepped_down(state: Option<&ClusterState>) -> String {
    let Some(state) = state else {
        return std::future::pending().await;
    };
    let mut roles = state.subscribe();
    loop {
        if let Role::SteppedDown { reason } = &*roles.borrow_and_update() {
            return reason.clone();
        }
        if roles.changed().await.is_err() {
            return std::future::pending().await;
        }
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Re-reads the TLS certificate, key and client CA on each SIGHUP. The handler is
/// installed when this is called (not when the task first runs), so an early SIGHUP
/// cannot kill the process with the default action.
fn reload_tls_on_sighup(tls: Arc<TlsReloader>) -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    let hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup());
    async move {
        #[cfg(unix)]
        {
            let Ok(mut hup) = hup else {
                tracing::warn!("cannot listen for SIGHUP; TLS certificates will not reload");
                return;
            };
            while hup.recv().await.is_some() {
                match tls.reload() {
                    Ok(()) => {
                        metrics::counter!("holdless_tls_reloads_total", "result" => "ok")
                            .increment(1);
                        tracing::info!("SIGHUP: TLS certificates reloaded");
                    }
                    Err(e) => {
                        metrics::counter!("holdless_tls_reloads_total", "result" => "failed")
                            .increment(1);
                        tracing::warn!(
                            error = %e,
                            "SIGHUP: TLS reload failed; keeping the old certificates"
                        );
                    }
                }
            }
        }
        #[cfg(not(unix))]
        drop(tls);
    }
}

/// Seconds between two folds of the store's KPI deltas (`Store::fold_kpi_deltas`): a
/// start-up after a crash reads at most about this many seconds of them unfolded.
const KPI_FOLD_SECS: u64 = 10;

/// Background upkeep: lapsed reservations and stale calls every second, the store's
/// KPI deltas folded every [`KPI_FOLD_SECS`], contact history past its retention
/// every hour (each also once at start).
async fn housekeeping(
    holdless: Arc<Holdless>,
    retention_days: u32,
    request_id_hours: u32,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut sweep = tokio::time::interval(Duration::from_secs(1));
    let mut prune = tokio::time::interval(Duration::from_secs(3600));
    let mut fold = tokio::time::interval(Duration::from_secs(KPI_FOLD_SECS));
    fold.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = fold.tick() => {
                match holdless.store().fold_kpi_deltas().await {
                    Ok(0) => {}
                    Ok(n) => tracing::debug!(folded = n, "KPI deltas folded"),
                    Err(e) => tracing::warn!(error = %e, "folding KPI deltas failed"),
                }
            }
            _ = sweep.tick() => {
                holdless.sweep();
                if let Err(e) = holdless.flush_offers().await {
                    tracing::warn!(error = %e, "writing callback offer counts failed");
                }
            }
            _ = prune.tick() => {
                match holdless.prune_contacts(retention_days).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(pruned = n, "contact history past retention deleted"),
                    Err(e) => tracing::warn!(error = %e, "pruning contact history failed"),
                }
                let before = holdless.clock().now() - chrono::Duration::hours(i64::from(request_id_hours));
                if let Err(e) = holdless.store().prune_callback_requests(before).await {
                    tracing::warn!(error = %e, "pruning callback request ids failed");
                }
                if let Err(e) = holdless.prune_plan_requests().await {
                    tracing::warn!(error = %e, "pruning plan request ids failed");
                }
            }
        }
    }
}

/// The plan file SIGHUP may re-import: `plan.file`, none when empty.
pub fn configured_plan_file(settings: &Settings) -> Option<PathBuf> {
    (!settings.plan.file.is_empty()).then(|| PathBuf::from(&settings.plan.file))
}

/// The plan text an empty store is seeded with: `plan.file`, read and validated now
/// (so a bad file stops start-up before anything is created), or the built-in example.
async fn read_plan_file(settings: &Settings) -> Result<String, AppError> {
    let Some(path) = configured_plan_file(settings) else {
        return Ok(EXAMPLE_PLAN.to_owned());
    };
    let text = tokio::fs::read_to_string(&path)
        .await
        .map_err(|source| AppError::PlanFile {
            path: path.clone(),
            source,
        })?;
    let indent = |lines: &str| {
        lines
            .lines()
            .map(|l| format!("  {l}"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    // Parsed here first for the TOML error as the toml crate writes it, caret lines
    // included (validation flattens it to one line for gRPC replies).
    if let Err(e) = toml::from_str::<crate::domain::plan::PlanDoc>(&text) {
        return Err(AppError::BadPlan {
            path,
            issues: indent(e.to_string().trim_end()),
        });
    }
    if let Err(issues) = crate::routing::compile_toml(&text, 0) {
        let issues: Vec<String> = issues.iter().map(ToString::to_string).collect();
        return Err(AppError::BadPlan {
            path,
            issues: indent(&issues.join("\n")),
        });
    }
    Ok(text)
}

/// On each SIGHUP, applies the plan-file rule of [`Holdless::reload_plan_file`]
/// (`plan.source` decides whether the file may replace a version applied through the
/// API). Independent of the TLS reload the same signal triggers. Runs until `stop`
/// changes.
fn spawn_reload_on_sighup(
    holdless: Arc<Holdless>,
    settings: &Settings,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Option<tokio::task::JoinHandle<()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let file = configured_plan_file(settings);
        let source = settings.plan.source;
        let mut hangup = match signal(SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGHUP; plan reload by signal is off");
                return None;
            }
        };
        Some(tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.changed() => return,
                    got = hangup.recv() => {
                        if got.is_none() {
                            return;
                        }
                        // Every outcome is logged and counted inside.
                        let _ = holdless.reload_plan_file(file.as_deref(), source).await;
                    }
                }
            }
        }))
    }
    #[cfg(not(unix))]
    {
        let _ = (holdless, settings, &mut stop);
        None
    }
}

/// The gRPC server with the layers every call passes, in order: the request gate
/// (authentication and authorization, load shedding, the deadline), then RPC metrics.
/// `holdless bench --baseline` builds its no-op server with this too, so the no-op
/// handler it measures runs behind the same server stack as RouteCall.
pub type GrpcServer = Server<
    tower_layer::Stack<
        crate::metrics::prometheus::RpcMetricsLayer,
        tower_layer::Stack<GateLayer, tower_layer::Identity>,
    >,
>;

/// See [`GrpcServer`].
pub fn grpc_server(gate: GateLayer) -> GrpcServer {
    Server::builder()
        .layer(gate)
        .layer(crate::metrics::prometheus::RpcMetricsLayer)
}

/// Where the configured store lives, for messages (never the URL: it may hold a
/// password).
pub fn store_location(settings: &StoreSettings) -> String {
    match settings.backend {
        StoreBackend::Sled => format!("at {}", settings.path.display()),
        StoreBackend::Postgres => "in PostgreSQL (store.postgres.url)".into(),
    }
}

/// The PostgreSQL connection settings of `settings`.
pub fn pg_options(settings: &PostgresSettings) -> PgOptions {
    PgOptions {
        url: settings.url.clone(),
        pool_size: settings.pool_size,
        synchronous_commit: settings.synchronous_commit.clone(),
        ca_file: (settings.tls == PgTls::Require).then(|| PathBuf::from(&settings.ca_file)),
    }
}

/// Opens the store `settings.backend` names: sled in `path` (on a blocking thread; it
/// reads its files at open) or PostgreSQL at `postgres.url` (migrated and its read
/// cache loaded).
pub async fn open_store(settings: &StoreSettings) -> Result<Arc<dyn Store>, StoreError> {
    match settings.backend {
        StoreBackend::Sled => {
            let path = settings.path.clone();
            let cache_bytes = settings.cache_mb.saturating_mul(1024 * 1024);
            let store =
                tokio::task::spawn_blocking(move || SledStore::open_with_cache(&path, cache_bytes))
                    .await
                    .map_err(|e| StoreError::Io(format!("opening the store failed: {e}")))??;
            Ok(Arc::new(store))
        }
        StoreBackend::Postgres => Ok(Arc::new(
            PgStore::open(&pg_options(&settings.postgres)).await?,
        )),
    }
}

/// Opens the store, loads (or imports) the plan and warms the number parser.
/// `epoch`: the cluster lease this node holds, which fences every write of its store.
async fn start_core(
    settings: &Settings,
    clock: Arc<dyn Clock>,
    plan_text: &str,
    epoch: Option<u64>,
) -> Result<Arc<Holdless>, AppError> {
    tokio::task::spawn_blocking(crate::domain::phone::warm_up)
        .await
        .map_err(|e| AppError::Start(e.to_string()))?;
    let store = match (settings.store.backend, epoch) {
        // Fenced before anything is written (the plan import, the scheduler's first
        // dispatch): from here on a newer epoch in the lease row refuses every write.
        (StoreBackend::Postgres, Some(epoch)) => {
            PgStore::open(&pg_options(&settings.store.postgres))
                .await
                .map(|pg| {
                    pg.set_fence(epoch);
                    Arc::new(pg) as Arc<dyn Store>
                })
        }
        _ => open_store(&settings.store).await,
    }
    .map_err(|e| AppError::Store {
        location: store_location(&settings.store),
        message: e.to_string(),
    })?;
    let live = LiveConfig {
        reservation_timeout: chrono::Duration::seconds(
            i64::try_from(settings.live.reservation_timeout_secs).unwrap_or(i64::MAX / 1000),
        ),
        finished_call_memory: chrono::Duration::seconds(
            i64::try_from(settings.live.finished_call_memory_secs).unwrap_or(i64::MAX / 1000),
        ),
        stale_call_after: chrono::Duration::seconds(
            i64::try_from(settings.live.stale_call_after_secs).unwrap_or(i64::MAX / 1000),
        ),
    };
    let plan_file = configured_plan_file(settings);
    let holdless = Holdless::start_from(store, clock, plan_text, plan_file.as_deref(), live)
        .await
        .map_err(|e| match e {
            ServiceError::InvalidArgument(issues) => AppError::Start(format!(
                "plan {} is invalid: {}",
                if settings.plan.file.is_empty() {
                    "(built-in example)"
                } else {
                    &settings.plan.file
                },
                issues
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ")
            )),
            other => AppError::Start(other.to_string()),
        })?;
    let holdless = Arc::new(
        holdless
            .with_slot_horizon_days(settings.callbacks.slot_horizon_days)
            .with_board_rate(settings.stats.watch_max_per_sec),
    );
    let scheduler = SchedulerConfig {
        lease: chrono::Duration::seconds(
            i64::try_from(settings.callbacks.lease_secs).unwrap_or(i64::MAX / 1000),
        ),
        warm_start: settings.store.warm_start,
    };
    holdless
        .start_scheduler(scheduler)
        .await
        .map_err(|e| AppError::Start(format!("callback scheduler: {e}")))?;
    holdless.start_boards().await;
    Ok(holdless)
}
