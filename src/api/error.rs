//! The one place where errors become gRPC statuses.

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::domain::FieldViolation;
use crate::service::ServiceError;

/// INVALID_ARGUMENT with a `BadRequest` detail listing every field violation.
pub fn invalid_argument(violations: &[FieldViolation]) -> Status {
    let mut details = ErrorDetails::new();
    for v in violations {
        details.add_bad_request_violation(v.field.clone(), v.description.clone());
    }
    let summary = match violations {
        [one] => format!("invalid {}: {}", one.field, one.description),
        many => format!("{} invalid fields (see details)", many.len()),
    };
    Status::with_error_details(Code::InvalidArgument, summary, details)
}

/// The violation for an enum field whose number the API does not define (a client
/// built against a newer proto, or a bad value): named as such, never as missing.
pub fn unknown_enum_value(field: &str, value: i32) -> FieldViolation {
    FieldViolation::new(field, format!("unknown value {value}"))
}

impl From<ServiceError> for Status {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::InvalidArgument(v) => invalid_argument(&v),
            ServiceError::NotFound(m) => Status::not_found(m),
            ServiceError::FailedPrecondition(m) => Status::failed_precondition(m),
            ServiceError::Aborted(m) => Status::aborted(m),
            ServiceError::Unavailable(m) => Status::unavailable(m),
            ServiceError::Internal(m) => {
                tracing::error!(error = %m, "internal error");
                Status::internal(m)
            }
        }
    }
}
