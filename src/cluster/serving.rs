//! The serving gate: on a node that is not the serving leader, every holdless RPC is
//! answered UNAVAILABLE at once, with an `ErrorInfo` detail (reason `NOT_LEADER`,
//! domain `holdless`) whose metadata names the leader: `leader_addr` (its advertised
//! gRPC address), `leader_node` and `epoch`, when known. A client (the Kamailio
//! adapter, a dialer) can reconnect there instead of trying every node. Health and
//! reflection pass: they are how Kubernetes finds the leader.
//!
//! Without a cluster (the sled backend) the gate lets everything through.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::body::Body;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};
use tower_layer::Layer;
use tower_service::Service;

use super::{ClusterState, NotLeader, LEADER_ADDR_KEY, NOT_LEADER_REASON};

#[derive(Debug, Clone, Default)]
pub struct ServingGateLayer {
    cluster: Option<Arc<ClusterState>>,
}

impl ServingGateLayer {
    /// `None`: a single node, always serving (readiness is then the app's own).
    pub fn new(cluster: Option<Arc<ClusterState>>) -> Self {
        Self { cluster }
    }
}

impl<S> Layer<S> for ServingGateLayer {
    type Service = ServingGate<S>;

    fn layer(&self, inner: S) -> ServingGate<S> {
        ServingGate {
            inner,
            cluster: self.cluster.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ServingGate<S> {
    inner: S,
    cluster: Option<Arc<ClusterState>>,
}

/// The UNAVAILABLE a node that is not the leader answers.
pub fn not_leader_status(refusal: &NotLeader) -> Status {
    let mut metadata = std::collections::HashMap::new();
    if let Some(l) = &refusal.leader {
        metadata.insert(LEADER_ADDR_KEY.to_owned(), l.advertise_addr.clone());
        metadata.insert("leader_node".to_owned(), l.node_id.clone());
        metadata.insert("epoch".to_owned(), l.epoch.to_string());
    }
    let details = ErrorDetails::with_error_info(NOT_LEADER_REASON, "holdless", metadata);
    Status::with_error_details(Code::Unavailable, refusal.message.clone(), details)
}

/// Health (`/grpc.health.v1.Health/...`) and reflection answer on every node.
fn is_open(path: &str) -> bool {
    path.starts_with("/grpc.")
}

impl<S> Service<http::Request<Body>> for ServingGate<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        if let Some(cluster) = &self.cluster {
            if !is_open(req.uri().path()) {
                if let Err(refusal) = cluster.check_serving() {
                    let refused = not_leader_status(&refusal).into_http();
                    return Box::pin(async move { Ok(refused) });
                }
            }
        }
        Box::pin(self.inner.call(req))
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Holder, NodeInfo};
    use super::*;

    #[derive(Clone)]
    struct Ok200;

    impl Service<http::Request<Body>> for Ok200 {
        type Response = http::Response<Body>;
        type Error = std::convert::Infallible;
        type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: http::Request<Body>) -> Self::Future {
            Box::pin(async { Ok(http::Response::new(Body::default())) })
        }
    }

    fn call(gate: &mut ServingGate<Ok200>, path: &str) -> http::Response<Body> {
        let req = http::Request::builder()
            .uri(path)
            .body(Body::default())
            .expect("request builds");
        match futures_now(gate.call(req)) {
            Ok(r) => r,
            Err(never) => match never {},
        }
    }

    fn futures_now<F: Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime")
            .block_on(f)
    }

    #[test]
    fn follower_refuses_holdless_rpcs_naming_the_leader_and_lets_health_through() {
        let state = ClusterState::new(NodeInfo {
            node_id: "b".into(),
            advertise_addr: "10.0.0.2:50051".into(),
        });
        state.set_follower(Some(Holder {
            node_id: "a".into(),
            epoch: 7,
            advertise_addr: "10.0.0.1:50051".into(),
        }));
        let mut gate = ServingGateLayer::new(Some(state)).layer(Ok200);
        let refused = call(&mut gate, "/holdless.v1.RoutingService/RouteCall");
        let status = Status::from_header_map(refused.headers()).expect("a grpc status");
        assert_eq!(status.code(), Code::Unavailable);
        let info = status.get_details_error_info().expect("ErrorInfo detail");
        assert_eq!(info.reason, NOT_LEADER_REASON);
        assert_eq!(info.metadata[LEADER_ADDR_KEY], "10.0.0.1:50051");
        assert_eq!(info.metadata["epoch"], "7");
        let health = call(&mut gate, "/grpc.health.v1.Health/Check");
        assert!(
            health.headers().get("grpc-status").is_none(),
            "health passes"
        );
    }

    #[test]
    fn single_node_lets_everything_through() {
        let mut gate = ServingGateLayer::new(None).layer(Ok200);
        let resp = call(&mut gate, "/holdless.v1.RoutingService/RouteCall");
        assert!(resp.headers().get("grpc-status").is_none());
    }
}
