//! The gRPC edge: the only module that imports tonic and the generated types. Wire data
//! becomes domain types in `convert` (once), errors become statuses in `error` (once).

pub mod callbacks;
pub mod convert;
pub mod customer;
mod drain;
pub mod error;
pub mod plan;
pub mod routing;
pub mod stats;

use std::sync::Arc;

use tokio::sync::OnceCell;
use tonic::{Request, Status};

use crate::domain::audit::Actor;
use crate::domain::{check_id, FieldViolation};
use crate::service::Holdless;

/// Generated protobuf and tonic code for `holdless.v1`.
#[allow(clippy::all, missing_docs)]
pub mod pb {
    tonic::include_proto!("holdless.v1");
}

/// The encoded descriptor set of every holdless proto, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/holdless_descriptor.bin"));

/// Set once the store is open and the plan loaded; until then every RPC answers
/// UNAVAILABLE (and health says NOT_SERVING).
pub type Ready = Arc<OnceCell<Arc<Holdless>>>;

pub(crate) fn ready(r: &Ready) -> Result<&Arc<Holdless>, Status> {
    r.get()
        .ok_or_else(|| Status::unavailable("holdless is starting; retry shortly"))
}

/// The authenticated caller, as the authentication layer put it in the request's
/// extensions (`anonymous` with every role when no principals are configured).
pub(crate) fn principal<T>(request: &Request<T>) -> crate::auth::Principal {
    request
        .extensions()
        .get::<crate::auth::Principal>()
        .cloned()
        .unwrap_or_else(crate::auth::Principal::anonymous)
}

/// Who makes a change: the request's principal, with the client's idempotency key
/// (checked, may be empty).
pub(crate) fn actor<T>(
    request: &Request<T>,
    request_id: &str,
    violations: &mut Vec<FieldViolation>,
) -> Actor {
    let principal = principal(request).name().to_owned();
    let request_id = if request_id.is_empty() {
        String::new()
    } else {
        check_id("request_id", request_id, violations).unwrap_or_default()
    };
    Actor::new(principal, request_id)
}
