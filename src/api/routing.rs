//! `RoutingService`: asked by the telephony platform where each call goes.

use tonic::{Request, Response, Status};
use tracing::instrument;

use super::convert::{agent_report_from_pb, call_event_from_pb, decision_to_pb};
use super::pb::{self, routing_service_server::RoutingService};
use super::{ready, Ready};
use crate::domain::Call;

pub struct RoutingApi {
    pub ready: Ready,
}

/// A decision's id: a ULID whose time is the decision's on the injected clock (one
/// clock reading per call, and ids that sort with the decisions in tests too).
fn decision_id(outcome: &crate::service::RouteOutcome) -> String {
    ulid::Ulid::from_datetime(outcome.decided_at.into()).to_string()
}

#[tonic::async_trait]
impl RoutingService for RoutingApi {
    /// Not `#[instrument]`ed like the other methods: the span's wrapper moved the whole
    /// routing future once more per call (a measurable copy at RouteCall's rate), and
    /// the one debug event below names the call anyway.
    async fn route_call(
        &self,
        request: Request<pb::RouteCallRequest>,
    ) -> Result<Response<pb::RouteCallResponse>, Status> {
        let holdless = ready(&self.ready)?;
        let request = request.into_inner();
        let dry_run = request.dry_run;
        let call = Call::try_from(request)?;
        let decision = if dry_run {
            holdless.what_if(&call)?
        } else {
            holdless.route(&call)?
        };
        tracing::debug!(
            call_id = %call.call_id.as_str(),
            queue = %decision.decision.queue_id,
            rule = ?decision.decision.rule_id,
            position = decision.placement.position,
            "routed"
        );
        Ok(Response::new(pb::RouteCallResponse {
            decision: Some(decision_to_pb(decision_id(&decision), decision)),
        }))
    }

    #[instrument(level = "debug", skip_all, fields(agent_id = %request.get_ref().agent_id))]
    async fn report_agent_state(
        &self,
        request: Request<pb::ReportAgentStateRequest>,
    ) -> Result<Response<pb::ReportAgentStateResponse>, Status> {
        let holdless = ready(&self.ready)?;
        let (agent, skills, state, at) = agent_report_from_pb(request.into_inner())?;
        let applied = holdless.report_agent(&agent, skills, state, at);
        Ok(Response::new(pb::ReportAgentStateResponse { applied }))
    }

    #[instrument(level = "debug", skip_all, fields(call_id = %request.get_ref().call_id))]
    async fn report_call_event(
        &self,
        request: Request<pb::ReportCallEventRequest>,
    ) -> Result<Response<pb::ReportCallEventResponse>, Status> {
        let holdless = ready(&self.ready)?;
        let (call_id, event) = call_event_from_pb(request.into_inner())?;
        let duplicate = holdless.report_call_event(&call_id, event).await?;
        Ok(Response::new(pb::ReportCallEventResponse { duplicate }))
    }
}
