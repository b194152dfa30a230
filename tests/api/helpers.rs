//! `spawn_app()`: one server per test, port 0, temp store, manual clock. Tracing output
//! only with `TEST_LOG=1`.

use std::net::SocketAddr;
use std::sync::{Arc, Once};

use chrono::{DateTime, Utc};
use holdless::api::pb;
use holdless::app::{AppError, Application};
use holdless::clock::ManualClock;
use holdless::config::Settings;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

/// Wednesday 2026-11-25 15:00 UTC: 10:00 in New York, 15:00 in London (both open).
pub const WEEKDAY_NOON: &str = "2026-11-25T15:00:00Z";

pub fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn init_tracing() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("TEST_LOG").is_some() {
            let _ = tracing_subscriber::fmt()
                .with_env_filter("holdless=debug,info")
                .with_test_writer()
                .try_init();
        }
    });
}

pub struct TestApp {
    pub addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    /// The web console (`None` when a test disables it).
    pub console_addr: Option<SocketAddr>,
    pub channel: Channel,
    pub clock: Arc<ManualClock>,
    pub data_dir: Arc<tempfile::TempDir>,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<Result<(), AppError>>>,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Settings for a server on the PostgreSQL database at `url` (for `spawn_app_with`
/// and `restart_with`; callable again for each restart).
pub fn on_postgres_store(url: &str) -> impl Fn(&mut Settings) + Clone {
    let url = url.to_owned();
    move |s: &mut Settings| {
        s.store.backend = holdless::config::StoreBackend::Postgres;
        s.store.postgres.url = url.clone();
    }
}

pub async fn spawn_app_with(configure: impl FnOnce(&mut Settings)) -> TestApp {
    let dir = Arc::new(tempfile::tempdir().expect("temp dir"));
    let clock = Arc::new(ManualClock::new(at(WEEKDAY_NOON)));
    start(dir, clock, configure).await
}

/// A node of a cluster sharing `lease` (its own store): returned at once, before it
/// serves, since a follower never does. The lease lasts 2 s unless `configure` says.
pub async fn spawn_cluster_node(
    lease: Arc<holdless::cluster::memory::MemoryLease>,
    configure: impl FnOnce(&mut Settings),
) -> TestApp {
    let dir = Arc::new(tempfile::tempdir().expect("temp dir"));
    let clock = Arc::new(ManualClock::new(at(WEEKDAY_NOON)));
    launch(dir, clock, Some(lease), |s| {
        s.cluster.lease_ttl_secs = 2;
        configure(s)
    })
    .await
}

async fn start(
    dir: Arc<tempfile::TempDir>,
    clock: Arc<ManualClock>,
    configure: impl FnOnce(&mut Settings),
) -> TestApp {
    let app = launch(dir, clock, None, configure).await;
    wait_serving(app.channel.clone()).await;
    app
}

async fn launch(
    dir: Arc<tempfile::TempDir>,
    clock: Arc<ManualClock>,
    lease: Option<Arc<holdless::cluster::memory::MemoryLease>>,
    configure: impl FnOnce(&mut Settings),
) -> TestApp {
    init_tracing();
    let mut settings = Settings::default();
    settings.server.listen = "127.0.0.1:0".parse().unwrap();
    settings.metrics.listen = "127.0.0.1:0".parse().unwrap();
    settings.console.listen = "127.0.0.1:0".parse().unwrap();
    settings.store.path = dir.path().join("store");
    configure(&mut settings);
    let mut app = Application::build(settings, clock.clone())
        .await
        .expect("app builds");
    if let Some(lease) = lease {
        app = app.with_lease(lease);
    }
    let addr = app.local_addr();
    let metrics_addr = app.metrics_addr();
    let console_addr = app.console_addr();
    let (tx, rx) = oneshot::channel();
    let handle = tokio::spawn(app.run(async {
        let _ = rx.await;
    }));
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .expect("connect");
    TestApp {
        addr,
        metrics_addr,
        console_addr,
        channel,
        clock,
        data_dir: dir,
        shutdown: Some(tx),
        handle: Some(handle),
    }
}

/// `GET /metrics` from the app's metrics port: the whole HTTP response.
pub async fn scrape(app: &TestApp) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(app.metrics_addr)
        .await
        .expect("metrics port");
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    out
}

/// The value of unlabelled series `name` in a `/metrics` body.
pub fn gauge(body: &str, name: &str) -> Option<f64> {
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Waits for health SERVING through the health Watch stream (no polling sleeps).
pub async fn wait_serving(channel: Channel) {
    let mut health = HealthClient::new(channel);
    let mut stream = health
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health watch")
        .into_inner();
    let wait = async {
        while let Some(msg) = stream.message().await.expect("health stream") {
            if msg.status == ServingStatus::Serving as i32 {
                return;
            }
        }
        panic!("health stream ended before SERVING");
    };
    tokio::time::timeout(std::time::Duration::from_secs(30), wait)
        .await
        .expect("server became SERVING");
}

impl TestApp {
    pub fn routing(&self) -> pb::routing_service_client::RoutingServiceClient<Channel> {
        pb::routing_service_client::RoutingServiceClient::new(self.channel.clone())
    }
    pub fn customers(&self) -> pb::customer_service_client::CustomerServiceClient<Channel> {
        pb::customer_service_client::CustomerServiceClient::new(self.channel.clone())
    }
    pub fn plans(&self) -> pb::plan_service_client::PlanServiceClient<Channel> {
        pb::plan_service_client::PlanServiceClient::new(self.channel.clone())
    }

    /// Graceful shutdown; returns what `run` returned.
    pub async fn stop(mut self) -> Result<(), AppError> {
        self.stop_inner().await
    }

    async fn stop_inner(&mut self) -> Result<(), AppError> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        match self.handle.take() {
            Some(h) => h.await.expect("app task"),
            None => Ok(()),
        }
    }

    /// What `run` returned once the server ended by itself (within `limit`).
    pub async fn exited(&mut self, limit: std::time::Duration) -> Result<(), AppError> {
        let h = self.handle.take().expect("still running");
        tokio::time::timeout(limit, h)
            .await
            .expect("server ended in time")
            .expect("app task")
    }

    /// Stops the server and starts a new one on the same store and clock.
    pub async fn restart(self) -> TestApp {
        self.restart_with(|_| {}).await
    }

    /// [`TestApp::restart`] with settings changed as `configure` says (a store other
    /// than the temp sled one must be named again).
    pub async fn restart_with(mut self, configure: impl FnOnce(&mut Settings)) -> TestApp {
        self.stop_inner().await.expect("clean shutdown");
        start(self.data_dir.clone(), self.clock.clone(), configure).await
    }

    pub async fn route(&self, req: pb::RouteCallRequest) -> pb::RoutingDecision {
        self.routing()
            .route_call(req)
            .await
            .expect("route ok")
            .into_inner()
            .decision
            .expect("decision")
    }
}

pub fn call(call_id: &str, caller: &str) -> pb::RouteCallRequest {
    pb::RouteCallRequest {
        call_id: call_id.into(),
        caller_number: caller.into(),
        ..Default::default()
    }
}

/// The field paths of an INVALID_ARGUMENT status's BadRequest detail.
pub fn violations(status: &tonic::Status) -> Vec<String> {
    use tonic_types::StatusExt;
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    status
        .get_details_bad_request()
        .expect("BadRequest detail")
        .field_violations
        .into_iter()
        .map(|v| v.field)
        .collect()
}

/// One HTTP/1.1 reply from the web console, as a browser would see it.
pub struct HttpReply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpReply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Sends one request to the console (`Connection: close`; a body goes as a
/// url-encoded form) and reads the whole reply, failing the test after `within`.
pub async fn http_exchange(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
    within: std::time::Duration,
) -> HttpReply {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .expect("console port");
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() || method == "POST" {
        req.push_str("Content-Type: application/x-www-form-urlencoded\r\n");
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = String::new();
    tokio::time::timeout(within, s.read_to_string(&mut raw))
        .await
        .unwrap_or_else(|_| panic!("reply within {within:?}"))
        .unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {raw:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    HttpReply {
        status,
        headers,
        body: body.to_owned(),
    }
}

/// A StatsService client on the app's channel.
pub fn stats(app: &TestApp) -> pb::stats_service_client::StatsServiceClient<Channel> {
    pb::stats_service_client::StatsServiceClient::new(app.channel.clone())
}

/// `t` as a protobuf timestamp (whole seconds).
pub fn ts(t: DateTime<Utc>) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: 0,
    })
}

/// `s` seconds as a protobuf duration.
pub fn secs(s: i64) -> Option<prost_types::Duration> {
    Some(prost_types::Duration {
        seconds: s,
        nanos: 0,
    })
}
