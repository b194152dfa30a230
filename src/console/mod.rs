//! The supervisor web console, served by holdless itself on `console.listen`.
//!
//! Contact-center networks are often closed, so everything the console needs is in
//! the binary: pages are rendered on the server with maud (queue names and figures
//! are in the HTML itself; scripts only refresh them), the two scripts (htmx and its
//! SSE extension) and the style sheet are embedded from `assets/`, and charts are SVG
//! drawn on the server. There is no Node, CDN or separate server at run time.
//!
//! Pages: Wallboard ([`wallboard`], live over server-sent events), Staffing
//! ([`staffing`]), KPIs ([`kpis`]), Callbacks ([`callbacks`]) and Plan ([`plan`]).
//! Access ([`auth`]): a supervisor signs in with their token and gets a session
//! cookie; every change needs the session's CSRF token; customer and telephony
//! tokens get 403. Without principals (loopback only) the console is open, like the
//! gRPC API. The console talks to [`crate::service`], never to the store.

pub mod auth;
pub mod callbacks;
pub mod charts;
pub mod kpis;
pub mod plan;
pub mod report;
pub mod staffing;
pub mod wallboard;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::Path;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use maud::{html, Markup, DOCTYPE};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::auth::tls::TlsReloader;
use crate::auth::Access;
use crate::config::ConsoleSettings;
use crate::service::{Holdless, ServiceError};

pub use auth::{csrf_field, Sessions, SignedIn};

/// Largest request body the console accepts: a plan pasted or uploaded for
/// simulation or apply is the biggest (the gRPC limit on a plan, and some margin for
/// form encoding).
pub const MAX_BODY_BYTES: usize = 6 * 1024 * 1024;

/// How long open connections (a wallboard's event stream, a page in flight) get to
/// finish after shutdown begins; live streams end at once, so this is rarely used.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// The running service once start-up is done (the same cell the gRPC services read;
/// spelled out here so the console does not import the gRPC edge).
pub type Ready = Arc<tokio::sync::OnceCell<Arc<Holdless>>>;

/// What every console handler can reach. Cheap to clone (handles only).
#[derive(Clone)]
pub struct ConsoleState {
    /// The running service, set once start-up is done (pages answer 503 before).
    pub ready: Ready,
    /// The principals, by token digest (the same as the gRPC gate's).
    pub access: Arc<Access>,
    pub sessions: Arc<Sessions>,
    pub settings: Arc<ConsoleSettings>,
    /// Served over TLS: session cookies are then marked `Secure`.
    pub tls: bool,
    /// Turns true when the server shuts down: live streams end on it.
    pub shutdown: watch::Receiver<bool>,
}

impl ConsoleState {
    pub fn new(
        ready: Ready,
        access: Arc<Access>,
        settings: ConsoleSettings,
        tls: bool,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        let lifetime = Duration::from_secs(u64::from(settings.session_minutes) * 60);
        Self {
            ready,
            access,
            sessions: Arc::new(Sessions::new(lifetime)),
            settings: Arc::new(settings),
            tls,
            shutdown,
        }
    }

    /// The service, or 503 while holdless is still starting.
    pub fn holdless(&self) -> Result<Arc<Holdless>, ConsoleError> {
        self.ready
            .get()
            .cloned()
            .ok_or(ConsoleError::Unavailable("holdless is starting".into()))
    }
}

/// Which navigation entry a page belongs to (highlighted in the layout).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Wallboard,
    Staffing,
    Kpis,
    Callbacks,
    Plan,
    /// Sign-in, sign-out and error pages: nothing highlighted.
    None,
}

impl Nav {
    const ENTRIES: [(Nav, &'static str, &'static str); 5] = [
        (Nav::Wallboard, "/wallboard", "Wallboard"),
        (Nav::Staffing, "/staffing", "Staffing"),
        (Nav::Kpis, "/kpis", "KPIs"),
        (Nav::Callbacks, "/callbacks", "Callbacks"),
        (Nav::Plan, "/plan", "Plan"),
    ];
}

/// The shared layout: head with the embedded assets, the navigation, and `body`.
pub fn page(title: &str, nav: Nav, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · holdless" }
                link rel="stylesheet" href=(asset_path("console.css"));
                script src=(asset_path("htmx.min.js")) defer {}
                script src=(asset_path("sse.min.js")) defer {}
                script src=(asset_path("console.js")) defer {}
            }
            body {
                header.top {
                    span.brand { "holdless" }
                    nav {
                        @for (entry, href, label) in Nav::ENTRIES {
                            a href=(href) class=[(entry == nav).then_some("active")] { (label) }
                        }
                    }
                    a.signout href="/signout" { "Sign out" }
                }
                main { (body) }
            }
        }
    }
}

/// An error as the console shows it: a page with the reason, and the HTTP status
/// that says the same (a refusal is never a 200 page with an error in it).
#[derive(Debug)]
pub enum ConsoleError {
    /// Bad input: each entry is `(field, message)`.
    BadRequest(Vec<(String, String)>),
    Forbidden(String),
    NotFound(String),
    /// The change conflicts with the current state (stale plan version, closed callback).
    Conflict(String),
    Unavailable(String),
    Internal(String),
}

impl From<ServiceError> for ConsoleError {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::InvalidArgument(v) => ConsoleError::BadRequest(
                v.into_iter()
                    .map(|v| (v.field.clone(), v.description.clone()))
                    .collect(),
            ),
            ServiceError::NotFound(m) => ConsoleError::NotFound(m),
            ServiceError::FailedPrecondition(m) | ServiceError::Aborted(m) => {
                ConsoleError::Conflict(m)
            }
            ServiceError::Unavailable(m) => ConsoleError::Unavailable(m),
            ServiceError::Internal(m) => ConsoleError::Internal(m),
        }
    }
}

