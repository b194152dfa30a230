//! The request gate: one tower layer in front of every gRPC service. For each call, in
//! order:
//!
//! 1. open services (health, reflection) pass untouched: not authenticated, not
//!    counted, not timed (probes must answer under load; watch streams are long-lived);
//! 2. authentication and authorization against the method table ([`super::Access`]);
//!    the [`super::Principal`] goes into the request extensions;
//! 3. load shedding: at most `server.max_concurrent_requests` calls run at once, across
//!    all connections; a call beyond that gets UNAVAILABLE at once instead of queueing
//!    (a routing answer that comes late is worth nothing to a ringing call, and the
//!    platform's fallback route is faster than a queue here);
//! 4. a deadline: a call still without a response after `server.request_timeout_secs`
//!    gets DEADLINE_EXCEEDED.
//!
//! Auth runs before the permit is taken, so a flood of unauthenticated calls cannot
//! crowd out real ones. For a server stream the permit and the deadline cover the call
//! up to its response headers, not the life of the stream.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::Semaphore;
use tonic::body::Body;
use tonic::Status;
use tower_layer::Layer;
use tower_service::Service;

use super::Access;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, Clone)]
pub struct GateLayer {
    access: Arc<Access>,
    permits: Arc<Semaphore>,
    timeout: Duration,
}

impl GateLayer {
    pub fn new(access: Arc<Access>, max_concurrent: usize, timeout: Duration) -> Self {
        Self {
            access,
            permits: Arc::new(Semaphore::new(max_concurrent.min(Semaphore::MAX_PERMITS))),
            timeout,
        }
    }

    /// The gate as `server` configures it: its limit of calls at once and its
    /// per-call deadline.
    pub fn for_server(access: Arc<Access>, server: &crate::config::ServerSettings) -> Self {
        Self::new(
            access,
            server.max_concurrent_requests,
            Duration::from_secs(server.request_timeout_secs),
        )
    }
}

impl<S> Layer<S> for GateLayer {
    type Service = Gate<S>;

    fn layer(&self, inner: S) -> Gate<S> {
        Gate {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Gate<S> {
    inner: S,
    layer: GateLayer,
}

fn refuse(status: Status) -> http::Response<Body> {
    status.into_http()
}

impl<S> Service<http::Request<Body>> for Gate<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
{
    type Response = http::Response<Body>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut req: http::Request<Body>) -> Self::Future {
        // The ready service is the one to call; leave a fresh clone in its place.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        // Only what the call's future needs is copied out of the layer: the timeout,
        // and (in the permit) the semaphore. Cloning the whole layer per call made both
        // cores write its shared reference counts on every call.
        let layer = &self.layer;
        let timeout = layer.timeout;
        let authorization = req
            .headers()
            .get(http::header::AUTHORIZATION)
            .map(|v| v.as_bytes());
        let principal = match layer.access.authorize(req.uri().path(), authorization) {
            Ok(None) => return Box::pin(async move { inner.call(req).await.map_err(Into::into) }),
            Ok(Some(p)) => p,
            Err(status) => return Box::pin(async move { Ok(refuse(status)) }),
        };
        let Ok(permit) = layer.permits.clone().try_acquire_owned() else {
            tracing::debug!("overloaded: call shed");
            return Box::pin(async move {
                Ok(refuse(Status::unavailable(
                    "holdless is overloaded; retry with backoff",
                )))
            });
        };
        req.extensions_mut().insert(principal);
        Box::pin(async move {
            let _permit = permit;
            match tokio::time::timeout(timeout, inner.call(req)).await {
                Ok(r) => r.map_err(Into::into),
                Err(_) => Ok(refuse(Status::deadline_exceeded(format!(
                    "no answer within the server's {} s request timeout",
                    timeout.as_secs()
                )))),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{token_sha256, Principal, Role};
    use crate::config::PrincipalSettings;

    /// Answers OK with the caller's principal name in a header, once `release` has a
    /// permit (when given).
    #[derive(Clone)]
    struct Echo {
        release: Option<Arc<Semaphore>>,
    }

    impl Service<http::Request<Body>> for Echo {
        type Response = http::Response<Body>;
        type Error = std::convert::Infallible;
        type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, req: http::Request<Body>) -> Self::Future {
            let release = self.release.clone();
            let who = req
                .extensions()
                .get::<Principal>()
                .map(|p| p.name().to_owned())
                .unwrap_or_default();
            Box::pin(async move {
                if let Some(r) = release {
                    let _ = r.acquire().await;
                }
                let mut resp = http::Response::new(Body::default());
                resp.headers_mut()
                    .insert("x-principal", who.parse().expect("ascii name"));
                Ok(resp)
            })
        }
    }

    fn gate(max: usize, timeout: Duration, release: Option<Arc<Semaphore>>) -> Gate<Echo> {
        let access = Access::from_settings(&[PrincipalSettings {
            name: "pbx".into(),
            token_sha256: token_sha256("t"),
            roles: vec![Role::Telephony],
        }])
        .expect("valid principal");
        GateLayer::new(Arc::new(access), max, timeout).layer(Echo { release })
    }

    fn request(path: &str) -> http::Request<Body> {
        http::Request::builder()
            .uri(path)
            .header("authorization", "Bearer t")
            .body(Body::default())
            .expect("request builds")
    }

    fn grpc_status(resp: &http::Response<Body>) -> Option<&str> {
        resp.headers()
            .get("grpc-status")
            .and_then(|v| v.to_str().ok())
    }

    const ROUTE: &str = "/holdless.v1.RoutingService/RouteCall";

    #[tokio::test]
    async fn the_principal_reaches_the_service() {
        let mut g = gate(4, Duration::from_secs(5), None);
        let resp = g.call(request(ROUTE)).await.unwrap();
        assert_eq!(resp.headers()["x-principal"], "pbx");
        assert_eq!(grpc_status(&resp), None);
        let mut anon = request(ROUTE);
        anon.headers_mut().remove("authorization");
        let resp = g.call(anon).await.unwrap();
        assert_eq!(grpc_status(&resp), Some("16"), "UNAUTHENTICATED");
    }

    #[tokio::test]
    async fn calls_beyond_the_limit_are_shed_at_once_and_health_is_not_counted() {
        let release = Arc::new(Semaphore::new(0));
        let mut g = gate(2, Duration::from_secs(60), Some(release.clone()));
        // The permit is taken in `call`, before the future first runs.
        let first = tokio::spawn(g.call(request(ROUTE)));
        let second = tokio::spawn(g.call(request(ROUTE)));
        let shed = g.call(request(ROUTE)).await.unwrap();
        assert_eq!(grpc_status(&shed), Some("14"), "UNAVAILABLE");
        let health = tokio::spawn(g.call(request("/grpc.health.v1.Health/Check")));
        release.add_permits(Semaphore::MAX_PERMITS / 2);
        for h in [first, second, health] {
            let resp = h.await.unwrap().unwrap();
            assert_eq!(grpc_status(&resp), None);
        }
        let again = g.call(request(ROUTE)).await.unwrap();
        assert_eq!(grpc_status(&again), None, "permits are given back");
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_past_the_timeout_gets_deadline_exceeded() {
        let never = Arc::new(Semaphore::new(0));
        let mut g = gate(2, Duration::from_secs(3), Some(never));
        let resp = g.call(request(ROUTE)).await.unwrap();
        assert_eq!(grpc_status(&resp), Some("4"), "DEADLINE_EXCEEDED");
    }
}
