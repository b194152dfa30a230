//! Customers, upserted by a CRM sync and looked up by id or caller number.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

/// A customer id: non-empty, bounded.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CustomerId(String);

impl CustomerId {
    /// Builds an id from an already checked string (see `domain::check_id`).
    pub fn new_checked(s: String) -> Self {
        debug_assert!(!s.is_empty());
        Self(s)
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A customer record. Phone numbers are stored as E.164 strings (checked on the way in).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Customer {
    pub id: CustomerId,
    #[serde(default)]
    pub display_name: String,
    #[serde(default)]
    pub phones: Vec<String>,
    /// Free label (`standard`, `gold`, `at_risk`, ...); the plan gives it meaning.
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub language: String,
    #[serde(default, with = "opt_tz")]
    pub time_zone: Option<Tz>,
    #[serde(default)]
    pub last_agent_id: String,
    #[serde(default)]
    pub preferred_agent_id: String,
    #[serde(default)]
    pub notes: String,
    #[serde(default)]
    pub do_not_call: bool,
    pub updated_at: DateTime<Utc>,
}

mod opt_tz {
    use chrono_tz::Tz;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(tz: &Option<Tz>, s: S) -> Result<S::Ok, S::Error> {
        match tz {
            Some(tz) => s.serialize_str(tz.name()),
            None => s.serialize_str(""),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Tz>, D::Error> {
        let s = String::deserialize(d)?;
        if s.is_empty() {
            return Ok(None);
        }
        s.parse::<Tz>().map(Some).map_err(serde::de::Error::custom)
    }
}