impl IntoResponse for ConsoleError {
    fn into_response(self) -> Response {
        let (status, lines) = match self {
            ConsoleError::BadRequest(v) => (
                StatusCode::BAD_REQUEST,
                v.into_iter()
                    .map(|(f, m)| if f.is_empty() { m } else { format!("{f}: {m}") })
                    .collect(),
            ),
            ConsoleError::Forbidden(m) => (StatusCode::FORBIDDEN, vec![m]),
            ConsoleError::NotFound(m) => (StatusCode::NOT_FOUND, vec![m]),
            ConsoleError::Conflict(m) => (StatusCode::CONFLICT, vec![m]),
            ConsoleError::Unavailable(m) => (StatusCode::SERVICE_UNAVAILABLE, vec![m]),
            ConsoleError::Internal(m) => {
                tracing::error!(error = %m, "console request failed");
                (StatusCode::INTERNAL_SERVER_ERROR, vec![m])
            }
        };
        let reason = status.canonical_reason().unwrap_or("Error");
        let body = page(
            reason,
            Nav::None,
            html! {
                section.error {
                    h1 { (status.as_u16()) " " (reason) }
                    ul { @for l in &lines { li { (l) } } }
                    p { a href="/" { "Back to the console" } }
                }
            },
        );
        (status, body).into_response()
    }
}

/// The console's routes, every page behind the access check; `/signin` and the
/// assets are reachable without a session.
pub fn router(state: ConsoleState) -> Router {
    let pages = Router::new()
        .route("/", get(|| async { Redirect::to("/wallboard") }))
        .merge(wallboard::routes())
        .merge(staffing::routes())
        .merge(kpis::routes())
        .merge(callbacks::routes())
        .merge(plan::routes())
        .route("/signout", get(auth::signout_page).post(auth::signout))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_supervisor,
        ));
    Router::new()
        .merge(pages)
        .route("/signin", get(auth::signin_page).post(auth::signin))
        .route("/assets/{name}", get(asset))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn(security_headers))
        .with_state(state)
}

/// Pages are private and not to be framed or cached; scripts come from this origin
/// only (no inline script runs).
async fn security_headers(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
             img-src 'self' data:; frame-ancestors 'none'; form-action 'self'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    res
}

/// The embedded assets: (name, content type, bytes). Names carry a version, so they
/// are cached for a year; a new holdless with a new asset serves it under a new path.
const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "htmx.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("assets/htmx-2.0.11.min.js"),
    ),
    (
        "sse.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("assets/htmx-ext-sse-2.2.4.min.js"),
    ),
    (
        "console.js",
        "text/javascript; charset=utf-8",
        include_bytes!("assets/console.js"),
    ),
    (
        "console.css",
        "text/css; charset=utf-8",
        include_bytes!("assets/console.css"),
    ),
];

/// The URL of an embedded asset, versioned with holdless's own version so a cached
/// copy is never served after an upgrade.
pub fn asset_path(name: &str) -> String {
    format!("/assets/{name}?v={}", env!("CARGO_PKG_VERSION"))
}

async fn asset(Path(name): Path<String>) -> Response {
    match ASSETS.iter().find(|(n, _, _)| *n == name) {
        Some((_, content_type, bytes)) => (
            [
                (header::CONTENT_TYPE, *content_type),
                (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
            ],
            *bytes,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "no such asset").into_response(),
    }
}

/// Serves the console on `listener` (over TLS with `tls`, the gRPC server's own
/// certificate) until `state.shutdown` turns true; then stops accepting, ends live
/// streams and gives open requests [`SHUTDOWN_GRACE`] to finish.
pub async fn serve(listener: TcpListener, state: ConsoleState, tls: Option<Arc<TlsReloader>>) {
    let mut stopping = state.shutdown.clone();
    let shutdown = async move {
        let _ = stopping.wait_for(|s| *s).await;
    };
    let app = router(state);
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut connections = tokio::task::JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    match tls {
        Some(tls) => {
            use tokio_stream::StreamExt;
            let mut incoming = crate::auth::tls::incoming_http1(listener, tls);
            loop {
                tokio::select! {
                    _ = &mut shutdown => break,
                    next = incoming.next() => match next {
                        Some(Ok(stream)) => {
                            connections.spawn(connection(stream, app.clone(), stop_rx.clone()));
                        }
                        Some(Err(e)) => tracing::debug!(error = %e, "console accept failed"),
                        None => break,
                    },
                }
            }
        }
        None => loop {
            tokio::select! {
                _ = &mut shutdown => break,
                r = listener.accept() => match r {
                    Ok((stream, _)) => {
                        let _ = stream.set_nodelay(true);
                        connections.spawn(connection(stream, app.clone(), stop_rx.clone()));
                    }
                    Err(e) => {
                        // Out of file descriptors and the like: back off, do not spin.
                        tracing::warn!(error = %e, "console accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
            }
        },
    }
    let _ = stop_tx.send(true);
    let drained = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(SHUTDOWN_GRACE, drained).await.is_err() {
        connections.abort_all();
    }
}

/// One HTTP/1.1 connection; on `stop` it finishes the request in hand and closes.
async fn connection<S>(stream: S, app: Router, mut stop: watch::Receiver<bool>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper_util::service::TowerToHyperService::new(app);
    let conn = hyper::server::conn::http1::Builder::new()
        .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(error = %e, "console connection ended");
            }
            return;
        }
        _ = stop.wait_for(|s| *s) => {}
    }
    conn.as_mut().graceful_shutdown();
    let _ = conn.await;
}
