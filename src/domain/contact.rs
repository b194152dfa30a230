//! Contact history: what happened to past calls, kept (bounded) so the next agent sees
//! the customer's recent contacts and first-contact resolution can be measured.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{Call, CustomerId, Location, PhoneNumber};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContactOutcome {
    /// Answered, still in progress.
    Answered,
    /// Answered and ended.
    Completed,
    /// The caller hung up before an agent answered.
    Abandoned,
    /// Transferred to another queue.
    Transferred,
}

/// One call as it ended up, keyed by call id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContactRecord {
    pub call_id: String,
    pub customer_id: Option<String>,
    /// Caller number (E.164), when not withheld.
    pub caller: Option<String>,
    pub queue_id: String,
    /// When the call entered the queue.
    pub enqueued_at: DateTime<Utc>,
    /// When the record last changed (answered, abandoned, transferred, ended).
    pub updated_at: DateTime<Utc>,
    pub outcome: ContactOutcome,
    pub agent_id: Option<String>,
    /// Seconds between entering the queue and being answered or abandoning.
    pub wait_secs: Option<f64>,
    pub handle_secs: Option<f64>,
    pub transfers: u32,
    /// What routing looked at, for replays; absent on records written before holdless
    /// kept it.
    #[serde(default)]
    pub facts: Option<Box<CallFacts>>,
}

/// The routing-relevant facts of a call as it was first routed, kept with its contact
/// record so a candidate plan can be replayed on real traffic (`SimulatePlan`). Held
/// in memory while the call is live and persisted with the contact record (answered,
/// abandoned, transferred, ended), so `RouteCall` itself stays free of disk writes.
/// Strings were checked at the API edge when the call was routed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CallFacts {
    /// When holdless routed the call (its own clock).
    pub routed_at: Option<DateTime<Utc>>,
    pub caller: Option<String>,
    pub dialed: Option<String>,
    pub customer_id: Option<String>,
    pub intent: Option<String>,
    pub language: Option<String>,
    pub tracking_code: Option<String>,
    pub attributes: BTreeMap<String, String>,
    /// The explicit location the platform passed, if any.
    pub location: Option<FactsLocation>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct FactsLocation {
    pub country: Option<String>,
    pub region: Option<String>,
    /// IANA name.
    pub time_zone: Option<String>,
}

impl CallFacts {
    pub fn from_call(call: &Call, routed_at: DateTime<Utc>) -> Self {
        Self {
            routed_at: Some(routed_at),
            caller: call.caller.as_ref().map(|c| c.as_str().to_owned()),
            dialed: call.dialed.clone(),
            customer_id: call.customer_id.as_ref().map(|c| c.as_str().to_owned()),
            intent: call.intent.clone(),
            language: call.language.clone(),
            tracking_code: call.tracking_code.clone(),
            attributes: call.attributes.clone(),
            location: call.location_override.as_ref().map(|l| FactsLocation {
                country: l.country.clone(),
                region: l.region.clone(),
                time_zone: l.time_zone.map(|t| t.name().to_owned()),
            }),
        }
    }

    /// The call again, for a replay. Stored values that no longer parse (a corrupted
    /// record) are dropped rather than failing the replay.
    pub fn to_call(&self, call_id: &str) -> Call {
        let mut call = Call::new(call_id);
        call.caller = self
            .caller
            .as_deref()
            .and_then(|c| PhoneNumber::parse(c).ok());
        call.dialed = self.dialed.clone();
        call.customer_id = self
            .customer_id
            .clone()
            .filter(|c| !c.is_empty())
            .map(CustomerId::new_checked);
        call.intent = self.intent.clone();
        call.language = self.language.clone();
        call.tracking_code = self.tracking_code.clone();
        call.attributes = self.attributes.clone();
        call.location_override = self.location.as_ref().map(|l| Location {
            country: l.country.clone(),
            region: l.region.clone(),
            time_zone: l.time_zone.as_deref().and_then(|t| t.parse().ok()),
        });
        call
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_written_before_facts_existed_still_read() {
        let old = r#"{"call_id":"c1","customer_id":null,"caller":"+442079460958",
            "queue_id":"general","enqueued_at":"2026-11-25T15:00:00Z",
            "updated_at":"2026-11-25T15:01:00Z","outcome":"abandoned","agent_id":null,
            "wait_secs":60.0,"handle_secs":null,"transfers":0}"#;
        let r: ContactRecord = serde_json::from_str(old).unwrap();
        assert_eq!(r.facts, None);
        let partial: CallFacts = serde_json::from_str(r#"{"intent":"billing"}"#).unwrap();
        assert_eq!(partial.intent.as_deref(), Some("billing"));
    }

    #[test]
    fn facts_give_back_the_call_routing_saw() {
        let mut call = Call::new("c1");
        call.caller = Some(PhoneNumber::parse("+442079460958").unwrap());
        call.dialed = Some("+18005550199".into());
        call.customer_id = Some(CustomerId::new_checked("cu".into()));
        call.intent = Some("billing".into());
        call.language = Some("en-GB".into());
        call.tracking_code = Some("WINTER26".into());
        call.attributes.insert("k".into(), "v".into());
        call.location_override = Some(Location {
            country: Some("GB".into()),
            region: None,
            time_zone: Some(chrono_tz::Europe::London),
        });
        let at = DateTime::<Utc>::UNIX_EPOCH;
        let facts = CallFacts::from_call(&call, at);
        let json = serde_json::to_string(&facts).unwrap();
        let back: CallFacts = serde_json::from_str(&json).unwrap();
        assert_eq!(back.routed_at, Some(at));
        let again = back.to_call("c1");
        assert_eq!(again.caller, call.caller);
        assert_eq!(again.dialed, call.dialed);
        assert_eq!(again.customer_id, call.customer_id);
        assert_eq!(
            (again.intent, again.language, again.tracking_code),
            (call.intent, call.language, call.tracking_code)
        );
        assert_eq!(again.attributes, call.attributes);
        assert_eq!(again.location_override, call.location_override);
    }
}
