//! Wire bytes -> RouteCallRequest -> domain Call: never panics, whatever the client sends.
#![no_main]

use holdless::api::pb;
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = pb::RouteCallRequest::decode(data) {
        let _ = holdless::domain::Call::try_from(req);
    }
    if let Ok(req) = pb::UpsertCustomerRequest::decode(data) {
        let _ = holdless::api::convert::customer_from_pb(req.customer);
    }
    if let Ok(req) = pb::ReportCallEventRequest::decode(data) {
        let _ = holdless::api::convert::call_event_from_pb(req);
    }
});
