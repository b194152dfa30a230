//! The no-op baseline: holdless's gRPC server stack ([`crate::app::grpc_server`]: the
//! same transport, request gate and RPC-metrics layers, and protos) with handlers that
//! return a default reply at once. Measured in the same run as holdless, it shows what
//! the machine, gRPC, the server's layers and the load generator cost by themselves,
//! so holdless's figures can be read as the ratio of a handler's throughput to a no-op
//! handler's on the same server, a ratio that survives a noisy machine.
//!
//! The baseline's calls are counted in the process's RPC metrics like holdless's; in
//! an `--embedded` bench both servers share one metrics registry, which nobody reads
//! during a run.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tonic::{Request, Response, Status};

use crate::auth::gate::GateLayer;
use crate::auth::Access;
use crate::config::ServerSettings;

use crate::api::pb::callback_service_server::{CallbackService, CallbackServiceServer};
use crate::api::pb::{
    self, routing_service_server::RoutingService, routing_service_server::RoutingServiceServer,
};

struct NoopRouting;

#[tonic::async_trait]
impl RoutingService for NoopRouting {
    async fn route_call(
        &self,
        _: Request<pb::RouteCallRequest>,
    ) -> Result<Response<pb::RouteCallResponse>, Status> {
        Ok(Response::new(pb::RouteCallResponse::default()))
    }
    async fn report_agent_state(
        &self,
        _: Request<pb::ReportAgentStateRequest>,
    ) -> Result<Response<pb::ReportAgentStateResponse>, Status> {
        Ok(Response::new(pb::ReportAgentStateResponse::default()))
    }
    async fn report_call_event(
        &self,
        _: Request<pb::ReportCallEventRequest>,
    ) -> Result<Response<pb::ReportCallEventResponse>, Status> {
        Ok(Response::new(pb::ReportCallEventResponse::default()))
    }
}

struct NoopCallbacks;

#[tonic::async_trait]
impl CallbackService for NoopCallbacks {
    async fn request_callback(
        &self,
        _: Request<pb::RequestCallbackRequest>,
    ) -> Result<Response<pb::RequestCallbackResponse>, Status> {
        Ok(Response::new(pb::RequestCallbackResponse::default()))
    }
    async fn get_callback(
        &self,
        _: Request<pb::GetCallbackRequest>,
    ) -> Result<Response<pb::GetCallbackResponse>, Status> {
        Ok(Response::new(pb::GetCallbackResponse::default()))
    }
    async fn list_callbacks(
        &self,
        _: Request<pb::ListCallbacksRequest>,
    ) -> Result<Response<pb::ListCallbacksResponse>, Status> {
        Ok(Response::new(pb::ListCallbacksResponse::default()))
    }
    async fn reschedule_callback(
        &self,
        _: Request<pb::RescheduleCallbackRequest>,
    ) -> Result<Response<pb::RescheduleCallbackResponse>, Status> {
        Ok(Response::new(pb::RescheduleCallbackResponse::default()))
    }
    async fn cancel_callback(
        &self,
        _: Request<pb::CancelCallbackRequest>,
    ) -> Result<Response<pb::CancelCallbackResponse>, Status> {
        Ok(Response::new(pb::CancelCallbackResponse::default()))
    }
    async fn list_slots(
        &self,
        _: Request<pb::ListSlotsRequest>,
    ) -> Result<Response<pb::ListSlotsResponse>, Status> {
        Ok(Response::new(pb::ListSlotsResponse::default()))
    }
}

/// Starts the baseline on a loopback port; it stops when `stop` completes. With
/// `layers`, behind holdless's server stack, its gate set up as `server` sets up
/// holdless's (no principals: every method open, as in an `--embedded` bench);
/// without, a bare tonic server: what gRPC alone costs.
pub async fn start(
    server: &ServerSettings,
    layers: bool,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let routing =
        RoutingServiceServer::new(NoopRouting).max_decoding_message_size(server.max_message_bytes);
    let callbacks = CallbackServiceServer::new(NoopCallbacks)
        .max_decoding_message_size(server.max_message_bytes);
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    if layers {
        // holdless's connections, as its server makes them (`crate::net`).
        let incoming = tokio_stream::StreamExt::map(incoming, |c| c.map(crate::net::Batched));
        let access = Access::from_settings(&[]).map_err(std::io::Error::other)?;
        let gate = GateLayer::for_server(Arc::new(access), server);
        tokio::spawn(
            crate::app::grpc_server(gate)
                .add_service(routing)
                .add_service(callbacks)
                .serve_with_incoming_shutdown(incoming, stop),
        );
    } else {
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(routing)
                .add_service(callbacks)
                .serve_with_incoming_shutdown(incoming, stop),
        );
    }
    Ok(addr)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::pb::routing_service_client::RoutingServiceClient;
    use crate::config::Settings;

    async fn route_once(server: &ServerSettings, layers: bool) -> Result<(), Status> {
        let (_stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let addr = start(server, layers, async {
            let _ = stopped.await;
        })
        .await
        .expect("baseline starts");
        let mut client = RoutingServiceClient::connect(format!("http://{addr}"))
            .await
            .expect("baseline reachable");
        client
            .route_call(pb::RouteCallRequest::default())
            .await
            .map(|_| ())
    }

    /// The no-op handler is behind holdless's own gate: with no request allowed to
    /// run, the gate sheds the call before the handler answers. The bare baseline has
    /// no gate.
    #[tokio::test]
    async fn the_no_op_handler_runs_behind_holdless_gate() {
        let mut server = Settings::default().server;
        assert!(route_once(&server, true).await.is_ok());
        server.max_concurrent_requests = 0;
        let shed = route_once(&server, true)
            .await
            .expect_err("shed by the gate");
        assert_eq!(shed.code(), tonic::Code::Unavailable, "{shed:?}");
        assert!(shed.message().contains("overloaded"), "{shed:?}");
        assert!(route_once(&server, false).await.is_ok());
    }
}
