//! The no-op baseline: a server with holdless's protos and transport whose handlers
//! return a default reply at once. Measured in the same run as holdless, it shows what
//! the machine, gRPC and the load generator cost by themselves, so holdless's figures
//! can be read as a ratio that survives a noisy machine.

use std::net::SocketAddr;

use tokio::net::TcpListener;
use tonic::transport::Server;
use tonic::{Request, Response, Status};

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

/// Starts the baseline on a loopback port; it stops when `stop` completes.
pub async fn start(
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(
        Server::builder()
            .add_service(RoutingServiceServer::new(NoopRouting))
            .add_service(CallbackServiceServer::new(NoopCallbacks))
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
                stop,
            ),
    );
    Ok(addr)
}
