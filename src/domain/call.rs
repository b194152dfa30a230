//! An inbound call as the routing core sees it.

use std::collections::BTreeMap;

use chrono_tz::Tz;

use super::{CustomerId, PhoneNumber};

/// The platform's call id: non-empty, bounded (see `limits::MAX_ID_LEN`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallId(String);

impl CallId {
    /// Builds a call id from an already checked string (see `domain::check_id`).
    pub fn new_checked(s: String) -> Self {
        debug_assert!(!s.is_empty());
        Self(s)
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Where a caller is. Every part may be unknown (withheld number, unlisted prefix).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Location {
    /// ISO 3166-1 alpha-2, upper case.
    pub country: Option<String>,
    /// Region label from the plan's prefix table, e.g. `US-NY`.
    pub region: Option<String>,
    pub time_zone: Option<Tz>,
}

/// An inbound call, validated. Built by `api::convert` from a `RouteCallRequest`.
#[derive(Debug, Clone)]
pub struct Call {
    pub call_id: CallId,
    /// `None` when the caller withheld their number.
    pub caller: Option<PhoneNumber>,
    /// Dialed number (DNIS) as the platform sent it: `+` and digits.
    pub dialed: Option<String>,
    pub customer_id: Option<CustomerId>,
    pub intent: Option<String>,
    pub language: Option<String>,
    pub tracking_code: Option<String>,
    pub attributes: BTreeMap<String, String>,
    /// Location the platform passed explicitly; wins over the derived one.
    pub location_override: Option<Location>,
    pub explain: bool,
    /// The call came back to a queue it had already visited (set from live state).
    pub transfer_loop: bool,
}

impl Call {
    /// A call with only an id, for tests and the simulator.
    pub fn new(call_id: &str) -> Self {
        Self {
            call_id: CallId::new_checked(call_id.to_owned()),
            caller: None,
            dialed: None,
            customer_id: None,
            intent: None,
            language: None,
            tracking_code: None,
            attributes: BTreeMap::new(),
            location_override: None,
            explain: false,
            transfer_loop: false,
        }
    }
}

/// A dialed number (DNIS) as platforms send it: optional `+`, then 2 to 20 digits.
pub fn is_dialed_number(v: &str) -> bool {
    let digits = v.strip_prefix('+').unwrap_or(v);
    (2..=20).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit())
}
