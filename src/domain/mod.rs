//! Plain domain types with their invariants. Wire data becomes these types at the API
//! edge (`api::convert`), once; inside holdless a [`PhoneNumber`] is always valid E.164
//! and an id is never empty.

pub mod agent;
pub mod audit;
pub mod call;
pub mod callback;
pub mod contact;
pub mod customer;
pub mod limits;
pub mod phone;
pub mod plan;

pub use call::{Call, CallId, Location};
pub use customer::{Customer, CustomerId};
pub use phone::PhoneNumber;

/// A field that failed validation: its path (as the client named it) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    pub field: String,
    pub description: String,
}

impl FieldViolation {
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            description: description.into(),
        }
    }
}

impl std::fmt::Display for FieldViolation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.description)
    }
}

/// Checks a bounded free-text field: at most `max` bytes and no control characters.
pub fn check_text(
    field: &str,
    value: &str,
    max: usize,
    out: &mut Vec<FieldViolation>,
) -> Option<String> {
    if value.len() > max {
        out.push(FieldViolation::new(
            field,
            format!("must be at most {max} bytes, got {}", value.len()),
        ));
        return None;
    }
    if value
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        out.push(FieldViolation::new(
            field,
            "must not contain control characters",
        ));
        return None;
    }
    Some(value.to_owned())
}

/// Checks an identifier: 1..=`limits::MAX_ID_LEN` bytes of `[A-Za-z0-9._:@-]`.
pub fn check_id(field: &str, value: &str, out: &mut Vec<FieldViolation>) -> Option<String> {
    if value.is_empty() {
        out.push(FieldViolation::new(field, "is required"));
        return None;
    }
    if value.len() > limits::MAX_ID_LEN {
        out.push(FieldViolation::new(
            field,
            format!("must be at most {} bytes", limits::MAX_ID_LEN),
        ));
        return None;
    }
    if !value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'@' | b'-'))
    {
        out.push(FieldViolation::new(
            field,
            "may contain only letters, digits and . _ : @ -",
        ));
        return None;
    }
    Some(value.to_owned())
}
