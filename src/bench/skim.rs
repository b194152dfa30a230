//! The route scenario's client reads a RouteCall reply the way a call router does: the
//! queue to send the call to (and its SIP contact), the place in line, the reserved
//! agent and whether to offer a callback. The rest of the decision (agent context,
//! location, rule and decision ids) is skipped unread: prost passes over fields a
//! message does not declare without allocating.
//!
//! The bench client shares the machine with the servers it measures, so what it spends
//! on a reply is taken from holdless's figure. Decoding every string of a reply it then
//! drops cost about 1 µs of CPU per reply in a `perf` profile on the project's 2-core
//! VM (2026-12-01), work a platform does on its own machine; a no-op server's empty
//! reply costs nothing to decode either way. (In the ratio it was worth about 0.005,
//! within the run-to-run spread: see docs/PERFORMANCE.md.)

use http::uri::PathAndQuery;
use tonic::transport::Channel;

use crate::api::pb;

/// The fields of `RouteCallResponse` a router acts on (same tags as the proto).
#[derive(Clone, PartialEq, prost::Message)]
pub struct RouteReply {
    #[prost(message, optional, tag = "1")]
    pub decision: Option<RouteTarget>,
}

/// The fields of `RoutingDecision` a router acts on (same tags as the proto).
#[derive(Clone, PartialEq, prost::Message)]
pub struct RouteTarget {
    #[prost(string, tag = "2")]
    pub queue_id: String,
    #[prost(uint32, tag = "15")]
    pub position: u32,
    #[prost(string, tag = "17")]
    pub reserved_agent_id: String,
    #[prost(bool, tag = "18")]
    pub offer_callback: bool,
    #[prost(string, tag = "30")]
    pub queue_contact_uri: String,
}

const ROUTE_CALL: &str = "/holdless.v1.RoutingService/RouteCall";

/// A RouteCall client that decodes only [`RouteReply`].
#[derive(Clone)]
pub struct Router(tonic::client::Grpc<Channel>);

impl Router {
    pub fn new(channel: Channel) -> Self {
        Self(tonic::client::Grpc::new(channel))
    }

    pub async fn route_call(
        &mut self,
        request: pb::RouteCallRequest,
    ) -> Result<tonic::Response<RouteReply>, tonic::Status> {
        self.0
            .ready()
            .await
            .map_err(|e| tonic::Status::unavailable(format!("not ready: {e}")))?;
        let codec = tonic_prost::ProstCodec::<pb::RouteCallRequest, RouteReply>::default();
        self.0
            .unary(
                tonic::Request::new(request),
                PathAndQuery::from_static(ROUTE_CALL),
                codec,
            )
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    /// The skimmed reply reads the same values as the full one: the tags match the
    /// proto, and the fields it skips do not disturb it.
    #[test]
    fn the_router_reads_the_fields_it_declares_and_skips_the_rest() {
        let full = pb::RouteCallResponse {
            decision: Some(pb::RoutingDecision {
                decision_id: "01M8QR4KQ628WA0RD16TGV1F6W".into(),
                queue_id: "sales".into(),
                priority: 30,
                rule_id: "winter-sale".into(),
                plan_version: 7,
                location: Some(pb::Location {
                    country: "GB".into(),
                    region: "GB-LND".into(),
                    time_zone: "Europe/London".into(),
                }),
                campaign_id: "winter-sale-2026".into(),
                agent_context: Some(pb::AgentContext {
                    campaign_script: "Offer the upgrade first.".into(),
                    transfer_count: 2,
                    ..Default::default()
                }),
                position: 12,
                estimated_wait: Some(prost_types::Duration {
                    seconds: 340,
                    nanos: 0,
                }),
                reserved_agent_id: "a-17".into(),
                offer_callback: true,
                offer_reason: pb::OfferReason::LongWait as i32,
                queue_contact_uri: "sip:sales@queues.example.com".into(),
                ..Default::default()
            }),
        };
        let skim = RouteReply::decode(full.encode_to_vec().as_slice()).expect("decodes");
        assert_eq!(
            skim.decision,
            Some(RouteTarget {
                queue_id: "sales".into(),
                position: 12,
                reserved_agent_id: "a-17".into(),
                offer_callback: true,
                queue_contact_uri: "sip:sales@queues.example.com".into(),
            })
        );
    }
}
