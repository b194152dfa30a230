//! `RoutingService`: asked by the telephony platform where each call goes.

use tonic::{Request, Response, Status};
use tracing::instrument;

use super::convert::decision_to_pb;
use super::pb::{self, routing_service_server::RoutingService};
use super::{ready, Ready};
use crate::domain::Call;

pub struct RoutingApi {
    pub ready: Ready,
}

#[tonic::async_trait]
impl RoutingService for RoutingApi {
    #[instrument(skip_all, fields(call_id = %request.get_ref().call_id))]
    async fn route_call(
        &self,
        request: Request<pb::RouteCallRequest>,
    ) -> Result<Response<pb::RouteCallResponse>, Status> {
        let holdless = ready(&self.ready)?;
        let call = Call::try_from(request.into_inner())?;
        let decision = holdless.route(&call).await?;
        tracing::debug!(queue = %decision.queue_id, rule = ?decision.rule_id, "routed");
        Ok(Response::new(pb::RouteCallResponse {
            decision: Some(decision_to_pb(ulid::Ulid::new().to_string(), decision)),
        }))
    }
}
